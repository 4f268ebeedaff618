package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSlurmForgedNodesRefused: cruzt1, inside a real Slurm step of their own
// on node1 (so the process check of the step passes), runs cruz as the
// step's first task with SLURM_STEP_NODELIST and friends forged to name
// node2 as well, which Slurm never gave them. The agent checks the step's
// owner and nodes with slurmctld (scontrol show step) and refuses, saying
// which nodes Slurm gave; the refusal is logged once with the uid, and no
// job, pod or store directory of the step appears on either node.
func TestSlurmForgedNodesRefused(t *testing.T) {
	e := slurmSetup(t, 2)
	sock := filepath.Join(e.st.Slurm.NodeDir, "cruzd.sock")
	// A plain (not --cruz) step: the forged variables are set inside it.
	script := e.script(t, "forge.sh", `srun -N1 -n1 -w node1 env CRUZ_SOCKET=`+sock+` CRUZ_TASK_ARGV0=/bin/sleep \
  SLURM_STEP_NODELIST='node[1-2]' SLURM_STEP_TASKS_PER_NODE='1(x2)' SLURM_STEP_NUM_TASKS=2 SLURM_PROCID=0 \
  `+testenv.Bin(t, "cruz")+` 30
echo "srun exited $?"
`)
	id := e.sbatch(t, "-N1", "-n1", "-w", "node1", script)
	sj := e.waitJob(t, id, time.Minute)
	assert.Equal(t, "COMPLETED", sj.State, "the batch script itself ends normally")
	assert.Contains(t, e.out(t, id), "srun exited 1", "the forged task fails")
	stderr := e.errOut(t, id)
	want := "refused to run Slurm step " + id + ".0 for uid 1001: its tasks' environment places them on nodes node1,node2, but Slurm (scontrol show step " + id + ".0) runs the step on node1"
	assert.Contains(t, stderr, want, "the user is told what was refused and why")

	log := e.n1.log()
	line := `msg=refused uid=1001 user=cruzt1 what="POST /v1/slurm/steps" why="` + want
	assert.Equal(t, 1, strings.Count(log, line), "the refusal is logged once with the uid; node1's log:\n%s", tail(log, 20))

	n2 := e.c.node(t, e.st, "node2")
	for _, n := range []*agent{e.n1, n2} {
		r := n.cruzAsRoot("status", "--json")
		require.Equal(t, 0, r.Code, "%s", r.Stderr)
		assert.NotContains(t, r.Stdout, "slurm-"+id, "no cruz job of the forged step")
	}
	_, err := os.Stat(filepath.Join(e.c.store, "slurm-"+id+"-0"))
	assert.True(t, os.IsNotExist(err), "no store directory of the forged step: %v", err)
	e.requireSlurmClean(t, id)

	// The same user's real srun --cruz step on both nodes still runs: the
	// check passes what Slurm says.
	ok := e.script(t, "ok.sh", "srun --cruz /bin/echo hello\n")
	id = e.sbatch(t, "-N2", "-n2", ok)
	sj = e.waitJob(t, id, time.Minute)
	assert.Equal(t, "COMPLETED", sj.State, "stderr:\n%s", e.errOut(t, id))
	assert.Equal(t, "hello\nhello\n", e.out(t, id))
	var j api.Job
	e.cruzJSON(t, e.n1, &j, "status", "--json", id)
	assert.Equal(t, api.StateExited, j.State)
	e.requireSlurmClean(t, id)
}

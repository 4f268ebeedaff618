package e2e

// A restore opens files as the job's owner on the Slurm requeue path too
// (restart and rollback: privs_test.go).

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holderScript holds DIR/f open for appending (fd 3) and, once DIR/go
// exists, appends a line to it.
const holderScript = `exec 3>>"$1/f"
echo ready
while [ ! -e "$1/go" ]; do sleep 0.05; done
echo appended >&3
echo wrote`

// ownFileAndRootTarget makes cruzt1's empty ~/f and a root-owned 0644 file,
// and returns the root file.
func ownFileAndRootTarget(t *testing.T, u testenv.User, dir string) string {
	t.Helper()
	r := runAs(t, u, "/bin/sh", "-c", `umask 022; : > "$1"`, "sh", filepath.Join(dir, "f"))
	require.Equal(t, 0, r.Code, r.Stderr)
	_, target, _ := rootSecret(t)
	require.NoError(t, os.WriteFile(target, []byte("root's\n"), 0o644))
	require.NoError(t, os.Chmod(target, 0o644))
	return target
}

// TestSlurmRequeueOpensFilesAsOwner: an srun --cruz step holds cruzt1's
// ~/f open for appending and is checkpointed; cruzt1 replaces f by a link
// to a root-owned file and requeues the job. The requeued step's restore
// is refused, naming the file, the refusal is logged with cruzt1's uid,
// and root's file is unchanged.
func TestSlurmRequeueOpensFilesAsOwner(t *testing.T) {
	e := slurmSetup(t, 1)
	target := ownFileAndRootTarget(t, e.u, e.dir)
	f := filepath.Join(e.dir, "f")
	id := e.sbatch(t, "-N1", "-n1", e.script(t, "hold.sh", fmt.Sprintf(`echo "batch: restarts=${SLURM_RESTART_COUNT:-0}" >&2
srun --cruz-interval=1h /bin/sh -c '%s' sh %s
`, holderScript, e.dir)))
	e.waitOutput(t, id, "ready\n", 90*time.Second)
	r := e.n1.cruz(e.u, e.dir, "checkpoint", id)
	require.Equal(t, 0, r.Code, "cruz checkpoint: %s", r.Stderr)
	r = runAs(t, e.u, "/bin/sh", "-c", `rm "$1" && ln -s "$2" "$1"`, "sh", f, target)
	require.Equal(t, 0, r.Code, r.Stderr)
	r = e.as(t, "scontrol", "requeue", id)
	require.Equal(t, 0, r.Code, "scontrol requeue: %s", r.Stderr)

	sj := e.waitJob(t, id, 2*time.Minute)
	assert.Equal(t, 1, sj.Restarts, "Slurm requeued it once")
	assert.NotEqual(t, "COMPLETED", sj.State, "the requeued step could not resume")
	errOut := e.errOut(t, id)
	assert.Contains(t, errOut, "batch: restarts=1")
	assert.Contains(t, errOut, fmt.Sprintf("the job's owner (uid %d) cannot open %s (the job's open file) for writing (append) now: permission denied", e.u.UID, f))
	b, err := os.ReadFile(e.st.Nodes[0].Log)
	require.NoError(t, err)
	var refusals []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "msg=refused") {
			refusals = append(refusals, l)
		}
	}
	require.Len(t, refusals, 1, "one refusal logged")
	assert.Contains(t, refusals[0], fmt.Sprintf(`uid=%d user=cruzt1 what="POST /v1/slurm/steps"`, e.u.UID))
	assert.Contains(t, refusals[0], "cannot open "+f)
	b, err = os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, "root's\n", string(b), "the root-owned file is untouched")
	assert.NotContains(t, e.out(t, id), "wrote")
	e.requireSlurmClean(t, id)
}

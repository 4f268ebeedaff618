package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/store"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSlurmJobIDOfAnotherOwnerRefused (issue 11.3): the store keeps every
// owner's job directory apart. cruzt2's Slurm step left its directory in
// the shared store (here its output log only, so no checkpoint tells the
// agent whose it is); slurmctld, its state lost, hands the same job id to
// cruzt1, whose srun --cruz step is refused, naming both users, and
// cruzt2's directory stays as it was, unreadable to cruzt1.
func TestSlurmJobIDOfAnotherOwnerRefused(t *testing.T) {
	e := slurmSetup(t, 2)
	u2 := testenv.LookupUser(t, "cruzt2")
	// Slurm hands out job ids in order: the next job is prev+1.
	prev := e.sbatch(t, "--wrap", "true")
	e.waitJob(t, prev, time.Minute)
	n, err := strconv.Atoi(prev)
	require.NoError(t, err)
	slurmID := strconv.Itoa(n + 1)
	id := "slurm-" + slurmID + "-0"

	key, err := store.LoadKey(filepath.Join(e.c.dir, "key", "cluster.key"))
	require.NoError(t, err)
	st, err := store.Open(e.c.store, key)
	require.NoError(t, err)
	logPath, err := st.JobFile(id, store.Owner{UID: u2.UID, GID: u2.GID}, "output.log")
	require.NoError(t, err)
	const secret = "cruzt2's output\n"
	require.NoError(t, os.WriteFile(logPath, []byte(secret), 0o600))
	require.NoError(t, os.Chown(logPath, int(u2.UID), int(u2.GID)))

	r := e.as(t, "srun", "--cruz", "-N1", "-n1", "sh", "-c", "echo ran as $(id -un)")
	require.NotEqual(t, 0, r.Code, "srun must fail; stdout %q", r.Stdout)
	assert.NotContains(t, r.Stdout, "ran as", "the step's program never ran")
	want := fmt.Sprintf("job %s's checkpoints belong to cruzt2 (uid 1002), not cruzt1 (uid 1001)", id)
	assert.Contains(t, r.Stderr, want)
	assert.Contains(t, r.Stderr, "ask an administrator to remove them (as root: cruz rm --checkpoints "+id+", or rm -r "+filepath.Join(e.c.store, id)+" if no agent knows the job)")
	b, err := os.ReadFile(filepath.Join(e.c.dir, "node1", "cruzd.log"))
	require.NoError(t, err)
	var refusals []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "msg=refused") {
			refusals = append(refusals, l)
		}
	}
	require.Len(t, refusals, 1, "the agent logs the refusal once")
	assert.Contains(t, refusals[0], `uid=1001 user=cruzt1 what="POST /v1/slurm/steps"`)
	assert.Contains(t, refusals[0], want)

	// cruzt2's directory: as it was, its output log cruzt2's, unreadable
	// to cruzt1; no job of the id on any node.
	dir := filepath.Join(e.c.store, id)
	assert.ElementsMatch(t, []string{".owner", "output.log"}, dirNames(t, dir))
	got, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.Equal(t, secret, string(got))
	fi, err := os.Stat(logPath)
	require.NoError(t, err)
	assert.Equal(t, u2.UID, fi.Sys().(*syscall.Stat_t).Uid, "the output log is still cruzt2's")
	facl := runCommand(t, exec.Command("getfacl", "-cn", dir), 10*time.Second)
	require.Equal(t, 0, facl.Code, facl.Stderr)
	assert.Contains(t, facl.Stdout, "user:1002:r-x")
	assert.NotContains(t, facl.Stdout, "user:1001")
	cat := runCommand(t, testenv.RunAs(e.u, "cat", logPath), 10*time.Second)
	assert.NotEqual(t, 0, cat.Code)
	assert.Contains(t, cat.Stderr, "Permission denied")
	l := e.n1.cruzAsRoot("status", "--json")
	require.Equal(t, 0, l.Code, l.Stderr)
	assert.NotContains(t, l.Stdout, id)
	e.requireSlurmClean(t, slurmID)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

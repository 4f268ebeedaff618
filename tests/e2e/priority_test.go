package e2e

import (
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/proc"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAgentPriorityNotInherited: cruzd runs at agent.nice (default -10, so
// that holds and dumps are not stretched on a busy node), and the job gets
// none of it: the pod's processes run at nice 0, when started and after a
// stop and restart (CRIU restores each task's own priority, and CRIU itself
// runs at the agent's).
func TestAgentPriorityNotInherited(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	agentNice, err := proc.Nice(a.cmd.Process.Pid)
	require.NoError(t, err)
	assert.Equal(t, -10, agentNice, "cruzd's nice value (agent.nice)")

	podNice := func() []int {
		t.Helper()
		pids := a.ownPodProcesses()
		require.NotEmpty(t, pids, "the job's processes")
		var out []int
		for _, pid := range pids {
			n, err := proc.Nice(pid)
			require.NoError(t, err)
			out = append(out, n)
		}
		return out
	}
	counter := testenv.Bin(t, "counter")
	run := a.startCruz(u, dir, "run", "--plain", "--name", "prio", "--", counter, "60", "100")
	run.waitOutput(t, "line 3\n", 30*time.Second)
	for _, n := range podNice() {
		assert.Equal(t, 0, n, "a started pod's process")
	}
	a.checkpoint(u, "prio", "--stop")
	r1 := run.wait(t, 30*time.Second)
	require.Equal(t, 75, r1.Code, r1.Stderr)
	rest := a.startCruz(u, dir, "restart", "prio")
	deadline := time.Now().Add(30 * time.Second)
	for len(a.ownPodProcesses()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range podNice() {
		assert.Equal(t, 0, n, "a restored pod's process")
	}
	r2 := rest.wait(t, 60*time.Second)
	require.Equal(t, 0, r2.Code, r2.Stderr)
	require.Equal(t, check.CounterLines(1, 60), append(check.Lines(r1.Stdout), check.Lines(r2.Stdout)...))
}

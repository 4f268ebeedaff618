package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startAllreduce starts mpi_allreduce (np ranks, iters iterations of
// 100 ms) as u, with the extra cruz run flags, and waits until it has done
// 3 iterations.
func (a *agent) startAllreduce(u testenv.User, dir, name string, np, iters int, flags ...string) *cruzCmd {
	a.t.Helper()
	args := append([]string{"run", "--name", name, "--np", fmt.Sprint(np)}, flags...)
	args = append(args, "--", testenv.Bin(a.t, "mpi_allreduce"), fmt.Sprint(iters), "100")
	run := a.startCruz(u, dir, args...)
	run.waitOutput(a.t, "iter 3 ", 60*time.Second)
	return run
}

// TestMPICheckpointStopRestart: a 4-rank MPICH job in 4 rank pods (plus the
// mpiexec pod), run as an unprivileged user, is checkpointed 3 times while it
// runs, then stopped by a checkpoint and restarted; its output, line by line,
// is exactly what an uninterrupted run prints.
func TestMPICheckpointStopRestart(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters = 4, 50
	app := testenv.Bin(t, "mpi_allreduce")
	want := check.AllreduceOutput(np, iters)

	run := a.startCruz(u, dir, "run", "--name", "ar", "--np", fmt.Sprint(np), "--", app, fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", 60*time.Second)
	j := a.status(u, "ar")
	require.Equal(t, api.StateRunning, j.State)
	require.Len(t, j.Pods, np+1, "one pod per rank plus mpiexec's")
	ips := map[string]bool{}
	for _, p := range j.Pods {
		assert.NotZero(t, p.PID, "pod %s has a PID 1", p.Name)
		ips[p.IP] = true
	}
	assert.Len(t, ips, np+1, "every pod has its own address")
	// The ranks run as the user, in their own network namespace.
	for _, p := range j.Pods {
		out, err := exec.Command("ps", "-o", "user=", "-p", fmt.Sprint(p.PID)).Output()
		require.NoError(t, err)
		assert.Equal(t, "cruzt1", strings.TrimSpace(string(out)), "pod %s runs as the user", p.Name)
	}

	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, a.checkpoint(u, "ar"))
		time.Sleep(300 * time.Millisecond)
	}
	stopID := a.checkpoint(u, "ar", "--stop")
	first := run.wait(t, time.Minute)
	require.Equal(t, 75, first.Code, "cruz run exits 75 when a checkpoint stops the job; stderr:\n%s", first.Stderr)
	assert.Contains(t, first.Stderr, stopID)
	assert.Equal(t, api.StateStopped, a.status(u, "ar").State)
	a.requireNoLeaks() // a stopped job has no pod left

	second := a.cruz(u, dir, "restart", "ar")
	require.Equal(t, 0, second.Code, "restart: %s", second.Stderr)
	got := append(check.Lines(first.Stdout), check.Lines(second.Stdout)...)
	require.Equal(t, want, got, "the output of the run and its restart, joined, is the uninterrupted run's")
	assert.Equal(t, []string{"ckpt-0001", "ckpt-0002", "ckpt-0003"}, ids)
	assert.Equal(t, api.StateExited, a.status(u, "ar").State)
	a.requireNoLeaks()
}

// TestSingletonMPIJob: with one rank (the default), an MPICH program runs in
// one pod without mpiexec, as a singleton, and checkpoints and restarts like
// any job: mpi.env keeps it off shared memory, which CRIU could not carry.
func TestSingletonMPIJob(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const iters = 30
	run := a.startCruz(u, dir, "run", "--name", "one", "--", testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), "60")
	run.waitOutput(t, "iter 2 ", 30*time.Second)
	j := a.status(u, "one")
	require.Len(t, j.Pods, 1, "one rank, one pod, no mpiexec")
	a.checkpoint(u, "one")
	a.checkpoint(u, "one", "--stop")
	first := run.wait(t, time.Minute)
	require.Equal(t, 75, first.Code, "stderr:\n%s", first.Stderr)
	second := a.cruz(u, dir, "restart", "one")
	require.Equal(t, 0, second.Code, "restart: %s", second.Stderr)
	require.Equal(t, check.AllreduceOutput(1, iters), append(check.Lines(first.Stdout), check.Lines(second.Stdout)...))
	a.requireNoLeaks()
}

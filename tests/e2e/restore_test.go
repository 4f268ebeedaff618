package e2e

import (
	"encoding/json"
	"fmt"
	"os"
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

// checkpointList returns `cruz checkpoints --json job` parsed.
func checkpointList(a *agent, u testenv.User, job string) api.CheckpointList {
	a.t.Helper()
	r := a.cruz(u, "", "checkpoints", "--json", job)
	require.Equal(a.t, 0, r.Code, "cruz checkpoints: %s", r.Stderr)
	var l api.CheckpointList
	require.NoError(a.t, json.Unmarshal([]byte(r.Stdout), &l), "cruz checkpoints --json printed: %s", r.Stdout)
	return l
}

// TestRestoreCheckpointTwice: a checkpoint taken while an MPI job runs stays
// usable after the job has finished: restarting from it twice resumes the
// job from the same point both times, and each run prints the rest of the
// job's output and its result.
func TestRestoreCheckpointTwice(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters, sleepMS = 2, 30, 100
	want := check.AllreduceOutput(np, iters)
	wantText := strings.Join(want, "\n") + "\n"

	run := a.startCruz(u, dir, "run", "--name", "ar2", "--np", fmt.Sprint(np), "--",
		testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), fmt.Sprint(sleepMS))
	run.waitOutput(t, "iter 5 ", 60*time.Second)
	// Everything the run had printed before the checkpoint began was out
	// of the job already: no restart from the checkpoint may print it again.
	before := len(run.stdout.String())
	ckA := a.checkpoint(u, "ar2")
	require.NotContains(t, run.stdout.String(), "result", "the job ended before its checkpoint was taken")
	orig := run.wait(t, 60*time.Second)
	require.Equal(t, 0, orig.Code, "the checkpointed job finishes; stderr:\n%s", orig.Stderr)
	require.Equal(t, want, check.Lines(orig.Stdout), "a leave-running checkpoint does not change the job's output")
	j := a.status(u, "ar2")
	assert.Equal(t, api.StateExited, j.State)
	assert.Equal(t, ckA, j.LastCheckpoint)
	a.requireNoLeaks()
	listBefore := checkpointList(a, u, "ar2")
	require.Len(t, listBefore.Checkpoints, 1)

	var outs []string
	for i := 1; i <= 2; i++ {
		r := a.cruz(u, dir, "restart", "--checkpoint", ckA, "ar2")
		require.Equal(t, 0, r.Code, "restart %d from %s; stdout:\n%s\nstderr:\n%s", i, ckA, r.Stdout, r.Stderr)
		require.NotEmpty(t, r.Stdout, "restart %d printed nothing", i)
		assert.True(t, strings.HasSuffix(wantText, r.Stdout),
			"restart %d prints the end of the job's output, from where the checkpoint caught it; got:\n%s", i, r.Stdout)
		assert.LessOrEqual(t, len(r.Stdout), len(wantText)-before,
			"restart %d prints again what the job had printed before its checkpoint; got:\n%s", i, r.Stdout)
		lines := check.Lines(r.Stdout)
		t.Logf("restart %d from %s: %d lines, from %q (the run had printed %d bytes before the checkpoint)", i, ckA, len(lines), lines[0], before)
		assert.Equal(t, want[len(want)-1], lines[len(lines)-1], "restart %d ends with the result", i)
		assert.NotContains(t, r.Stdout, "start ranks", "restart %d resumes, it does not start over", i)
		j := awaitJobState(a, u, "ar2", 10*time.Second, api.StateExited)
		require.NotNil(t, j.ExitCode)
		assert.Equal(t, 0, *j.ExitCode)
		a.requireNoLeaks()
		outs = append(outs, r.Stdout)
	}
	assert.Equal(t, outs[0], outs[1], "both restarts from %s print the same", ckA)

	// Restarting did not change the checkpoint, nor add one.
	listAfter := checkpointList(a, u, "ar2")
	assert.Empty(t, listAfter.Problems)
	require.Len(t, listAfter.Checkpoints, 1)
	assert.Equal(t, listBefore.Checkpoints[0].ID, listAfter.Checkpoints[0].ID)
	assert.Equal(t, listBefore.Checkpoints[0].Bytes, listAfter.Checkpoints[0].Bytes)
	a.requireNoLeaks()
}

// TestRestartLatestAfterStop: cruz checkpoints lists a job's checkpoints
// with their sizes and phase timings, and cruz restart without --checkpoint
// resumes from the latest one (here the one that stopped the job).
func TestRestartLatestAfterStop(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters, sleepMS = 2, 30, 100
	want := check.AllreduceOutput(np, iters)

	run := a.startCruz(u, dir, "run", "--name", "arl", "--np", fmt.Sprint(np), "--",
		testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), fmt.Sprint(sleepMS))
	run.waitOutput(t, "iter 3 ", 60*time.Second)
	idA := a.checkpoint(u, "arl")
	run.waitOutput(t, "iter 8 ", 30*time.Second)
	r := a.cruz(u, "", "checkpoint", "--stop", "--json", "arl")
	require.Equal(t, 0, r.Code, "cruz checkpoint --stop --json: %s", r.Stderr)
	var ckB api.Checkpoint
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &ckB), "cruz checkpoint --json printed: %s", r.Stdout)
	require.NotEqual(t, idA, ckB.ID)
	assert.True(t, ckB.Stopped)
	first := run.wait(t, 30*time.Second)
	require.Equal(t, 75, first.Code, "stderr:\n%s", first.Stderr)
	assert.Contains(t, first.Stderr, ckB.ID)
	j := a.status(u, "arl")
	assert.Equal(t, api.StateStopped, j.State)
	assert.Equal(t, ckB.ID, j.LastCheckpoint)
	assert.Equal(t, 2, j.Checkpoints)
	a.requireNoLeaks()

	l := checkpointList(a, u, "arl")
	assert.Empty(t, l.Problems)
	require.Len(t, l.Checkpoints, 2)
	ids := []string{l.Checkpoints[0].ID, l.Checkpoints[1].ID}
	assert.ElementsMatch(t, []string{idA, ckB.ID}, ids)
	for _, ck := range l.Checkpoints {
		assert.Regexp(t, `^ckpt-\d{4}$`, ck.ID)
		assert.Equal(t, j.ID, ck.Job)
		assert.Equal(t, ck.ID == ckB.ID, ck.Stopped, "checkpoint %s: stopped", ck.ID)
		assert.Greater(t, ck.Bytes, int64(0), "checkpoint %s: size", ck.ID)
		assert.False(t, ck.Created.IsZero(), "checkpoint %s: creation time", ck.ID)
		for _, ph := range []string{"block", "dump", "commit"} {
			v, ok := ck.Phases[ph]
			assert.True(t, ok, "checkpoint %s: no %q in phases_ms %v", ck.ID, ph, ck.Phases)
			assert.GreaterOrEqual(t, v, int64(0), "checkpoint %s: phase %s", ck.ID, ph)
		}
		assert.Greater(t, ck.Phases["dump"], int64(0), "checkpoint %s: dumping %d pods takes some time", ck.ID, np+1)
		require.Len(t, ck.Pods, np+1, "checkpoint %s: one image per pod", ck.ID)
		var sum int64
		for _, p := range ck.Pods {
			assert.Greater(t, p.Bytes, int64(0), "checkpoint %s: pod %s", ck.ID, p.Name)
			sum += p.Bytes
		}
		assert.LessOrEqual(t, sum, ck.Bytes, "checkpoint %s: the pods' images are part of its size", ck.ID)
		if ck.ID == ckB.ID {
			assert.Equal(t, ckB.Bytes, ck.Bytes, "checkpoint --json and checkpoints --json agree")
		}
	}
	// The table form lists both too.
	r = a.cruz(u, "", "checkpoints", "arl")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, idA)
	assert.Contains(t, r.Stdout, ckB.ID)

	second := a.cruz(u, dir, "restart", "arl")
	require.Equal(t, 0, second.Code, "restart: %s", second.Stderr)
	got := append(check.Lines(first.Stdout), check.Lines(second.Stdout)...)
	// From the earlier checkpoint the restart would print lines that the
	// run printed already: only the latest one gives exactly this.
	require.Equal(t, want, got, "restarting from the latest checkpoint (the stop) continues exactly where the run stopped")
	j = a.status(u, "arl")
	assert.Equal(t, api.StateExited, j.State)
	require.NotNil(t, j.ExitCode)
	assert.Equal(t, 0, *j.ExitCode)
	a.requireNoLeaks()
}

// TestRestoreWithIPNetnsDirectory: `ip netns add` leaves /run/netns bind
// mounted onto itself and shared, for good (seen on this machine after other
// tools ran). Pods must still restore: CRIU cannot restore that mount
// ("Failed to copy sharing from ... /run/netns"), so pods go without it.
func TestRestoreWithIPNetnsDirectory(t *testing.T) {
	testenv.RequireRoot(t)
	if !isMountPoint(t, "/run/netns") {
		name := fmt.Sprintf("cruz-e2e-%d", os.Getpid())
		out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
		require.NoError(t, err, "ip netns add: %s", out)
		out, err = exec.Command("ip", "netns", "del", name).CombinedOutput()
		require.NoError(t, err, "ip netns del: %s", out)
		// Left as iproute2 leaves it, on purpose: that is the case.
	}
	require.True(t, isMountPoint(t, "/run/netns"), "ip netns leaves /run/netns mounted")
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters = 2, 20
	run := a.startCruz(u, dir, "run", "--name", "nsdir", "--np", fmt.Sprint(np), "--", testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", 60*time.Second)
	a.checkpoint(u, "nsdir", "--stop")
	first := run.wait(t, time.Minute)
	require.Equal(t, 75, first.Code, "stderr:\n%s", first.Stderr)
	second := a.cruz(u, dir, "restart", "nsdir")
	require.Equal(t, 0, second.Code, "restart with /run/netns mounted: %s", second.Stderr)
	got := append(check.Lines(first.Stdout), check.Lines(second.Stdout)...)
	require.Equal(t, check.AllreduceOutput(np, iters), got)
	a.requireNoLeaks()
}

// isMountPoint tells whether path is a mount point in this mount namespace.
func isMountPoint(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

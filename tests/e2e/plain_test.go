package e2e

import (
	"encoding/json"
	"fmt"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Helpers shared by plain_test.go, tcp_test.go and restore_test.go.

// lookupJob is `cruz status --json ref` without failing the test: ok is false
// while the agent does not know the job (yet).
func lookupJob(a *agent, u testenv.User, ref string) (api.Job, bool) {
	a.t.Helper()
	r := a.cruz(u, "", "status", "--json", ref)
	if r.Code != 0 {
		return api.Job{}, false
	}
	var j api.Job
	require.NoError(a.t, json.Unmarshal([]byte(r.Stdout), &j), "cruz status --json printed: %s", r.Stdout)
	return j, true
}

// awaitJobState polls the job's status until it is in one of states, and
// fails the test if that does not happen within timeout.
func awaitJobState(a *agent, u testenv.User, ref string, timeout time.Duration, states ...api.JobState) api.Job {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var last api.Job
	var known bool
	for {
		last, known = lookupJob(a, u, ref)
		if known {
			for _, s := range states {
				if last.State == s {
					return last
				}
			}
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("job %s did not reach state %v within %s (known %v, state %q, message %q)",
				ref, states, timeout, known, last.State, last.Message)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// duplicateLines returns the lines that occur more than once.
func duplicateLines(lines []string) []string {
	seen := map[string]int{}
	var dups []string
	for _, l := range lines {
		seen[l]++
		if seen[l] == 2 {
			dups = append(dups, l)
		}
	}
	return dups
}

// TestPlainJobOutputAndExit: a plain job's stdout and stderr reach cruz run
// separately and its exit status becomes cruz's; a command that does not
// exist fails the run with a message that names it.
func TestPlainJobOutputAndExit(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)

	r := a.cruz(u, dir, "run", "--plain", "--name", "count", "--", testenv.Bin(t, "counter"), "5", "50")
	require.Equal(t, 0, r.Code, "counter: stderr:\n%s", r.Stderr)
	assert.Equal(t, check.CounterLines(1, 5), check.Lines(r.Stdout))
	j := a.status(u, "count")
	assert.Equal(t, api.StateExited, j.State)
	require.NotNil(t, j.ExitCode)
	assert.Equal(t, 0, *j.ExitCode)

	r = a.cruz(u, dir, "run", "--plain", "--name", "fails", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	assert.Equal(t, 3, r.Code, "cruz run exits with the job's status; stderr:\n%s", r.Stderr)
	assert.Equal(t, "out\n", r.Stdout)
	assert.Contains(t, r.Stderr, "err\n")
	assert.NotContains(t, r.Stdout, "err")
	j = a.status(u, "fails")
	assert.Equal(t, api.StateExited, j.State)
	require.NotNil(t, j.ExitCode)
	assert.Equal(t, 3, *j.ExitCode)

	const missing = "cruz-no-such-command-xyz"
	r = a.cruz(u, dir, "run", "--plain", "--name", "missing", "--", missing, "arg")
	t.Logf("missing command: status %d, stderr: %s", r.Code, r.Stderr)
	assert.NotEqual(t, 0, r.Code, "a missing command fails the run; stdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
	assert.Contains(t, r.Stderr, missing, "the message names the missing command")
	assert.Empty(t, r.Stdout)
	if j, ok := lookupJob(a, u, "missing"); ok {
		assert.Contains(t, []api.JobState{api.StateExited, api.StateFailed}, j.State)
	}
	a.requireNoLeaks()
}

// TestPlainJobRunsAsUser: the command runs with the user's uid, gid and
// supplementary groups, in the directory cruz run was started from, with
// the pod's name as hostname.
func TestPlainJobRunsAsUser(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)

	r := a.cruz(u, dir, "run", "--plain", "--name", "who", "--", "sh", "-c", "id -u; id -g; id -G; hostname; pwd")
	require.Equal(t, 0, r.Code, "stderr:\n%s", r.Stderr)
	lines := check.Lines(r.Stdout)
	require.Len(t, lines, 5, "output:\n%s", r.Stdout)
	assert.Equal(t, strconv.FormatUint(uint64(u.UID), 10), lines[0], "uid")
	assert.Equal(t, strconv.FormatUint(uint64(u.GID), 10), lines[1], "gid")

	var got []int
	for _, f := range strings.Fields(lines[2]) {
		g, err := strconv.Atoi(f)
		require.NoError(t, err, "id -G printed %q", lines[2])
		got = append(got, g)
	}
	var want []int
	for _, g := range u.Groups {
		want = append(want, int(g))
	}
	sort.Ints(got)
	sort.Ints(want)
	assert.Equal(t, want, got, "the user's groups, no more, no less")
	tg, err := user.LookupGroup("cruztg")
	require.NoError(t, err, "group cruztg (made by `make users`)")
	tgid, err := strconv.Atoi(tg.Gid)
	require.NoError(t, err)
	assert.Contains(t, got, tgid, "supplementary group cruztg")

	j := a.status(u, "who")
	require.Len(t, j.Pods, 1)
	assert.Equal(t, j.Pods[0].Name, lines[3], "hostname is the pod's name")
	assert.Equal(t, j.Pods[0].Hostname, lines[3])
	assert.Equal(t, dir, lines[4], "working directory")
	a.requireNoLeaks()
}

// TestSignalForwarding: a signal to cruz run reaches the job, and so does
// cruz signal; either way the job ends and is reported as exited.
func TestSignalForwarding(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	counter := testenv.Bin(t, "counter")

	// SIGINT to cruz run is forwarded to the job.
	run := a.startCruz(u, dir, "run", "--plain", "--name", "sigint", "--", counter, "1000", "50")
	run.waitOutput(t, "line 3\n", 30*time.Second)
	require.NoError(t, run.cmd.Process.Signal(syscall.SIGINT))
	res := run.wait(t, 15*time.Second)
	t.Logf("after SIGINT: status %d, stderr: %q", res.Code, res.Stderr)
	assert.Contains(t, []int{128 + int(syscall.SIGINT), 128 + int(syscall.SIGKILL)}, res.Code,
		"cruz run ends with the signal's status; stderr:\n%s", res.Stderr)
	assert.NotContains(t, res.Stdout, "line 1000")
	j := awaitJobState(a, u, "sigint", 10*time.Second, api.StateExited)
	require.NotNil(t, j.ExitCode)
	assert.Equal(t, res.Code, *j.ExitCode)

	// cruz signal JOB TERM from another process.
	run = a.startCruz(u, dir, "run", "--plain", "--name", "sigterm", "--", counter, "1000", "50")
	run.waitOutput(t, "line 3\n", 30*time.Second)
	sr := a.cruz(u, "", "signal", "sigterm", "TERM")
	require.Equal(t, 0, sr.Code, "cruz signal: %s", sr.Stderr)
	res = run.wait(t, 15*time.Second)
	t.Logf("after cruz signal TERM: status %d, stderr: %q", res.Code, res.Stderr)
	assert.Contains(t, []int{128 + int(syscall.SIGTERM), 128 + int(syscall.SIGKILL)}, res.Code,
		"cruz run ends with the signal's status; stderr:\n%s", res.Stderr)
	assert.NotContains(t, res.Stdout, "line 1000")
	j = awaitJobState(a, u, "sigterm", 10*time.Second, api.StateExited)
	require.NotNil(t, j.ExitCode)
	assert.Equal(t, res.Code, *j.ExitCode)

	// A job that is over has nothing left to signal.
	sr = a.cruz(u, "", "signal", "sigterm", "TERM")
	assert.NotEqual(t, 0, sr.Code, "signalling an exited job fails")
	a.requireNoLeaks()
}

// TestCheckpointPlainStopRestartTwiceOutput: a plain job stopped by a
// checkpoint, restarted, stopped again and restarted again prints every
// line exactly once, in order, across its three runs.
func TestCheckpointPlainStopRestartTwiceOutput(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const n = 40
	// 100 ms between lines: the job runs about 4 s, which leaves room for
	// two stop-checkpoints and a restore on a slow, shared machine.
	run := a.startCruz(u, dir, "run", "--plain", "--name", "cnt", "--", testenv.Bin(t, "counter"), fmt.Sprint(n), "100")
	run.waitOutput(t, "line 5\n", 30*time.Second)
	id1 := a.checkpoint(u, "cnt", "--stop")
	first := run.wait(t, 30*time.Second)
	require.Equal(t, 75, first.Code, "a stop-checkpoint ends cruz run with 75; stderr:\n%s", first.Stderr)
	assert.Contains(t, first.Stderr, id1)
	assert.Equal(t, api.StateStopped, a.status(u, "cnt").State)
	a.requireNoLeaks()

	second := a.startCruz(u, dir, "restart", "cnt")
	// Wait for the restored job to print something of its own, then stop
	// it again.
	deadline := time.Now().Add(30 * time.Second)
	for len(check.NonEmptyLines(second.stdout.String())) < 3 {
		require.True(t, time.Now().Before(deadline), "the restored job printed no 3 lines within 30s; stdout:\n%s\nstderr:\n%s",
			second.stdout.String(), second.stderr.String())
		select {
		case <-second.done:
			t.Fatalf("the restored job ended (status %d) before it could be stopped again; stdout:\n%s\nstderr:\n%s",
				second.code, second.stdout.String(), second.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	id2 := a.checkpoint(u, "cnt", "--stop")
	secondRes := second.wait(t, 30*time.Second)
	require.Equal(t, 75, secondRes.Code, "stderr:\n%s", secondRes.Stderr)
	assert.Contains(t, secondRes.Stderr, id2)
	assert.NotEqual(t, id1, id2)
	a.requireNoLeaks()

	third := a.cruz(u, dir, "restart", "cnt")
	require.Equal(t, 0, third.Code, "stderr:\n%s", third.Stderr)

	outs := []string{first.Stdout, secondRes.Stdout, third.Stdout}
	var all []string
	for i, o := range outs {
		lines := check.NonEmptyLines(o)
		assert.NotEmpty(t, lines, "run %d printed nothing", i+1)
		assert.True(t, strings.HasSuffix(o, "\n"), "run %d ends in the middle of a line: %q", i+1, o)
		all = append(all, lines...)
	}
	require.Equal(t, check.CounterLines(1, n), all, "run, restart and second restart together print each line once, in order:\n%q", outs)
	j := a.status(u, "cnt")
	assert.Equal(t, api.StateExited, j.State)
	require.NotNil(t, j.ExitCode)
	assert.Equal(t, 0, *j.ExitCode)
	a.requireNoLeaks()
}

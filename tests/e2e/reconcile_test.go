package e2e

// cruzd ending under its jobs: killed (a crash: the next cruzd must clean up
// what the dead one left and mark its jobs lost, restartable from their
// checkpoints) or stopped (SIGTERM: it ends its jobs' pods itself); and many
// jobs in a row leaving nothing behind.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	cruzpod "github.com/cruz-hpc/cruz/internal/pod"
	"github.com/cruz-hpc/cruz/internal/proc"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// netnsOf returns the inode of the network namespace of every pod of j, from
// the pod's PID 1 as the node sees it.
func netnsOf(t *testing.T, jobs ...api.Job) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, j := range jobs {
		for _, p := range j.Pods {
			require.NotZero(t, p.PID, "pod %s has no PID 1", p.Name)
			var st unix.Stat_t
			require.NoError(t, unix.Stat(fmt.Sprintf("/proc/%d/ns/net", p.PID), &st), "pod %s", p.Name)
			out[p.Name] = st.Ino
		}
	}
	return out
}

// requireNetnsGone checks that no process is left in any of the pods'
// network namespaces, so that they are gone with their veths.
func requireNetnsGone(t *testing.T, netns map[string]uint64) {
	t.Helper()
	for pod, ino := range netns {
		assert.Empty(t, cruzpod.ProcessesInNetns(ino), "processes left in the network namespace of pod %s", pod)
	}
}

// awaitRunning waits until job ref of u is running with every pod up.
func awaitRunning(t *testing.T, a *agent, u testenv.User, ref string) api.Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := a.cruz(u, "", "status", "--json", ref)
		var j api.Job
		if r.Code == 0 && json.Unmarshal([]byte(r.Stdout), &j) == nil && j.State == api.StateRunning && len(j.Pods) > 0 {
			up := true
			for _, p := range j.Pods {
				up = up && p.PID != 0
			}
			if up {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s of %s is not running with all its pods after 30s: %s %s", ref, u.Name, r.Stdout, r.Stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// awaitOwnPodProcesses waits until at least n processes run in the agent's
// pods (see ownPodProcesses).
func awaitOwnPodProcesses(t *testing.T, a *agent, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		own := a.ownPodProcesses()
		if len(own) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes in the agent's pods after 30s, want %d or more: %v", len(own), n, own)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// crash kills cruzd with SIGKILL, as a crash would, and waits for it.
func (a *agent) crash() {
	a.t.Helper()
	require.NotNil(a.t, a.cmd, "no cruzd to kill")
	require.NoError(a.t, a.cmd.Process.Kill())
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.t.Fatalf("cruzd %d did not die within 30s of SIGKILL", a.cmd.Process.Pid)
	}
	a.cmd = nil
}

// lostStream matches what a cruz client says when its agent goes away.
var lostStream = regexp.MustCompile(`lost the job's stream|the agent closed the connection`)

// requireSuffixOf checks that got is the end of want, and returns where in
// want it starts.
func requireSuffixOf(t *testing.T, want, got []string, what string) int {
	t.Helper()
	require.NotEmpty(t, got, "%s printed nothing", what)
	require.LessOrEqual(t, len(got), len(want), "%s printed more than a whole run:\n%s", what, strings.Join(got, "\n"))
	at := len(want) - len(got)
	require.Equal(t, want[at:], got, "%s is the end of the uninterrupted run's output", what)
	return at
}

// TestAgentCrashReconcile: cruzd dies (SIGKILL) under a running MPI job and
// a plain job. The next cruzd removes every pod the dead one left (netns,
// veth, processes still running) and marks both jobs lost; the MPI job is
// restarted from its checkpoint and ends with the right result, and the
// clients of the first run say they lost their stream. (The jobs run with
// --restart never: by policy the agent would roll them back by itself, as
// TestRecoveryCoordinatorKilled checks.)
func TestAgentCrashReconcile(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters = 2, 60
	want := check.AllreduceOutput(np, iters)

	run := a.startCruz(u, dir, "run", "--restart", "never", "--name", "ar", "--np", fmt.Sprint(np), "--", testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", 60*time.Second)
	// A job that writes nothing outlives the agent as it is.
	sleeper := a.startCruz(u, dir, "run", "--restart", "never", "--plain", "--name", "sleeper", "--", "/bin/sleep", "600")
	sj := awaitRunning(t, a, u, "sleeper")
	j := awaitRunning(t, a, u, "ar")
	require.Len(t, j.Pods, np+1)
	// mpiexec, a proxy and a rank per rank pod, and the sleeper (once its
	// pod init has become sleep: until then its environment is not the
	// user's).
	awaitOwnPodProcesses(t, a, 2*np+2)

	ck := a.checkpoint(u, j.ID)
	// Let the job print well past the checkpoint: that output is re-run.
	time.Sleep(time.Second)
	seen := strings.Count(run.stdout.String(), "\n")
	run.waitOutput(t, fmt.Sprintf("iter %d ", seen+2), 30*time.Second)
	netns := netnsOf(t, a.status(u, j.ID), sj)
	a.crash()

	// What the dead agent left: at least the sleeper, in its netns, with
	// its veth on the bridge.
	sleeperPID := sj.Pods[0].PID
	require.True(t, cluster.Alive(sleeperPID), "the sleeper pod (pid %d) outlives the agent", sleeperPID)
	require.NotEmpty(t, cruzpod.ProcessesInNetns(netns[sj.Pods[0].Name]), "the sleeper's netns outlives the agent")
	out, err := exec.Command("ip", "-o", "link", "show", "master", a.bridge).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NotEmpty(t, strings.TrimSpace(string(out)), "the sleeper's veth outlives the agent")

	for _, c := range []*cruzCmd{run, sleeper} {
		r := c.wait(t, 30*time.Second)
		assert.Equal(t, 1, r.Code, "cruz %v exits 1 when its agent dies; stderr:\n%s", c.cmd.Args[1:], r.Stderr)
		assert.Regexp(t, lostStream, r.Stderr, "cruz %v", c.cmd.Args[1:])
		assert.Contains(t, r.Stderr, "cruz status", "it says how to find out about the job")
	}
	first := check.Lines(run.stdout.String())
	require.Equal(t, want[:len(first)], first, "the first run's output is the start of the job's")

	a.start()
	a.requireNoLeaks()
	requireNetnsGone(t, netns)
	assert.False(t, cluster.Alive(sleeperPID), "the sleeper pod was killed")
	for _, ref := range []string{j.ID, sj.ID} {
		lost := a.status(u, ref)
		assert.Equal(t, api.StateLost, lost.State, "job %s", ref)
		assert.Contains(t, lost.Message, "restart it from its latest checkpoint", "job %s", ref)
		for _, p := range lost.Pods {
			assert.Zero(t, p.PID, "lost job %s has no pod process", ref)
		}
	}

	r := a.cruz(u, dir, "restart", j.ID)
	require.Equal(t, 0, r.Code, "restart from %s: stderr:\n%s", ck, r.Stderr)
	at := requireSuffixOf(t, want, check.Lines(r.Stdout), "the restart")
	assert.Less(t, at, len(first), "the restart re-runs what the job printed between %s and the crash", ck)
	assert.Equal(t, api.StateExited, a.status(u, j.ID).State)

	r = a.cruz(u, dir, "restart", sj.ID)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "has no checkpoints", "the sleeper had no checkpoint to restart from")
	a.requireNoLeaks()
}

// TestAgentShutdownEndsJobs: SIGTERM to cruzd ends its jobs' pods before it
// exits; after it starts again the jobs are lost, and one with a checkpoint
// restarts from it and ends normally.
func TestAgentShutdownEndsJobs(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const last = 200

	run := a.startCruz(u, dir, "run", "--plain", "--name", "cnt", "--", testenv.Bin(t, "counter"), fmt.Sprint(last), "30")
	run.waitOutput(t, "line 5\n", 30*time.Second)
	id := a.status(u, "cnt").ID
	ck := a.checkpoint(u, id)
	time.Sleep(time.Second) // let what the checkpointed process printed reach the client
	atCk := strings.Count(run.stdout.String(), "\n")
	sleeper := a.startCruz(u, dir, "run", "--plain", "--name", "sleeper", "--", "/bin/sleep", "600")
	sj := awaitRunning(t, a, u, "sleeper")
	awaitOwnPodProcesses(t, a, 2)
	netns := netnsOf(t, a.status(u, id), sj)

	t0 := time.Now()
	a.stop()
	assert.Less(t, time.Since(t0), 20*time.Second, "cruzd stops promptly on SIGTERM")
	a.requireNoLeaks()
	requireNetnsGone(t, netns)
	assert.False(t, cluster.Alive(sj.Pods[0].PID), "the agent ended the sleeper's pod")
	for _, c := range []*cruzCmd{run, sleeper} {
		r := c.wait(t, 30*time.Second)
		assert.Equal(t, 1, r.Code, "cruz %v exits 1 when the agent stops; stderr:\n%s", c.cmd.Args[1:], r.Stderr)
		assert.Contains(t, r.Stderr, "the cruz agent on this node stopped", "cruz %v", c.cmd.Args[1:])
		assert.Regexp(t, `with: cruz restart [0-9a-f]+\n`, r.Stderr, "cruz %v says how to restart the job", c.cmd.Args[1:])
	}
	first := check.Lines(run.stdout.String())
	require.Less(t, len(first), last, "the job did not end by itself before the agent stopped")

	a.start()
	for _, ref := range []string{id, sj.ID} {
		j := a.status(u, ref)
		assert.Equal(t, api.StateLost, j.State, "job %s", ref)
		assert.Contains(t, j.Message, "agent stopped", "job %s", ref)
	}
	r := a.cruz(u, dir, "restart", id)
	require.Equal(t, 0, r.Code, "restart from %s: stderr:\n%s", ck, r.Stderr)
	s := counterFrom(t, check.Lines(r.Stdout), last)
	assert.LessOrEqual(t, s-1, atCk, "restarted from %s", ck)
	assert.Equal(t, api.StateExited, a.status(u, id).State)

	r = a.cruz(u, dir, "restart", sj.ID)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "has no checkpoints")
	a.requireNoLeaks()
}

// requireNoCRIUWork checks that no CRIU work directory (logs of a dump or
// restore) is left in any job's run directory: they are removed when the
// operation succeeds.
func requireNoCRIUWork(t *testing.T, a *agent) {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(a.runDir, "jobs", "*", "criu", "*"))
	require.NoError(t, err)
	require.Empty(t, dirs, "CRIU work directories left after successful checkpoints and restarts")
}

// TestNoLeaksAfterManyJobs: plain and MPI jobs, run to their end,
// checkpointed while running, stopped and restarted, removed, leave nothing
// on the node.
func TestNoLeaksAfterManyJobs(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	counter := testenv.Bin(t, "counter")
	var ids []string

	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("plain%d", i)
		switch i % 3 {
		case 0: // runs to its end
			r := a.cruz(u, dir, "run", "--plain", "--name", name, "--", counter, "3", "5")
			require.Equal(t, 0, r.Code, "%s: %s", name, r.Stderr)
			require.Equal(t, check.CounterLines(1, 3), check.Lines(r.Stdout))
		case 1: // checkpointed while it runs
			// 4 s: under load, a 1 s job (40 x 25 ms) ended during its
			// dump, and the checkpoint failed (CRIU: "Unable to detach
			// from PID: No such process") before the leak check.
			run := a.startCruz(u, dir, "run", "--plain", "--name", name, "--", counter, "40", "100")
			run.waitOutput(t, "line 3\n", 30*time.Second)
			a.checkpoint(u, name)
			r := run.wait(t, 30*time.Second)
			require.Equal(t, 0, r.Code, "%s: %s", name, r.Stderr)
			require.Equal(t, check.CounterLines(1, 40), check.Lines(r.Stdout))
		case 2: // stopped by a checkpoint and restarted
			run := a.startCruz(u, dir, "run", "--plain", "--name", name, "--", counter, "40", "100")
			run.waitOutput(t, "line 3\n", 30*time.Second)
			a.checkpoint(u, name, "--stop")
			r1 := run.wait(t, 30*time.Second)
			require.Equal(t, 75, r1.Code, "%s: %s", name, r1.Stderr)
			r2 := a.cruz(u, dir, "restart", name)
			require.Equal(t, 0, r2.Code, "%s: %s", name, r2.Stderr)
			require.Equal(t, check.CounterLines(1, 40), append(check.Lines(r1.Stdout), check.Lines(r2.Stdout)...))
		}
		ids = append(ids, a.status(u, name).ID)
		requireNoCRIUWork(t, a)
	}

	app := testenv.Bin(t, "mpi_allreduce")
	for i, mode := range []string{"end", "checkpoint", "stop"} {
		name := fmt.Sprintf("mpi%d", i)
		want := check.AllreduceOutput(2, 30)
		run := a.startCruz(u, dir, "run", "--name", name, "--np", "2", "--", app, "30", "60")
		var got []string
		switch mode {
		case "end":
		case "checkpoint":
			run.waitOutput(t, "iter 3 ", 60*time.Second)
			a.checkpoint(u, name)
		case "stop":
			run.waitOutput(t, "iter 3 ", 60*time.Second)
			a.checkpoint(u, name, "--stop")
			r := run.wait(t, 60*time.Second)
			require.Equal(t, 75, r.Code, "%s: %s", name, r.Stderr)
			got = check.Lines(r.Stdout)
			run = a.startCruz(u, dir, "restart", name)
		}
		r := run.wait(t, 60*time.Second)
		require.Equal(t, 0, r.Code, "%s: %s", name, r.Stderr)
		require.Equal(t, want, append(got, check.Lines(r.Stdout)...), "%s", name)
		ids = append(ids, a.status(u, name).ID)
		requireNoCRIUWork(t, a)
	}

	a.requireNoLeaks()
	// Removing jobs removes their run directories, and with --checkpoints
	// their checkpoints.
	for i, id := range ids {
		args := []string{"rm", id}
		if i%2 == 0 {
			args = []string{"rm", "--checkpoints", id}
		}
		r := a.cruz(u, "", args...)
		require.Equal(t, 0, r.Code, "cruz %v: %s", args, r.Stderr)
		_, err := os.Stat(filepath.Join(a.runDir, "jobs", id))
		assert.True(t, os.IsNotExist(err), "run directory of removed job %s is gone", id)
		if i%2 == 0 {
			_, err := os.Stat(filepath.Join(a.store, id))
			assert.True(t, os.IsNotExist(err), "checkpoints of job %s removed with --checkpoints are gone", id)
		}
	}
	r := a.cruz(u, "", "status", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, `"jobs": []`)

	a.requireNoLeaks()
	entries, _ := os.ReadDir(filepath.Join(a.runDir, "netns"))
	assert.Empty(t, entries, "nothing in run_dir/netns")
	jobs, _ := os.ReadDir(filepath.Join(a.runDir, "jobs"))
	assert.Empty(t, jobs, "nothing in run_dir/jobs once every job is removed")
	stored, _ := os.ReadDir(a.store)
	for _, e := range stored {
		// The layout marker is the store's own; any other dot entry is a leftover.
		assert.False(t, strings.HasPrefix(e.Name(), ".") && e.Name() != ".cruz-store", "hidden leftover %s in the store", e.Name())
		cks, _ := os.ReadDir(filepath.Join(a.store, e.Name()))
		for _, c := range cks {
			assert.False(t, strings.HasPrefix(c.Name(), ".tmp-") || strings.HasPrefix(c.Name(), ".del-"),
				"leftover %s/%s in the store", e.Name(), c.Name())
		}
	}
}

// TestReconcileStaleRecordKillsNothing: a pod set record that a dead agent
// left names a netns inode and a PID 1 that, by the time the next agent
// starts, belong to another process (inodes and PIDs are reused): here a
// process in a netns of its own, with the record's start time one tick off,
// and a pod recorded without its PID 1 (as records were before). The next
// agent starts, kills nothing, says why, and drops the record.
func TestReconcileStaleRecordKillsNothing(t *testing.T) {
	a := startAgent(t, agentOptions{})
	a.stop()

	other := exec.Command("unshare", "--net", "sleep", "600")
	require.NoError(t, other.Start())
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	pid := other.Process.Pid
	var ino uint64
	var start uint64
	require.Eventually(t, func() bool {
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || st.Ino == testHostNet {
			return false // unshare has not made its netns yet
		}
		ino = st.Ino
		s, err := proc.StartTime(pid)
		start = s
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "pid %d in a netns of its own", pid)

	dir := filepath.Join(a.runDir, "sets", "0123456789abcdef")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	rec := map[string]any{
		"job": "0123456789abcdef", "uid": 1001, "gid": 1001, "coordinator": "",
		"netns": map[string]uint64{"stale-r0": ino, "old-r1": ino},
		"specs": map[string]any{},
		"inits": map[string]cruzpod.InitID{"stale-r0": {PID: pid, Start: start + 1}},
	}
	b, err := json.Marshal(rec)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "set.json"), b, 0o600))

	a.start()
	require.True(t, cluster.Alive(pid), "the process the stale record names lives on")
	var st unix.Stat_t
	require.NoError(t, unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st))
	require.Equal(t, ino, st.Ino, "in its own netns")
	_, err = os.Stat(dir)
	require.True(t, os.IsNotExist(err), "the stale record is dropped")
	log := a.log()
	require.Contains(t, log, "nothing to remove of a pod that ran when the previous agent ended")
	require.Contains(t, log, "is not the pod's PID 1 any more", "the agent says why it killed nothing")
	require.Contains(t, log, "no PID 1 of the pod was recorded")
	a.requireNoLeaks()
}

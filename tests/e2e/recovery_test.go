package e2e

// Automatic recovery by the policy engine: real MPI jobs with periodic
// checkpoints, real faults (a rank killed, a whole node failed, a corrupted
// checkpoint, failures again and again), and the job's result and every
// line of its output checked each time.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// programOutput is the output's lines without MPICH's abort banners (see
// check.ProgramOutput), logging how many there were.
func programOutput(t *testing.T, lines []string) []string {
	t.Helper()
	out, banners := check.ProgramOutput(lines)
	t.Logf("%d MPICH abort banners in the output", banners)
	return out
}

// events returns the job's event log.
func (a *agent) events(u testenv.User, job string) []api.Event {
	a.t.Helper()
	r := a.cruz(u, "", "events", "--json", job)
	require.Equal(a.t, 0, r.Code, "cruz events: %s", r.Stderr)
	var l api.EventList
	require.NoError(a.t, json.Unmarshal([]byte(r.Stdout), &l))
	return l.Events
}

func kinds(evs []api.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, string(e.Kind))
	}
	return out
}

func countKind(evs []api.Event, kind string) int {
	n := 0
	for _, e := range evs {
		if string(e.Kind) == kind {
			n++
		}
	}
	return n
}

// awaitEvent waits until the job's event log has n events of kind.
func (a *agent) awaitEvent(u testenv.User, job, kind string, n int, timeout time.Duration) []api.Event {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := a.events(u, job)
		if countKind(evs, kind) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("no %d %q events in %s; events: %v", n, kind, timeout, evs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rankProcess finds a process of the job's ranks (the MPI program, not
// its hydra proxy) by its name and the agent socket in its environment.
func (a *agent) rankProcess(t *testing.T, comm string) int {
	t.Helper()
	for _, pid := range a.ownPodProcesses() {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(b)) == comm {
			return pid
		}
	}
	t.Fatalf("no %s process of this agent's jobs", comm)
	return 0
}

// TestRecoveryRankKilled: kill -9 of one rank process of a job that
// checkpoints every 2 s. The coordinator notices (mpiexec ends with an
// error), rolls the whole job back to its last checkpoint and the job
// finishes: the attached `cruz run` exits 0 with exactly the output of an
// uninterrupted run (what the failed run printed after the checkpoint is
// not shown twice), and the event log tells the story.
func TestRecoveryRankKilled(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 3)
	const np, iters = 4, 120

	run := n1.startAllreduce(u, dir, "k9", np, iters, "--interval", "2s")
	n1.awaitEvent(u, "k9", "checkpoint", 1, time.Minute)
	// Let the job print a few lines after its checkpoint: the rollback
	// will print them again, and they must not be shown twice.
	time.Sleep(700 * time.Millisecond)
	victim := n1.rankProcess(t, "mpi_allreduce")
	require.NoError(t, unix.Kill(victim, unix.SIGKILL))
	t.Logf("killed rank process %d", victim)

	r := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, r.Code, "stderr:\n%s", r.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), programOutput(t, check.Lines(r.Stdout)), "the output of one uninterrupted run")
	evs := n1.events(u, "k9")
	t.Logf("events: %v", kinds(evs))
	require.Equal(t, 1, countKind(evs, "failure"), "one failure")
	require.Equal(t, 1, countKind(evs, "recovered"), "one recovery")
	assert.Equal(t, api.EventExited, evs[len(evs)-1].Kind)
	for _, e := range evs {
		if e.Kind == "failure" || e.Kind == "recovered" || e.Kind == "output" {
			t.Logf("%s: %s", e.Kind, e.Message)
		}
	}
	assert.Equal(t, 1, n1.status(u, "k9").Restarts)
	c.requireClean(t, st)
}

// TestRecoveryNodeFailure: a job of 6 ranks on 3 nodes with one spare
// node; `cruz cluster fail node2` (its link cut, its agent and pods
// killed). The coordinator's heartbeats notice, the job is rolled back to
// its last checkpoint with node2's pods on the spare (same addresses and
// MACs), and finishes with the right output.
func TestRecoveryNodeFailure(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 4)
	const np, iters = 6, 120

	run := n1.startAllreduce(u, dir, "nf", np, iters, "--interval", "2s", "--spares", "1")
	before := n1.status(u, "nf")
	ranks, _ := podsByNode(before)
	require.Equal(t, map[string]int{"node1": 2, "node2": 2, "node3": 2}, ranks, "node4 is the spare")
	assert.Equal(t, []string{"node4"}, before.Spares)
	n1.awaitEvent(u, "nf", "checkpoint", 1, time.Minute)

	t0 := time.Now()
	r := c.clusterCmd("fail", "node2")
	require.Equal(t, 0, r.Code, "cruz cluster fail node2: %s", r.Stderr)
	evs := n1.awaitEvent(u, "nf", "recovered", 1, 2*time.Minute)
	t.Logf("node failure to job running again: %s", time.Since(t0).Round(time.Millisecond))
	for _, e := range evs {
		if e.Kind == "failure" || e.Kind == "recovered" {
			t.Logf("%s: %s", e.Kind, e.Message)
		}
	}
	after := n1.status(u, "nf")
	ranks, _ = podsByNode(after)
	assert.Equal(t, map[string]int{"node1": 2, "node4": 2, "node3": 2}, ranks, "node2's ranks are on the spare")
	for i, p := range after.Pods {
		assert.Equal(t, before.Pods[i].IP, p.IP)
		assert.Equal(t, before.Pods[i].MAC, p.MAC)
	}
	out := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), programOutput(t, check.Lines(out.Stdout)))
	st = c.status()
	var alive []cluster.Node
	for _, n := range st.Nodes {
		if !n.Failed {
			alive = append(alive, n)
		}
	}
	st.Nodes = alive
	c.requireClean(t, st)
}

// TestRecoveryCorruptCheckpoint: the newest checkpoint is damaged (a byte
// of one image changed) when a rank is killed: the rollback skips it, says
// so on the job's stderr and in its event log, and uses the previous one;
// the output is still that of one uninterrupted run.
func TestRecoveryCorruptCheckpoint(t *testing.T) {
	c, _, n1, u, dir := clusterSetup(t, 2)
	const np, iters = 2, 120

	run := n1.startAllreduce(u, dir, "bad", np, iters, "--interval", "2s", "--keep", "5")
	n1.awaitEvent(u, "bad", "checkpoint", 1, time.Minute)
	// The second is asked for: the policy's own comes only when
	// policy.max_overhead allows, which on a busy machine (holds of 2 s and
	// more) is later than this test should wait.
	ck := n1.cruz(u, dir, "checkpoint", "--wait", "60s", "bad")
	require.Equal(t, 0, ck.Code, "cruz checkpoint: %s", ck.Stderr)
	evs := n1.events(u, "bad")
	var newest string
	for _, e := range evs {
		if e.Kind == "checkpoint" {
			newest = e.Checkpoint
		}
	}
	// Stop the policy from taking a newer one: corrupt and kill at once.
	job := n1.status(u, "bad")
	pages, err := filepath.Glob(filepath.Join(c.store, job.ID, newest, job.ID+"-r0", "pages-*.img"))
	require.NoError(t, err)
	require.NotEmpty(t, pages)
	f, err := os.OpenFile(pages[0], os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0x5a}, 100)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, unix.Kill(n1.rankProcess(t, "mpi_allreduce"), unix.SIGKILL))

	out := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), programOutput(t, check.Lines(out.Stdout)))
	assert.Contains(t, out.Stderr, "skipping checkpoint", "the restart says it skipped the damaged checkpoint")
	assert.Contains(t, out.Stderr, newest)
	evs = n1.events(u, "bad")
	require.Equal(t, 1, countKind(evs, "checkpoint_skipped"), "events: %v", kinds(evs))
	for _, e := range evs {
		if e.Kind == "recovered" {
			assert.NotEqual(t, newest, e.Checkpoint, "the rollback used an older checkpoint")
			t.Logf("recovered: %s", e.Message)
		}
	}
}

// TestRecoveryBudget: a job that fails again and again is restored at most
// policy.restart_budget (3) times, each after a longer delay, then stopped
// with the reason, on its client's stderr and in its event log.
func TestRecoveryBudget(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 1)

	run := n1.startCruz(u, dir, "run", "--plain", "--name", "doomed", "--interval", "1s", "--", testenv.Bin(t, "counter"), "100000", "50")
	run.waitOutput(t, "line 3\n", time.Minute)
	n1.awaitEvent(u, "doomed", "checkpoint", 1, time.Minute)
	for i := 1; i <= 4; i++ {
		j := awaitJobState(n1, u, "doomed", time.Minute, api.StateRunning)
		require.Len(t, j.Pods, 1)
		require.Positive(t, j.Pods[0].PID)
		require.NoError(t, unix.Kill(j.Pods[0].PID, unix.SIGKILL), "kill %d", i)
		if i < 4 {
			n1.awaitEvent(u, "doomed", "recovered", i, time.Minute)
		}
	}
	r := run.wait(t, 2*time.Minute)
	assert.NotEqual(t, 0, r.Code)
	assert.Contains(t, r.Stderr, "policy.restart_budget = 3", "the client says why the job stopped")
	evs := n1.events(u, "doomed")
	assert.Equal(t, 4, countKind(evs, "failure"), "events: %v", kinds(evs))
	assert.Equal(t, 3, countKind(evs, "recovered"))
	assert.Equal(t, api.EventGaveUp, evs[len(evs)-1].Kind)
	var delays []string
	for _, e := range evs {
		if e.Kind == "restarting" {
			delays = append(delays, e.Message)
		}
	}
	require.Len(t, delays, 3)
	// The first restart in the window at once; then restart_base (2s),
	// doubling.
	assert.Contains(t, delays[0], "in 0s")
	assert.Contains(t, delays[1], "in 2s")
	assert.Contains(t, delays[2], "in 4s")
	assert.Equal(t, api.StateFailed, n1.status(u, "doomed").State)
	c.requireClean(t, st)
}

// TestRecoveryCoordinatorKilled: the agent coordinating a job is killed
// (SIGKILL) in the middle of a checkpoint, and restarted (as systemd would).
// The new agent finds the job lost, removes its pods on every node, and
// rolls it back to its last complete checkpoint by itself. The output the
// first `cruz run` got before the crash, followed by what `cruz attach`
// gets from the rolled-back run, is the output of one uninterrupted run.
func TestRecoveryCoordinatorKilled(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 3)
	const np, iters = 4, 150

	run := n1.startAllreduce(u, dir, "orphan", np, iters, "--interval", "2s")
	n1.awaitEvent(u, "orphan", "checkpoint", 1, time.Minute)
	// Kill the coordinator while it (its CRIU) dumps the job's pods: a
	// checkpoint asked for now (policy.max_overhead may space the periodic
	// ones out beyond the interval on a busy machine), or a periodic one.
	ck := n1.startCruz(u, dir, "checkpoint", "orphan")
	agentPID := st.Nodes[0].PID
	killed := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if childWith(agentPID, "criu") != 0 {
			require.NoError(t, unix.Kill(agentPID, unix.SIGKILL))
			killed = true
			break
		}
	}
	require.True(t, killed, "the coordinator started a checkpoint")
	ck.wait(t, time.Minute) // it loses its agent, or was refused as busy
	first := run.wait(t, time.Minute)
	assert.NotEqual(t, 0, first.Code, "the first client loses its agent")
	rr := c.clusterCmd("restart", "node1")
	require.Equal(t, 0, rr.Code, "cruz cluster restart node1: %s", rr.Stderr)

	evs := n1.awaitEvent(u, "orphan", "recovered", 1, 2*time.Minute)
	for _, e := range evs {
		if e.Kind == "failure" || e.Kind == "recovered" {
			t.Logf("%s: %s", e.Kind, e.Message)
		}
	}
	rest := n1.cruz(u, dir, "attach", "orphan")
	require.Equal(t, 0, rest.Code, "cruz attach: %s", rest.Stderr)
	got := append(check.Lines(first.Stdout), check.Lines(rest.Stdout)...)
	require.Equal(t, check.AllreduceOutput(np, iters), got, "the first client's output and the rolled-back run's are one run's")
	c.requireClean(t, c.status())
}

// TestStoreFullDuringCheckpoint: the checkpoint store (a 12 MiB tmpfs
// here) fills up: the policy engine's first checkpoint of the job (7.7 MiB)
// fits, the next one, asked for at once (the policy's own would come only
// when policy.max_overhead allows), would not and is refused before the job
// is held, saying why; the job runs on and finishes right; nothing
// half-written is left in the store, and the checkpoint that fitted is
// intact and restores.
func TestStoreFullDuringCheckpoint(t *testing.T) {
	c := upClusterWith(t, 2, func(c *vcluster) {
		require.NoError(t, os.MkdirAll(c.store, 0o755))
		require.NoError(t, unix.Mount("tmpfs", c.store, "tmpfs", 0, "size=12m,mode=0711"))
		t.Cleanup(func() { _ = unix.Unmount(c.store, unix.MNT_DETACH) })
	})
	st := c.status()
	n1 := c.node(t, st, "node1")
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters = 2, 150

	run := n1.startAllreduce(u, dir, "full", np, iters, "--interval", "2s", "--keep", "10")
	n1.awaitEvent(u, "full", "checkpoint", 1, time.Minute)
	ck := n1.cruz(u, dir, "checkpoint", "--wait", "60s", "full")
	assert.Equal(t, 1, ck.Code, "a checkpoint that does not fit fails: %s", ck.Stdout)
	// Refused before the job is held: the job's last checkpoint would not
	// fit in what the store has free.
	assert.Contains(t, ck.Stderr, "free and the job's last checkpoint took", "cruz checkpoint says why")
	evs := n1.awaitEvent(u, "full", "checkpoint_failed", 1, time.Minute)
	for _, e := range evs {
		if e.Kind == "checkpoint" || e.Kind == "checkpoint_failed" {
			t.Logf("%s: %s", e.Kind, e.Message)
		}
	}
	var failed string
	for _, e := range evs {
		if e.Kind == "checkpoint_failed" {
			failed = e.Message
		}
	}
	assert.Contains(t, failed, "free and the job's last checkpoint took", "the failure says why")
	assert.Equal(t, api.StateRunning, n1.status(u, "full").State, "the job runs on")

	out := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), check.Lines(out.Stdout))
	job := n1.status(u, "full")
	entries, err := os.ReadDir(filepath.Join(c.store, job.ID))
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), ".tmp-"), "half-written %s left in the store", e.Name())
	}
	r := n1.cruz(u, "", "checkpoints", "--json", "full")
	require.Equal(t, 0, r.Code, r.Stderr)
	var l api.CheckpointList
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &l))
	require.NotEmpty(t, l.Checkpoints, "the checkpoints that fitted are there")
	assert.Empty(t, l.Problems, "and intact")
	last := l.Checkpoints[len(l.Checkpoints)-1].ID
	requireRestoresRest(t, n1, u, dir, "full", last, np, iters)
	c.requireClean(t, st)
}

package agent

// The coordinator's protocols against fake nodes (fakes_test.go): the
// coordinated checkpoint, live migration and automatic recovery. What the
// real nodes do (namespaces, CRIU) is the end-to-end tests' to check; here,
// the order of the operations, what each node is asked, and what is left
// when a node fails, hangs or is gone.

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var twoNodes = map[string]string{"mpiexec": "n1", "r0": "n1", "r1": "n2", "r2": "n2"}

// indexOf is the position of the first call that is s, or -1.
func indexOf(calls []string, s string) int {
	for i, c := range calls {
		if c == s {
			return i
		}
	}
	return -1
}

func TestCheckpointBlocksEveryNodeBeforeAnyDumpAndResumesAfterCommit(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)

	m, err := a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0001", m.ID)
	assert.Equal(t, "ckpt-0001", latest(t, a, "job1"), "the checkpoint is committed and verifies")
	require.Len(t, m.Pods, 4)
	for _, p := range m.Pods {
		assert.Equal(t, twoNodes[p.Name[len("job1-"):]], p.Node, "the manifest says where pod %s ran", p.Name)
	}

	calls := fc.log()
	// Every node holds what its pods send before any holds what reaches
	// them: segments in flight arrive instead of waiting for a timer.
	lastOutput := max(indexOf(calls, "n1 block job1-mpiexec,job1-r0 +output"), indexOf(calls, "n2 block job1-r1,job1-r2 +output"))
	firstInput := min(indexOf(calls, "n1 block job1-mpiexec,job1-r0"), indexOf(calls, "n2 block job1-r1,job1-r2"))
	require.GreaterOrEqual(t, lastOutput, 0, "both nodes held their pods' output: %v", calls)
	assert.Less(t, lastOutput, firstInput, "no node holds its pods' input before every node holds their output: %v", calls)
	lastBlock := max(indexOf(calls, "n1 block job1-mpiexec,job1-r0"), indexOf(calls, "n2 block job1-r1,job1-r2"))
	firstDump := min(indexOf(calls, "n1 dump job1-mpiexec,job1-r0"), indexOf(calls, "n2 dump job1-r1,job1-r2"))
	require.GreaterOrEqual(t, lastBlock, 0, "both nodes blocked: %v", calls)
	require.GreaterOrEqual(t, firstDump, 0, "both nodes dumped: %v", calls)
	assert.Less(t, lastBlock, firstDump, "no pod is dumped before every node holds its traffic: %v", calls)
	for _, n := range []string{"n1", "n2"} {
		assert.Equal(t, []api.NodeOp{api.OpBlock, api.OpBlock, api.OpDump, api.OpResume, api.OpResume}, fc.opsOn(n), "node %s", n)
	}
	// Every node lets its pods' input through before any lets their
	// output go: a pod released early does not send into a held peer.
	lastInput := max(indexOf(calls, "n1 resume job1-mpiexec,job1-r0 +input"), indexOf(calls, "n2 resume job1-r1,job1-r2 +input"))
	firstOutput := min(indexOf(calls, "n1 resume job1-mpiexec,job1-r0"), indexOf(calls, "n2 resume job1-r1,job1-r2"))
	require.GreaterOrEqual(t, lastInput, 0, "both nodes released their pods' input: %v", calls)
	assert.Less(t, lastInput, firstOutput, "no node releases its pods' output before every node released their input: %v", calls)
	for _, c := range fc.callsOf(api.OpResume) {
		assert.False(t, c.Continue, "a dump that kept the pods running is not followed by SIGCONT (it would break the next dump)")
	}
	assert.Empty(t, leftovers(t, a, "job1"))
	assert.Equal(t, api.StateRunning, j.state())
}

func TestCheckpointStopEndsTheRunAfterTheCommit(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)

	m, err := a.checkpointLocked(context.Background(), j, true)
	require.NoError(t, err)
	assert.True(t, m.Stopped)
	assert.Equal(t, api.StateStopped, j.state())
	for _, n := range []string{"n1", "n2"} {
		assert.Equal(t, []api.NodeOp{api.OpBlock, api.OpBlock, api.OpDump, api.OpDestroy}, fc.opsOn(n), "node %s", n)
		assert.Empty(t, fc.node(n).held(), "node %s holds no pod of the stopped job", n)
	}
}

func TestCheckpointFailedDumpOnOneNodeResumesEveryNodeAndKeepsThePreviousCheckpoint(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	_, err := a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err)

	fc.set(func() {
		fc.node("n2").fail[api.OpDump] = errors.New("criu dump failed: Error (criu/sk-inet.c): cannot dump socket")
	})
	_, err = a.checkpointLocked(context.Background(), j, false)
	require.Error(t, err)
	assert.ErrorContains(t, err, "node n2", "the error names the node")
	assert.ErrorContains(t, err, "cannot dump socket", "and quotes why")

	assert.Equal(t, "ckpt-0001", latest(t, a, "job1"), "the previous checkpoint stays the latest")
	assert.Empty(t, leftovers(t, a, "job1"), "nothing of the failed checkpoint is left")
	resumed := map[string]bool{}
	for _, c := range fc.callsOf(api.OpResume) {
		if c.Continue {
			resumed[c.Node] = true
		}
	}
	assert.Equal(t, map[string]bool{"n1": true, "n2": true}, resumed, "every node lets its pods go on, with SIGCONT for pods a dump left stopped")
	assert.Equal(t, api.StateRunning, j.state(), "the job runs on")
	assert.Equal(t, []string{"job1-mpiexec", "job1-r0"}, fc.node("n1").held())
	assert.Equal(t, []string{"job1-r1", "job1-r2"}, fc.node("n2").held())
}

// TestCheckpointResumesBeforeTheCommit: traffic flows again as soon as
// every pod is dumped (the job is not held while the images are hashed,
// synced and signed); a commit that fails after that leaves the job running,
// the previous checkpoint the latest, nothing behind, and resumes nobody
// twice.
func TestCheckpointResumesBeforeTheCommit(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	m, err := a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err)
	assert.Contains(t, m.Phases, "held", "how long the job was held")
	assert.Equal(t, m.Phases["block"]+m.Phases["dump"]+m.Phases["resume"], m.Phases["held"], "held: block, dump and resume, not the commit")

	// The store loses a pod's images between the dump and the commit.
	fc.set(func() {
		fc.node("n2").onResume = func() {
			fc.mu.Lock()
			dir := fc.node("n2").dumpDir["job1-r1"]
			fc.mu.Unlock()
			require.NoError(t, os.RemoveAll(dir))
		}
	})
	before := len(fc.callsOf(api.OpResume))
	_, err = a.checkpointLocked(context.Background(), j, false)
	require.Error(t, err)
	assert.ErrorContains(t, err, "commit checkpoint")
	assert.Equal(t, "ckpt-0001", latest(t, a, "job1"), "the previous checkpoint stays the latest")
	assert.Empty(t, leftovers(t, a, "job1"), "nothing of the failed checkpoint is left")
	assert.Len(t, fc.callsOf(api.OpResume), before+4, "each node resumed once (its input, then its output), before the commit")
	assert.Equal(t, api.StateRunning, j.state(), "the job runs on")
}

func TestCheckpointNodeThatDoesNotAnswerTimesOut(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	fc.set(func() { fc.node("n2").hang[api.OpDump] = true })

	t0 := time.Now()
	_, err := a.checkpointLocked(context.Background(), j, false)
	took := time.Since(t0)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "node n2")
	assert.Less(t, took, a.dumpDeadline()+5*time.Second, "the coordinator waits for a silent node no longer than the dump deadline (%s)", a.dumpDeadline())
	assert.Equal(t, "", latest(t, a, "job1"), "no checkpoint")
	assert.Empty(t, leftovers(t, a, "job1"))
	var resumed []string
	for _, c := range fc.callsOf(api.OpResume) {
		resumed = append(resumed, c.Node)
	}
	assert.ElementsMatch(t, []string{"n1", "n2"}, resumed, "both nodes are told to resume")
	assert.Equal(t, api.StateRunning, j.state())
}

func TestCheckpointCancelledByARecoveryDoesNotWaitForTheNodes(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	fc.set(func() { fc.node("n2").hang[api.OpDump] = true })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)

	_, err := a.checkpointLocked(ctx, j, false)
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, fc.callsOf(api.OpResume), "the recovery that cancelled it removes the run itself")
	assert.Empty(t, leftovers(t, a, "job1"))
}

func TestMigrationMovesThePodAndReleasesItOnlyOnTheTarget(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2", "n3")
	j := addJob(t, a, fc, "job1", twoNodes)

	m, err := a.migrateLocked(context.Background(), j, "job1-r1", "n3")
	require.NoError(t, err)
	assert.Equal(t, "n2", m.From)
	assert.Equal(t, "n3", m.To)
	assert.Equal(t, []api.NodeOp{api.OpBlock, api.OpDump, api.OpDestroy}, fc.opsOn("n2"))
	assert.Equal(t, []api.NodeOp{api.OpRestore, api.OpRelease}, fc.opsOn("n3"))
	calls := fc.log()
	assert.Less(t, indexOf(calls, "n3 restore job1-r1"), indexOf(calls, "n2 destroy job1-r1"), "the old pod goes only once the new one is restored: %v", calls)
	assert.Less(t, indexOf(calls, "n2 destroy job1-r1"), indexOf(calls, "n3 release job1-r1"), "and two pods of one address never both talk: %v", calls)
	assert.Equal(t, []string{"job1-r2"}, fc.node("n2").held())
	assert.Equal(t, []string{"job1-r1"}, fc.node("n3").held())
	assert.Equal(t, []string{"job1-r1"}, j.byNode()["n3"], "the job's record has the pod on its new node")
	assert.Empty(t, leftovers(t, a, "job1"), "the transfer directory is gone")
}

func TestMigrationFailedRestoreLeavesThePodRunningWhereItWas(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2", "n3")
	j := addJob(t, a, fc, "job1", twoNodes)
	fc.set(func() { fc.node("n3").fail[api.OpRestore] = errors.New("criu restore failed") })

	_, err := a.migrateLocked(context.Background(), j, "job1-r1", "n3")
	require.Error(t, err)
	assert.ErrorContains(t, err, "restore on node n3")
	resumes := fc.callsOf(api.OpResume)
	require.Len(t, resumes, 1)
	assert.Equal(t, "n2 resume job1-r1 +cont", resumes[0].String(), "the pod goes on on its node, with SIGCONT (the dump left it stopped)")
	assert.NotContains(t, fc.opsOn("n2"), api.OpDestroy, "the source pod is never removed")
	assert.Equal(t, []string{"job1-r1"}, j.byNode()["n2"][:1], "the record still has the pod on n2")
	assert.Empty(t, fc.node("n3").held())
	assert.Empty(t, leftovers(t, a, "job1"), "the transfer directory is gone")
}

func TestRecoveryRollsBackOntoTheSpareWhenANodeFails(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2", "n3")
	j := addJob(t, a, fc, "job1", twoNodes)
	j.rec.Spares = []string{"n3"}
	_, err := a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err)

	// n2 dies: its agent and pods are gone.
	fc.set(func() {
		fc.node("n2").down = true
		fc.node("n2").pods = map[string]bool{}
	})
	a.recoverJob(j, j.gen, "node n2 has not answered for 5s", "n2", true)

	assert.Equal(t, api.StateRunning, j.state(), "the job runs again")
	assert.Equal(t, []string{"job1-mpiexec", "job1-r0"}, fc.node("n1").held(), "n1's pods are restored where they were")
	assert.Equal(t, []string{"job1-r1", "job1-r2"}, fc.node("n3").held(), "n2's pods go to the spare")
	assert.Empty(t, j.rec.Spares, "the spare is used up")
	for _, c := range fc.callsOf(api.OpRestore) {
		assert.NotEqual(t, "n2", c.Node, "nothing is restored on the failed node")
	}
	n1 := fc.opsOn("n1")
	assert.Equal(t, api.OpDestroy, n1[len(n1)-3], "the failed run's pods on n1 go first: %v", n1)
	assert.Equal(t, []api.NodeOp{api.OpRestore, api.OpRelease}, n1[len(n1)-2:], "then they are restored and released: %v", n1)

	evs, err := a.Events(rootCaller, "job1")
	require.NoError(t, err)
	var got []api.EventKind
	for _, e := range evs.Events {
		got = append(got, e.Kind)
	}
	assert.Equal(t, []api.EventKind{api.EventFailure, api.EventRestarting, api.EventRecovered}, got)
	assert.Contains(t, evs.Events[2].Message, "moved n2 -> n3")
	j.stopSupervisor()
	j.mu.Lock()
	j.gen++ // end the restored run's watchers
	j.mu.Unlock()
}

func TestRecoveryGivesUpWithoutACheckpoint(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	fc.set(func() { fc.node("n2").down = true })
	a.recoverJob(j, j.gen, "node n2 has not answered for 5s", "n2", true)
	assert.Equal(t, api.StateFailed, j.state())
	assert.Contains(t, j.rec.Message, "no complete checkpoint to roll back to")
	assert.Empty(t, fc.callsOf(api.OpRestore))
}

// TestCheckpointWaitsForOneUnderWay: a checkpoint asked with a wait (the
// time-limit warning's) that meets a periodic one under way waits for it and
// then takes its own; without a wait it fails at once, saying why.
func TestCheckpointWaitsForOneUnderWay(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	owner := caller{UID: j.rec.UID, GID: j.rec.GID, User: "tester"}
	j.op.Lock() // a periodic checkpoint under way
	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		close(released)
		j.op.Unlock()
	}()
	_, err := a.Checkpoint(context.Background(), owner, "job1", false, 0)
	require.ErrorIs(t, err, api.ErrConflict)
	require.ErrorContains(t, err, "busy with another operation")

	m, err := a.Checkpoint(context.Background(), owner, "job1", true, 10*time.Second)
	require.NoError(t, err, "the time-limit checkpoint waits for the one under way")
	select {
	case <-released:
	default:
		t.Fatal("the checkpoint did not wait for the one under way")
	}
	assert.True(t, m.Stopped)
	assert.Equal(t, api.StateStopped, j.state())
}

// TestRecoveryOfASlurmStepStaysOnItsNodes: when a node of a Slurm step
// fails, its pods go to the step's other nodes, never to a node outside
// the step (n3 here, healthy and emptier): Slurm gave the job only the
// step's nodes. With none of them left, the job fails saying so.
func TestRecoveryOfASlurmStepStaysOnItsNodes(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2", "n3")
	j := addJob(t, a, fc, "slurm-7-0", twoNodes)
	j.rec.Request.Slurm = &api.SlurmStep{JobID: 7, RankNodes: []string{"n1", "n2", "n2"}}
	_, err := a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err)
	fc.set(func() {
		fc.node("n2").down = true
		fc.node("n2").pods = map[string]bool{}
	})
	a.recoverJob(j, j.gen, "node n2 has not answered for 5s", "n2", true)

	assert.Equal(t, api.StateRunning, j.state(), "the job runs again")
	assert.Equal(t, []string{"slurm-7-0-mpiexec", "slurm-7-0-r0", "slurm-7-0-r1", "slurm-7-0-r2"}, fc.node("n1").held(), "every pod on the step's remaining node")
	assert.Empty(t, fc.node("n3").held(), "nothing on a node outside the step")
	j.stopSupervisor()
	j.mu.Lock()
	j.gen++ // end the restored run's watchers
	j.mu.Unlock()

	pods := []api.PodSpec{{Name: "x-r0", Node: "n2", Role: api.RoleRank}}
	j.rec.Request.Slurm.RankNodes = []string{"n2"}
	_, err = a.replace(j, pods, map[string]bool{"n1": true, "n3": true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no node of the Slurm step (n2) is left healthy to restore pod x-r0 on")
}

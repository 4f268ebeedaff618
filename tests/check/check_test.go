package check

import (
	"os"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/require"
)

func TestAllreduceOutput(t *testing.T) {
	// 2 ranks: sum_i = (1+2)*i*i, acc the running total.
	require.Equal(t, []string{
		"start ranks 2",
		"iter 1 sum 3 acc 3",
		"iter 2 sum 12 acc 15",
		"result 15 ranks 2 iters 2",
	}, AllreduceOutput(2, 2))
}

func TestProgramOutput(t *testing.T) {
	in := []string{"iter 1", "", "===================================================================================",
		"=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES", "=   PID 42 RUNNING AT node2",
		"YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)",
		"This typically refers to a problem with your application.",
		"Please see the FAQ page for debugging suggestions", "iter 2", "cruz: not a banner"}
	out, banners := ProgramOutput(in)
	require.Equal(t, []string{"iter 1", "iter 2", "cruz: not a banner"}, out)
	require.Equal(t, 1, banners)
}

func TestSameLines(t *testing.T) {
	require.Nil(t, SameLines([]string{"a", "b"}, []string{"a", "b"}))
	require.Equal(t, []string{`line 2 is "x", expected "b" (2 lines, expected 2)`}, SameLines([]string{"a", "b"}, []string{"a", "x"}))
	require.Equal(t, []string{`1 lines, expected 2: the first missing is "b"`}, SameLines([]string{"a", "b"}, []string{"a"}))
}

func TestRecoveryStory(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	ev := func(s int, k api.EventKind, ck, node string) api.Event {
		return api.Event{Time: t0.Add(time.Duration(s) * time.Second), Kind: k, Checkpoint: ck, Node: node}
	}
	good := []api.Event{ev(0, api.EventStarted, "", ""), ev(3, api.EventCheckpoint, "ckpt-1", ""),
		ev(6, api.EventCheckpoint, "ckpt-2", ""), ev(8, api.EventFailure, "", "node2"),
		ev(9, api.EventRestarting, "", ""), ev(10, api.EventOutput, "", ""),
		ev(11, api.EventRecovered, "ckpt-2", ""), ev(20, api.EventExited, "", "")}
	require.Empty(t, RecoveryStory(good, "node2", t0.Add(7*time.Second)))

	older := append([]api.Event(nil), good...)
	older[6].Checkpoint = "ckpt-1"
	require.Equal(t, []string{`recovered from "ckpt-1", not from the last checkpoint before the failure ("ckpt-2")`},
		RecoveryStory(older, "node2", t0.Add(7*time.Second)))
	require.Equal(t, []string{`the failure is blamed on "node2", not node3`}, RecoveryStory(good, "node3", t0.Add(7*time.Second)))
	require.Equal(t, []string{"the failure event came before node2 failed"}, RecoveryStory(good, "node2", t0.Add(9*time.Second)))
	require.Contains(t, RecoveryStory(good[:7], "node2", t0), "the last event is not exited: [started checkpoint checkpoint failure restarting output recovered]")
}

func TestSpreadAndRecovered(t *testing.T) {
	seen := map[string]PodSeen{"j-mpiexec": {Node: "node1"}, "j-r0": {Node: "node1"}, "j-r1": {Node: "node2"}}
	job := api.Job{Spares: []string{"node3"}, Policy: "checkpoint every 3s"}
	require.Empty(t, Spread(job, seen, 3, 1))
	require.Equal(t, []string{"ranks on [node1 node2] (expected all of [node1 node2 node3]), mpiexec on [node1] (expected node1)",
		"the job's spares are [node3], expected []"}, Spread(job, seen, 3, 0))

	after := map[string]PodSeen{"j-mpiexec": {Node: "node1"}, "j-r0": {Node: "node1"}, "j-r1": {Node: "node3"}}
	require.Empty(t, Recovered(seen, after, api.Job{Restarts: 1}, "node2", "node3"))
	require.Equal(t, []string{`j-r1 runs on "node3", expected node2 (it was on node2)`, "cruz status says restarts 0, expected 1"},
		Recovered(seen, after, api.Job{}, "node1x", "node3"))
}

func TestStillRunning(t *testing.T) {
	start, err := StartTime(os.Getpid())
	require.NoError(t, err)
	require.True(t, StillRunning(PodSeen{PID: os.Getpid(), Start: start}))
	require.False(t, StillRunning(PodSeen{PID: os.Getpid(), Start: start + 1}), "another process with the same PID")
}

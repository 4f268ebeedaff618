package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startHogs starts n CPU hogs (busy shell loops) beside the test's jobs,
// each bounded by timeout(1) to limit, and kills them when the test ends,
// whatever its outcome.
func startHogs(t *testing.T, n int, limit time.Duration) {
	t.Helper()
	for i := 0; i < n; i++ {
		cmd := exec.Command("timeout", fmt.Sprint(int(limit.Seconds())), "sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		})
	}
}

// heldRE reads how long a periodic checkpoint held the job from its event.
var heldRE = regexp.MustCompile(`traffic held (\d+) ms`)

// TestMPIUnderLoad (issue 12.8): a 4-rank MPICH job of about 60 s (600
// iterations of 100 ms) checkpointed with --interval 1s while two CPU hogs
// share the node's cores. It ends with the uninterrupted run's output after
// at least 3 periodic checkpoints; its event log says that
// policy.max_overhead stretched the interval, and the holds stayed within
// the cap: all of them together at most max_overhead (10 %) of the job's
// time plus the last one (the cap is judged before each checkpoint, so the
// last hold comes on top).
func TestMPIUnderLoad(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters = 4, 600
	startHogs(t, 2, 3*time.Minute)

	t0 := time.Now()
	run := a.startCruz(u, dir, "run", "--name", "load", "--np", fmt.Sprint(np), "--interval", "1s",
		"--", testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), "100")
	res := run.wait(t, 3*time.Minute)
	wall := time.Since(t0)
	require.Equal(t, 0, res.Code, "stderr:\n%s", res.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), check.Lines(res.Stdout), "the output is the uninterrupted run's")

	evs := a.events(u, "load")
	var held []time.Duration
	var total, last time.Duration
	stretched := 0
	for _, e := range evs {
		switch e.Kind {
		case api.EventCheckpoint:
			m := heldRE.FindStringSubmatch(e.Message)
			require.NotNil(t, m, "a periodic checkpoint's event says how long it held the job: %q", e.Message)
			ms, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			last = time.Duration(ms) * time.Millisecond
			held = append(held, last)
			total += last
		case api.EventStretched:
			stretched++
			t.Logf("stretched: %s", e.Message)
		}
	}
	t.Logf("wall %s, %d checkpoints holding the job %v (%s in all, %.1f %% of the wall time), %d stretched events",
		wall.Round(100*time.Millisecond), len(held), held, total, 100*total.Seconds()/wall.Seconds(), stretched)
	require.GreaterOrEqual(t, len(held), 3, "at least 3 periodic checkpoints; events: %v", kinds(evs))
	assert.GreaterOrEqual(t, stretched, 1, "the event log says the interval was stretched; events: %v", kinds(evs))
	assert.LessOrEqual(t, total, wall/10+last, "the holds stay within policy.max_overhead (10 %%) of the job's time, plus the last hold")
	a.requireNoLeaks()
}

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stamps parses the "stamp <i> <unix ns>" lines mpi_allreduce prints on
// stderr with MPI_ALLREDUCE_STAMPS set, in order.
func stamps(t *testing.T, stderr string) []time.Time {
	t.Helper()
	var out []time.Time
	for _, line := range strings.Split(stderr, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "stamp" {
			continue
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		require.NoError(t, err, "stamp line %q", line)
		out = append(out, time.Unix(0, ns))
	}
	return out
}

// resumeGap is how long after a checkpoint's resume phase ended the job
// completed its next allreduce (negative: it did before the phase ended,
// once the first pods had their traffic back), and how long the checkpoint
// held the job (block, dump and resume; the commit follows while the job
// runs).
func resumeGap(ck api.Checkpoint, st []time.Time) (gap, held time.Duration, ok bool) {
	ms := func(k string) time.Duration { return time.Duration(ck.Phases[k]) * time.Millisecond }
	resumeStart := ck.Created.Add(ms("block") + ms("dump"))
	i := sort.Search(len(st), func(i int) bool { return st[i].After(resumeStart) })
	if i == len(st) {
		return 0, 0, false
	}
	return st[i].Sub(resumeStart.Add(ms("resume"))), ms("block") + ms("dump") + ms("resume"), true
}

// TestTrafficFlowsRightAfterCheckpoint: after each checkpoint that lets a
// 4-rank MPICH job run on, the job's next message gets through within 50 ms
// of the release (the median; none waits for a TCP timer): every pod's
// output is held before any pod's input, what the pods sent into the hold is
// pushed at once on release, and the pods' retransmission backoff is
// bounded, instead of the ranks waiting for timers that backed off during
// the hold. The resume phase itself costs tens of milliseconds (netlink, no
// process per pod). The node's own noise is logged for scale.
func TestTrafficFlowsRightAfterCheckpoint(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters, rounds = 4, 1500, 5
	run := a.startCruzEnv(u, dir, []string{"MPI_ALLREDUCE_STAMPS=1"}, "run", "--name", "gap", "--np", fmt.Sprint(np),
		"--", testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), "5")
	run.waitOutput(t, "iter 3 ", 60*time.Second)
	var cks []api.Checkpoint
	for i := 0; i < rounds; i++ {
		time.Sleep(300 * time.Millisecond)
		cks = append(cks, checkpointJSON(t, a, u, "gap", false))
	}
	// Between checkpoints nothing of the filter is left in the pods, and
	// every pod's TCP backoff is bounded.
	for _, p := range a.status(u, "gap").Pods {
		out, err := exec.Command("nsenter", "--net=/proc/"+fmt.Sprint(p.PID)+"/ns/net", "nft", "list", "tables").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.NotContains(t, string(out), "cruz_block", "pod %s is released", p.Name)
		rto, err := exec.Command("nsenter", "--net=/proc/"+fmt.Sprint(p.PID)+"/ns/net", "cat", "/proc/sys/net/ipv4/tcp_rto_max_ms").CombinedOutput()
		require.NoError(t, err, "%s", rto)
		assert.Equal(t, "1000", strings.TrimSpace(string(rto)), "pod %s bounds its TCP retransmission timeout", p.Name)
		t.Logf("pod %s: TCP counters %v", p.Name, tcpCounters(t, p.PID))
	}
	res := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, res.Code, "stderr:\n%s", tail(res.Stderr, 20))
	require.Equal(t, check.AllreduceOutput(np, iters), check.Lines(res.Stdout), "the job's output is an uninterrupted run's")
	st := stamps(t, res.Stderr)
	require.Equal(t, iters, len(st), "one stamp per iteration: the job ran once, without a rollback; its stderr without stamps:\n%s",
		tail(withoutStamps(res.Stderr), 20))
	// For scale: how long the job's iterations take when nothing holds it
	// (5 ms of sleep plus the allreduce, longer when the node is busy).
	var steps []time.Duration
	for i := 1; i < len(st); i++ {
		steps = append(steps, st[i].Sub(st[i-1]))
	}
	sort.Slice(steps, func(i, k int) bool { return steps[i] < steps[k] })
	t.Logf("iterations without a checkpoint: median %s, 99th percentile %s",
		steps[len(steps)/2].Round(100*time.Microsecond), steps[len(steps)*99/100].Round(100*time.Microsecond))
	var gaps []time.Duration
	for _, ck := range cks {
		gap, held, ok := resumeGap(ck, st)
		require.True(t, ok, "checkpoint %s: no allreduce completed after it", ck.ID)
		t.Logf("checkpoint %s: held the job %s (phases %v ms); next allreduce %s after the resume phase ended",
			ck.ID, held, ck.Phases, gap.Round(100*time.Microsecond))
		gaps = append(gaps, gap)
		assert.Less(t, ck.Phases["resume"], int64(250), "checkpoint %s: the resume phase took %d ms", ck.ID, ck.Phases["resume"])
		// 200 ms is the kernel's smallest retransmission timeout: a gap
		// that long means a connection waited for a timer.
		assert.Less(t, gap, 200*time.Millisecond, "checkpoint %s: the job's traffic waited for a TCP timer after the release", ck.ID)
	}
	sort.Slice(gaps, func(i, k int) bool { return gaps[i] < gaps[k] })
	assert.LessOrEqual(t, gaps[len(gaps)/2], 50*time.Millisecond, "the job's next message gets through within 50 ms of the release (median of %d checkpoints: %v)", len(gaps), gaps)
}

// withoutStamps is stderr without mpi_allreduce's stamp lines.
func withoutStamps(stderr string) string {
	var out []string
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if !strings.HasPrefix(l, "stamp ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// tcpCounters reads a few of the TCP counters of pid's netns: how often its
// sockets retransmitted, and why.
func tcpCounters(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range []string{"snmp", "netstat"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		require.NoError(t, err)
		lines := strings.Split(string(b), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			for k := 1; k < len(names) && k < len(values); k++ {
				switch names[k] {
				case "RetransSegs", "TCPTimeouts", "TCPLossProbes", "TCPLostRetransmit", "TCPSpuriousRTOs", "TCPFastRetrans", "TCPWinProbe":
					out[names[k]] = values[k]
				}
			}
		}
	}
	return out
}

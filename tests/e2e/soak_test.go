package e2e

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// agentFootprint is what leaks would grow in an agent: its resident memory
// and its open descriptors.
type agentFootprint struct{ rssKiB, fds int }

func footprint(t *testing.T, pid int) agentFootprint {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	var f agentFootprint
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f.rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	f.fds = len(fds)
	return f
}

// TestSoak (make soak; CRUZ_SOAK=1): at least 200 periodic checkpoints of a
// running 4-rank job on 3 nodes (plus a spare), with failures injected
// every 25 checkpoints, in turn: a checkpoint that cannot be taken (a pod
// held by a tracer), a rank killed (rolled back), an agent killed and
// restarted (its pods taken back), a live migration. At the end: the job's
// result and every line right, and nothing leaked: no pod process, netns,
// veth or half-written checkpoint, the agents' memory and descriptors back
// where they were.
func TestSoak(t *testing.T) {
	if os.Getenv("CRUZ_SOAK") == "" {
		t.Skip("SKIP: the soak test runs only with CRUZ_SOAK=1 (make soak): about 10 minutes")
	}
	const np, iters, want = 4, 4000, 200
	c, st, n1, u, dir := clusterSetup(t, 4)
	run := n1.startCruz(u, dir, "run", "--name", "soak", "--np", fmt.Sprint(np), "--interval", "1s", "--keep", "2", "--spares", "1", "--",
		testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", time.Minute)
	n1.awaitEvent(u, "soak", "checkpoint", 5, time.Minute)
	before := map[string]agentFootprint{}
	for _, n := range st.Nodes {
		before[n.Name] = footprint(t, n.PID)
	}

	injected := 0
	deadline := time.Now().Add(20 * time.Minute)
	for {
		evs := n1.events(u, "soak")
		done := countKind(evs, "checkpoint")
		if done >= want || run.exited() {
			break
		}
		require.True(t, time.Now().Before(deadline), "only %d checkpoints in 20 minutes", done)
		if done < (injected+1)*25 {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		injected++
		job := n1.status(u, "soak")
		switch injected % 4 {
		case 1: // a checkpoint that fails: a pod on node2 held by a tracer
			var ip string
			for _, p := range job.Pods {
				if p.Node == "node2" || p.Node == "node4" {
					ip = p.IP
				}
			}
			pid := podPID1(t, ip)
			seized, release := make(chan error), make(chan struct{})
			go func() {
				runtime.LockOSThread() // the tracer thread ends with the goroutine: tracee released
				seized <- unix.PtraceSeize(pid)
				<-release
			}()
			require.NoError(t, <-seized)
			n := countKind(evs, "checkpoint_failed")
			n1.awaitEvent(u, "soak", "checkpoint_failed", n+1, 2*time.Minute)
			close(release)
			t.Logf("injection %d at checkpoint %d: a checkpoint failed", injected, done)
		case 2: // a rank killed: rolled back
			n := countKind(evs, "recovered")
			require.NoError(t, unix.Kill(n1.rankProcess(t, "mpi_allreduce"), unix.SIGKILL))
			n1.awaitEvent(u, "soak", "recovered", n+1, 2*time.Minute)
			t.Logf("injection %d at checkpoint %d: a rank killed and the job rolled back", injected, done)
		case 3: // the agent of node3 killed and restarted: it takes its pods back
			r := c.clusterCmd("restart", "--kill", "node3")
			require.Equal(t, 0, r.Code, r.Stderr)
			t.Logf("injection %d at checkpoint %d: node3's agent killed and restarted", injected, done)
		case 0: // a live migration of rank 1
			to := "node4"
			for _, p := range job.Pods {
				if p.Name == job.ID+"-r1" && p.Node == "node4" {
					to = "node1"
				}
			}
			r := n1.cruz(u, "", "migrate", "--rank", "1", "--to", to, "soak")
			require.Equal(t, 0, r.Code, r.Stderr)
			t.Logf("injection %d at checkpoint %d: %s", injected, done, strings.TrimSpace(r.Stdout))
		}
	}
	evs := n1.events(u, "soak")
	t.Logf("%d checkpoints, %d failed, %d rollbacks, %d injections", countKind(evs, "checkpoint"),
		countKind(evs, "checkpoint_failed"), countKind(evs, "recovered"), injected)
	require.GreaterOrEqual(t, countKind(evs, "checkpoint"), want)
	out := run.wait(t, 30*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), programOutput(t, check.Lines(out.Stdout)))

	st = c.status()
	for _, n := range st.Nodes {
		after := footprint(t, n.PID)
		b, ok := before[n.Name]
		if !ok || b.rssKiB == 0 {
			continue
		}
		t.Logf("%s agent: RSS %d -> %d KiB, descriptors %d -> %d", n.Name, b.rssKiB, after.rssKiB, b.fds, after.fds)
		if n.Name == "node3" {
			continue // restarted during the soak: its figures start over
		}
		assert.Less(t, after.rssKiB, b.rssKiB+32*1024, "%s's agent memory grew by more than 32 MiB", n.Name)
		assert.LessOrEqual(t, after.fds, b.fds+8, "%s's agent holds more descriptors", n.Name)
	}
	c.requireClean(t, st)
	jobs, _ := os.ReadDir(c.store)
	for _, j := range jobs {
		cks, _ := os.ReadDir(c.store + "/" + j.Name())
		var names []string
		for _, ck := range cks {
			if strings.HasPrefix(ck.Name(), "ckpt-") {
				names = append(names, ck.Name())
			}
		}
		assert.LessOrEqual(t, len(names), 2, "retention kept at most 2 checkpoints: %v", names)
	}
}

// exited tells whether the command has ended.
func (c *cruzCmd) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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

// podsByNode counts a job's rank pods per node, and says where its main pod is.
func podsByNode(j api.Job) (ranks map[string]int, main string) {
	ranks = map[string]int{}
	for _, p := range j.Pods {
		if p.Role == "rank" {
			ranks[p.Node]++
		} else {
			main = p.Node
		}
	}
	return ranks, main
}

// inNodeNetns runs a command in a node's network namespace.
func inNodeNetns(t *testing.T, n cluster.Node, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=/proc/" + fmt.Sprint(n.PID) + "/ns/net"}, args...)...).CombinedOutput()
	require.NoError(t, err, "%v in %s: %s", args, n.Name, out)
	return string(out)
}

// requireClusterClean checks every node: no pod set left in its run
// directory, no veth on its pod bridge, no pod process of the cluster's
// jobs, no half-written checkpoint or transfer in the store.
func (c *vcluster) requireClean(t *testing.T, st cluster.State) {
	t.Helper()
	for _, n := range st.Nodes {
		sets, _ := os.ReadDir(filepath.Join(n.RunDir, "sets"))
		assert.Empty(t, sets, "pod sets left on %s", n.Name)
		for _, line := range strings.Split(inNodeNetns(t, n, "ip", "-o", "link", "show", "master", "cruz0"), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "cz") {
				t.Errorf("veth left on %s's pod bridge: %s", n.Name, line)
			}
		}
		var nodeNet unix.Stat_t
		require.NoError(t, unix.Stat(fmt.Sprintf("/proc/%d/ns/net", n.PID), &nodeNet))
		for _, pid := range podProcesses(nodeNet.Ino, "CRUZ_SOCKET="+n.Socket) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("pod process %d (%s) of a job of %s is still running", pid, strings.ReplaceAll(string(cmdline), "\x00", " "), n.Name)
		}
	}
	jobs, _ := os.ReadDir(c.store)
	for _, j := range jobs {
		entries, _ := os.ReadDir(filepath.Join(c.store, j.Name()))
		for _, e := range entries {
			assert.False(t, strings.HasPrefix(e.Name(), ".tmp-"), "half-written checkpoint or transfer %s/%s left", j.Name(), e.Name())
		}
	}
}

// fdbPort returns the LAN bridge port that the LAN has learnt mac behind.
func fdbPort(t *testing.T, lan, mac string) string {
	t.Helper()
	out, err := exec.Command("bridge", "fdb", "show", "br", lan).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == mac && f[1] == "dev" {
			return f[2]
		}
	}
	return ""
}

// TestClusterMultiNodeJob: a real MPICH job of 8 ranks on a virtual cluster
// of 4 nodes (2 rank pods per node). Coordinated checkpoints while it runs;
// one rank migrated twice, live; a node drained; stopped at a checkpoint and
// restarted on 2 other nodes (4 ranks each), stopped again and restarted on
// a different spread of 3 nodes. Every pod keeps its address and MAC, the
// LAN learns the pods' new places at once, the three runs' output is the
// output of one uninterrupted run, line by line, and nothing is left behind.
func TestClusterMultiNodeJob(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 4)
	const np, iters = 8, 150

	run := n1.startAllreduce(u, dir, "wide", np, iters)
	first := n1.status(u, "wide")
	ranks, main := podsByNode(first)
	assert.Equal(t, map[string]int{"node1": 2, "node2": 2, "node3": 2, "node4": 2}, ranks, "8 ranks spread over 4 nodes")
	assert.Equal(t, "node1", main, "mpiexec runs on the coordinator's node")
	ips := map[string]string{}
	macs := map[string]string{}
	for _, p := range first.Pods {
		ips[p.Name], macs[p.Name] = p.IP, p.MAC
	}

	t.Run("checkpoints while running", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			r := n1.cruz(u, "", "checkpoint", "--json", "wide")
			require.Equal(t, 0, r.Code, "cruz checkpoint: %s", r.Stderr)
			var ck api.Checkpoint
			require.NoError(t, json.Unmarshal([]byte(r.Stdout), &ck))
			require.Len(t, ck.Pods, np+1, "every pod of every node is in the checkpoint")
			var slowest int64
			for _, p := range ck.Pods {
				assert.Positive(t, p.Bytes, "pod %s has images", p.Name)
				slowest = max(slowest, p.DumpMS)
			}
			for _, phase := range []string{"block", "dump", "commit", "resume"} {
				assert.Contains(t, ck.Phases, phase)
			}
			t.Logf("%s: %d bytes, phases %v, slowest pod dump %d ms", ck.ID, ck.Bytes, ck.Phases, slowest)
		}
	})

	rank3 := first.ID + "-r3"
	t.Run("migrate a rank twice", func(t *testing.T) {
		for _, to := range []string{"node1", "node4"} {
			r := n1.cruz(u, "", "migrate", "--json", "--rank", "3", "--to", to, "wide")
			require.Equal(t, 0, r.Code, "cruz migrate to %s: %s", to, r.Stderr)
			var m api.Migration
			require.NoError(t, json.Unmarshal([]byte(r.Stdout), &m))
			assert.Equal(t, rank3, m.Pod)
			assert.Equal(t, to, m.To)
			assert.Positive(t, m.DowntimeMS)
			t.Logf("rank 3 %s -> %s: downtime %d ms (dump %d, restore %d), %d bytes", m.From, m.To, m.DowntimeMS, m.DumpMS, m.RestoreMS, m.Bytes)
			j := n1.status(u, "wide")
			for _, p := range j.Pods {
				if p.Name == rank3 {
					assert.Equal(t, to, p.Node)
					assert.Equal(t, ips[p.Name], p.IP)
					assert.Equal(t, macs[p.Name], p.MAC)
				}
			}
			n, err := st.Node(to)
			require.NoError(t, err)
			assert.Equal(t, n.Veth, fdbPort(t, c.lan, macs[rank3]), "the LAN knows rank 3's MAC behind %s at once", to)
		}
		same := n1.cruz(u, "", "migrate", "--rank", "3", "--to", "node4", "wide")
		assert.NotEqual(t, 0, same.Code)
		assert.Contains(t, same.Stderr, "already on node node4")
	})

	t.Run("drain a node", func(t *testing.T) {
		denied := n1.cruz(u, "", "drain", "node2")
		assert.NotEqual(t, 0, denied.Code)
		assert.Contains(t, denied.Stderr, "only root")
		r := runCommand(t, exec.Command(testenv.Bin(t, "cruz"), "--socket", n1.socket, "drain", "node2"), 2*time.Minute)
		require.Equal(t, 0, r.Code, "cruz drain node2: %s", r.Stderr)
		assert.Contains(t, r.Stdout, "node node2 is drained")
		ranks, _ := podsByNode(n1.status(u, "wide"))
		assert.Zero(t, ranks["node2"], "no pod left on node2")
	})

	n1.checkpoint(u, "wide", "--stop")
	r1 := run.wait(t, time.Minute)
	require.Equal(t, 75, r1.Code, "stderr:\n%s", r1.Stderr)

	t.Run("restart on 2 other nodes", func(t *testing.T) {
		again := n1.startCruz(u, dir, "restart", "--nodes", "node3,node4", "wide")
		again.waitOutput(t, "iter ", time.Minute)
		j := n1.status(u, "wide")
		ranks, main := podsByNode(j)
		assert.Equal(t, map[string]int{"node3": 4, "node4": 4}, ranks)
		assert.Equal(t, "node3", main)
		for _, p := range j.Pods {
			assert.Equal(t, ips[p.Name], p.IP, "pod %s keeps its address", p.Name)
			assert.Equal(t, macs[p.Name], p.MAC, "pod %s keeps its MAC", p.Name)
			n, err := st.Node(p.Node)
			require.NoError(t, err)
			assert.Equal(t, n.Veth, fdbPort(t, c.lan, p.MAC), "the LAN was told that %s is on %s", p.Name, p.Node)
		}
		n1.checkpoint(u, "wide", "--stop")
		r2 := again.wait(t, time.Minute)
		require.Equal(t, 75, r2.Code, "stderr:\n%s", r2.Stderr)

		last := n1.cruz(u, dir, "restart", "--nodes", "node2,node1,node4", "wide")
		require.Equal(t, 0, last.Code, "last restart: %s", last.Stderr)
		got := append(append(check.Lines(r1.Stdout), check.Lines(r2.Stdout)...), check.Lines(last.Stdout)...)
		require.Equal(t, check.AllreduceOutput(np, iters), got, "three runs on different nodes print what one run prints")
	})
	c.requireClean(t, st)
}

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
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestClusterFail: `cruz cluster fail node2` kills node2 the way a power cut
// does: its link goes, its agent, its holder and its pods' processes die,
// its network namespace with them; the cluster marks it failed, refuses to
// fail or restart it again, the other nodes live on, and `cruz cluster
// down` still removes everything.
func TestClusterFail(t *testing.T) {
	c := upCluster(t, 3)
	st := c.status()
	require.Len(t, st.Nodes, 3)
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	hostNet := struct{ Ino uint64 }{testHostNet}

	// An MPI job that node1 coordinates (mpiexec's pod is there) with its
	// rank pods on node2, which node2's agent takes back after a crash:
	// then those pods are no children of node2's agent.
	n1 := c.node(t, st, "node1")
	remote := n1.startCruz(u, dir, "run", "--name", "adopted", "--np", "2", "--nodes", "node2", "--",
		testenv.Bin(t, "mpi_allreduce"), "100000", "100")
	remote.waitOutput(t, "iter 3 ", 60*time.Second)
	rj := n1.status(u, "adopted")
	require.Equal(t, api.StateRunning, rj.State)
	require.Len(t, rj.Pods, 3, "mpiexec's pod and 2 rank pods")
	onNode2 := 0
	for _, p := range rj.Pods {
		if p.Node == "node2" {
			onNode2++
		}
	}
	require.Equal(t, 2, onNode2, "the rank pods run on node2: %+v", rj.Pods)
	r := c.clusterCmd("restart", "--kill", "node2")
	require.Equal(t, 0, r.Code, "cruz cluster restart --kill node2: %s", r.Stderr)
	st = c.status()
	node2, err := st.Node("node2")
	require.NoError(t, err)
	n2 := c.node(t, st, "node2")
	adopted := processesInNetns(0, recordedNetns(t, node2.RunDir))
	require.NotEmpty(t, adopted, "the adopted job's pods outlived node2's agent")
	t.Logf("pod processes node2's new agent took back: %v", adopted)

	// A job that node2 coordinates, its pod a child of node2's new agent.
	run := n2.startCruz(u, dir, "run", "--plain", "--name", "victim", "--", "sleep", "600")
	j := awaitJobState(n2, u, "victim", 30*time.Second, api.StateRunning)
	require.Len(t, j.Pods, 1)
	awaitPodProcesses(t, hostNet.Ino, "CRUZ_SOCKET="+node2.Socket)

	// What node2 is made of, before it fails.
	nodeNet := nsInode(t, node2.HolderPID, "net")
	require.NotEqual(t, hostNet.Ino, nodeNet)
	podNets := recordedNetns(t, node2.RunDir)
	require.Len(t, podNets, 3, "node2's agent records the pods of both jobs")
	pods := processesInNetns(0, podNets)
	victimSeen := false
	for _, p := range pods {
		victimSeen = victimSeen || strings.Contains(p, "(sleep 600)")
	}
	require.True(t, victimSeen, "the victim's pod runs among node2's pod processes %v", pods)
	t.Logf("pod processes on node2: %v", pods)
	require.True(t, linkExists(t, node2.Veth), "node2's LAN veth %s is there", node2.Veth)

	r = c.clusterCmd("fail", "node2")
	require.Equal(t, 0, r.Code, "cruz cluster fail node2; stdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
	t.Logf("cruz cluster fail node2: %s", r.Stdout)
	// The count is of the processes alive when it struck: a job's
	// processes come and go, so it need not equal len(pods) above; that
	// every one of them is gone is checked below.
	assert.Regexp(t, `^node2 failed: link cut, agent and [1-9][0-9]* pod processes killed, node removed\n$`, r.Stdout)

	assert.False(t, cluster.Alive(node2.PID), "node2's agent (pid %d) is dead", node2.PID)
	assert.False(t, cluster.Alive(node2.HolderPID), "node2's holder (pid %d) is dead", node2.HolderPID)
	for _, p := range pods {
		var pid int
		_, err := fmt.Sscan(p, &pid)
		require.NoError(t, err)
		assert.False(t, cluster.Alive(pid), "pod process %s of node2 is dead", p)
	}
	assert.Empty(t, podProcesses(hostNet.Ino, "CRUZ_SOCKET="+node2.Socket), "no pod process of node2's job is left")
	assert.Empty(t, processesInNetns(nodeNet, podNets), "no process is left in node2's network namespace or its pods'")
	assert.False(t, linkExists(t, node2.Veth), "node2's LAN veth %s is gone", node2.Veth)
	assert.True(t, linkExists(t, c.lan), "the LAN bridge stays")

	// The job's cruz run loses its agent.
	res := run.wait(t, 30*time.Second)
	assert.NotEqual(t, 0, res.Code, "cruz run of the job on the failed node fails; stderr:\n%s", res.Stderr)
	// What node1 makes of its job's lost pod is up to it (the policy);
	// cruz rm ends it here.
	rm := n1.cruz(u, "", "rm", "adopted")
	assert.Equal(t, 0, rm.Code, "cruz rm adopted: %s", rm.Stderr)
	res = remote.wait(t, 60*time.Second)
	t.Logf("cruz run of the job coordinated by node1 ended with status %d; stderr:\n%s", res.Code, tail(res.Stderr, 5))

	after := c.status()
	for _, n := range after.Nodes {
		switch n.Name {
		case "node2":
			assert.True(t, n.Failed, "node2 is failed")
			assert.False(t, n.Alive, "node2 is not alive")
			assert.WithinDuration(t, time.Now(), n.FailedAt, 5*time.Minute)
		default:
			assert.False(t, n.Failed, "%s is not failed", n.Name)
			assert.True(t, n.Alive, "%s is alive", n.Name)
			assert.True(t, cluster.Alive(n.PID), "%s's agent runs", n.Name)
			v := c.node(t, after, n.Name).cruz(u, "", "version")
			assert.Equal(t, 0, v.Code, "cruz version on %s: %s", n.Name, v.Stderr)
		}
	}
	r = c.clusterCmd("status")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Regexp(t, `(?m)^node2\s+failed\s`, r.Stdout)
	assert.Regexp(t, `(?m)^node1\s+up\s`, r.Stdout)
	assert.Regexp(t, `(?m)^node3\s+up\s`, r.Stdout)

	r = c.clusterCmd("fail", "node2")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "node2 already failed")
	r = c.clusterCmd("restart", "node2")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "node2 failed")
	assert.Contains(t, r.Stderr, "cruz cluster down")
	r = c.clusterCmd("fail", "node9")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, `no node "node9"; its nodes are node1, node2, node3`)
	r = c.clusterCmd("fail")
	assert.Equal(t, 2, r.Code, "no node: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "usage: cruz cluster fail [--dir DIR] NODE")
	cmd := testenv.RunAs(u, testenv.Bin(t, "cruz"), "cluster", "fail", "--dir", c.dir, "node1")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "cruz cluster fail must run as root")
	assert.True(t, c.status().Nodes[0].Alive, "the refusals left node1 alone")

	// Down removes what is left.
	r = c.clusterCmd("down")
	require.Equal(t, 0, r.Code, "cruz cluster down after a fail: %s", r.Stderr)
	for _, n := range after.Nodes {
		assert.False(t, cluster.Alive(n.PID), "%s's cruzd (pid %d) ended", n.Name, n.PID)
		assert.False(t, cluster.Alive(n.HolderPID), "%s's holder (pid %d) ended", n.Name, n.HolderPID)
		assert.NoDirExists(t, n.RunDir)
		assert.Empty(t, podProcesses(hostNet.Ino, "CRUZ_SOCKET="+n.Socket), "no pod process of %s left", n.Name)
	}
	assert.NoFileExists(t, filepath.Join(c.dir, cluster.StateFile))
	links, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	require.NoError(t, err, string(links))
	for _, line := range check.NonEmptyLines(string(links)) {
		assert.NotContains(t, line, " "+c.lan, "no LAN bridge or veth left")
	}
}

// recordedNetns returns the pods' network namespaces that the agent with
// run directory runDir records in sets/*/set.json.
func recordedNetns(t *testing.T, runDir string) map[uint64]bool {
	t.Helper()
	out := map[uint64]bool{}
	sets, err := filepath.Glob(filepath.Join(runDir, "sets", "*", "set.json"))
	require.NoError(t, err)
	for _, f := range sets {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var rec struct {
			Netns map[string]uint64 `json:"netns"`
		}
		require.NoError(t, json.Unmarshal(b, &rec))
		for _, ino := range rec.Netns {
			out[ino] = true
		}
	}
	return out
}

// awaitPodProcesses waits until a pod process with env runs (a pod's init
// becomes the user and execs the command right after the job is reported
// running) and returns them.
func awaitPodProcesses(t *testing.T, hostNet uint64, env string) []int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if pids := podProcesses(hostNet, env); len(pids) > 0 || time.Now().After(deadline) {
			require.NotEmpty(t, pids, "a pod process with %s runs", env)
			return pids
		}
	}
}

// linkExists tells whether the interface exists in the test's netns.
func linkExists(t *testing.T, name string) bool {
	t.Helper()
	_, err := netlink.LinkByName(name)
	if err == nil {
		return true
	}
	var nf netlink.LinkNotFoundError
	require.ErrorAs(t, err, &nf)
	return false
}

// processesInNetns lists the live processes in network namespace node or
// in one of pods.
func processesInNetns(node uint64, pods map[uint64]bool) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscan(p.Name(), &pid); err != nil {
			continue
		}
		var ns unix.Stat_t
		if unix.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &ns) != nil || (ns.Ino != node && !pods[ns.Ino]) {
			continue
		}
		if cluster.Alive(pid) {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
			out = append(out, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))))
		}
	}
	return out
}

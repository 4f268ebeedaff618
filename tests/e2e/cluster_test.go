package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
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

// vcluster is a virtual cluster made by `cruz cluster up` in a temporary
// directory, with its own LAN bridge name and subnet so that it does not
// collide with a real one.
type vcluster struct {
	t                       *testing.T
	dir, lan, subnet, store string
	path                    string // PATH for cruz cluster, with CRIU's directory first
}

// clusterCmd runs `cruz cluster ARGS --dir DIR` as root.
func (c *vcluster) clusterCmd(args ...string) result {
	c.t.Helper()
	cmd := exec.Command(testenv.Bin(c.t, "cruz"), append(append([]string{"cluster"}, args...), "--dir", c.dir)...)
	cmd.Env = append(os.Environ(), "PATH="+c.path)
	return runCommand(c.t, cmd, 2*time.Minute)
}

func (c *vcluster) status() cluster.State {
	c.t.Helper()
	r := c.clusterCmd("status", "--json")
	require.Equal(c.t, 0, r.Code, "cruz cluster status: %s", r.Stderr)
	var st cluster.State
	require.NoError(c.t, json.Unmarshal([]byte(r.Stdout), &st), "cruz cluster status --json printed: %s", r.Stdout)
	return st
}

// node returns a handle on a node's agent for the e2e helpers (cruz with
// that node's CRUZ_SOCKET).
func (c *vcluster) node(t *testing.T, st cluster.State, name string) *agent {
	t.Helper()
	n, err := st.Node(name)
	require.NoError(t, err)
	return &agent{t: t, socket: n.Socket, runDir: n.RunDir, logPath: n.Log}
}

// upCluster makes a virtual cluster of n nodes, removed when the test ends.
func upCluster(t *testing.T, n int) *vcluster { return upClusterWith(t, n, nil) }

// upClusterWith is upCluster that calls before (to prepare the store, say)
// just before `cruz cluster up`.
func upClusterWith(t *testing.T, n int, before func(c *vcluster)) *vcluster {
	t.Helper()
	testenv.RequireRoot(t)
	criu := testenv.RequireCRIU(t)
	testenv.Bin(t, "cruzd")
	dir, err := os.MkdirTemp("/tmp", "cruz-cl-")
	require.NoError(t, err)
	c := &vcluster{t: t, dir: dir, lan: fmt.Sprintf("czt%d", os.Getpid()%100000),
		subnet: fmt.Sprintf("10.%d.0.0/16", 190+os.Getpid()%20), store: filepath.Join(dir, "store"),
		path: filepath.Dir(criu) + ":" + os.Getenv("PATH")}
	t.Cleanup(func() {
		if t.Failed() {
			for k := 1; k <= n; k++ {
				b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("node%d", k), "cruzd.log"))
				t.Logf("node%d's agent log:\n%s", k, tail(string(b), 60))
			}
		}
		r := c.clusterCmd("down", "--lan", c.lan, "--purge")
		if r.Code != 0 {
			t.Errorf("cruz cluster down at cleanup: %s", r.Stderr)
		}
		_ = os.RemoveAll(dir)
	})
	if before != nil {
		before(c)
	}
	r := c.clusterCmd("up", "--nodes", fmt.Sprint(n), "--lan", c.lan, "--subnet", c.subnet, "--store", c.store)
	require.Equal(t, 0, r.Code, "cruz cluster up; stdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
	return c
}

// clusterSetup makes a cluster of n nodes and returns it, its state, node1's
// agent, the test user cruzt1 and a working directory of theirs.
func clusterSetup(t *testing.T, n int) (*vcluster, cluster.State, *agent, testenv.User, string) {
	t.Helper()
	c := upCluster(t, n)
	st := c.status()
	u := testenv.LookupUser(t, "cruzt1")
	return c, st, c.node(t, st, "node1"), u, testenv.TempDirFor(t, u)
}

func nsInode(t *testing.T, pid int, ns string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), &st))
	return st.Ino
}

// TestCluster: `cruz cluster up` makes 3 virtual nodes (each a cruzd in its
// own network and UTS namespaces); pods on different nodes talk TCP over the
// LAN, also across a stop-checkpoint and restart of one end; `cruz cluster
// down` leaves nothing behind.
func TestCluster(t *testing.T) {
	c := upCluster(t, 3)
	u := testenv.LookupUser(t, "cruzt1")
	udir := testenv.TempDirFor(t, u)
	var st cluster.State

	t.Run("status", func(t *testing.T) {
		st = c.status()
		require.Len(t, st.Nodes, 3)
		assert.Equal(t, c.lan, st.LAN)
		assert.Equal(t, c.subnet, st.Subnet)
		assert.Equal(t, c.store, st.Store)
		uts, nets := map[uint64]string{}, map[uint64]string{}
		self := nsInode(t, os.Getpid(), "uts")
		for k, n := range st.Nodes {
			name := fmt.Sprintf("node%d", k+1)
			assert.Equal(t, name, n.Name)
			assert.True(t, n.Alive, "%s is alive", name)
			assert.True(t, cluster.Alive(n.PID), "%s's cruzd (pid %d) runs", name, n.PID)
			assert.Equal(t, filepath.Join(c.dir, name, "cruzd.sock"), n.Socket)
			ui, ni := nsInode(t, n.PID, "uts"), nsInode(t, n.PID, "net")
			assert.NotEqual(t, self, ui, "%s has its own UTS namespace", name)
			assert.NotContains(t, uts, ui, "%s's UTS namespace is its own", name)
			assert.NotContains(t, nets, ni, "%s's network namespace is its own", name)
			uts[ui], nets[ni] = name, name
			// The node's agent reports its host name as the node's name.
			r := c.node(t, st, name).cruz(u, "", "version")
			require.Equal(t, 0, r.Code, "cruz version on %s: %s", name, r.Stderr)
			assert.Contains(t, r.Stdout, " on "+name+",", "the agent of %s names its node", name)
			// --node picks the node's socket from the cluster file.
			cmd := testenv.RunAs(u, testenv.Bin(t, "cruz"), "--node", name, "version")
			cmd.Env = append(cmd.Env, "CRUZ_CLUSTER_DIR="+c.dir)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "cruz --node %s version: %s", name, out)
			assert.Contains(t, string(out), " on "+name+",")
		}
		r := c.clusterCmd("env")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Equal(t, "export CRUZ_SOCKET="+st.Nodes[0].Socket+"\n", r.Stdout)
	})
	if len(st.Nodes) != 3 {
		t.FailNow()
	}

	t.Run("up refuses", func(t *testing.T) {
		r := c.clusterCmd("up", "--lan", c.lan, "--subnet", c.subnet, "--store", c.store)
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "a cluster of 3 nodes is already up in "+c.dir)
		assert.Contains(t, r.Stderr, "cruz cluster down")
		for _, n := range []string{"0", "201"} {
			r = c.clusterCmd("up", "--nodes", n, "--lan", c.lan+"x")
			assert.Equal(t, 1, r.Code)
			assert.Contains(t, r.Stderr, "--nodes "+n+" is out of range: a cluster has 1 to 200 nodes")
		}
		cmd := testenv.RunAs(u, testenv.Bin(t, "cruz"), "cluster", "up", "--dir", filepath.Join(udir, "cl"))
		out, err := cmd.CombinedOutput()
		require.Error(t, err)
		assert.Contains(t, string(out), "cruz cluster up must run as root")
		assert.Equal(t, 3, len(c.status().Nodes), "the refusals left the cluster alone")
	})
	if len(st.Nodes) != 3 {
		t.FailNow()
	}

	t.Run("tcp across nodes", func(t *testing.T) {
		n2, n3 := c.node(t, st, "node2"), c.node(t, st, "node3")
		p := startClusterTCPPair(t, n2, n3, u, udir, "srv", "cli")
		pool2, err := netip.ParsePrefix(st.Nodes[1].Pool)
		require.NoError(t, err)
		assert.True(t, pool2.Contains(netip.MustParseAddr(p.srvIP)), "the server pod's address %s is from node2's pool %s", p.srvIP, pool2)
		cliIP := n3.status(u, "cli").Pods[0].IP
		assert.True(t, netip.MustParsePrefix(st.Nodes[2].Pool).Contains(netip.MustParseAddr(cliIP)), "the client pod's address %s is from node3's pool", cliIP)
		srv := p.srv.wait(t, 2*time.Minute)
		cli := p.cli.wait(t, 2*time.Minute)
		assert.Equal(t, 0, srv.Code, "server on node2; stderr:\n%s", srv.Stderr)
		assert.Equal(t, 0, cli.Code, "client on node3; stderr:\n%s", cli.Stderr)
		assert.Equal(t, recvLines(), check.NonEmptyLines(srv.Stdout), "the server on node2 received and checked every byte")
		assert.Equal(t, fmt.Sprintf("client ok %d bytes\n", tcpTotal), cli.Stdout)
	})

	t.Run("stop and restart the client", func(t *testing.T) {
		n2, n3 := c.node(t, st, "node2"), c.node(t, st, "node3")
		p := startClusterTCPPair(t, n2, n3, u, udir, "srv2", "cli2")
		stillStreaming(t, p.srv, "the client's stop-checkpoint")
		awaitQueued(t, n3, u, "cli2", false, 1<<20)
		ck := checkpointJSON(t, n3, u, "cli2", true)
		assert.Greater(t, tcpImageBytes(t, ck.Dir), int64(64<<10), "the client's send queue held bytes when it was stopped")
		assert.True(t, strings.HasPrefix(ck.Dir, c.store+"/"), "the checkpoint %s is in the shared store %s", ck.Dir, c.store)
		first := p.cli.wait(t, 30*time.Second)
		require.Equal(t, 75, first.Code, "cruz run of the stopped client exits 75; stderr:\n%s", first.Stderr)
		time.Sleep(500 * time.Millisecond)
		assert.Equal(t, api.StateRunning, n2.status(u, "srv2").State, "the server on node2 runs on while the client is stopped")

		second := n3.startCruz(u, udir, "restart", "cli2").wait(t, 60*time.Second)
		require.Equal(t, 0, second.Code, "restarted client; stdout:\n%s\nstderr:\n%s\nserver so far:\n%s\n%s",
			second.Stdout, second.Stderr, tail(p.srv.stdout.String(), 5), p.srv.stderr.String())
		srv := p.srv.wait(t, 60*time.Second)
		assert.Equal(t, 0, srv.Code, "server; stderr:\n%s", srv.Stderr)
		assert.Equal(t, recvLines(), check.NonEmptyLines(srv.Stdout), "the server received and checked every byte, once")
		cliLines := append(check.NonEmptyLines(first.Stdout), check.NonEmptyLines(second.Stdout)...)
		assert.Equal(t, []string{fmt.Sprintf("client ok %d bytes", tcpTotal)}, cliLines)
		awaitJobState(n3, u, "cli2", 10*time.Second, api.StateExited)
		awaitJobState(n2, u, "srv2", 10*time.Second, api.StateExited)
	})

	t.Run("down", func(t *testing.T) {
		// A job still running on node1 ends with its node.
		n1 := c.node(t, st, "node1")
		run := n1.startCruz(u, udir, "run", "--plain", "--name", "cnt", "--", testenv.Bin(t, "counter"), "100000", "20")
		run.waitOutput(t, "\n", 30*time.Second)
		r := c.clusterCmd("down")
		require.Equal(t, 0, r.Code, "cruz cluster down: %s", r.Stderr)
		for _, n := range st.Nodes {
			assert.False(t, cluster.Alive(n.PID), "%s's cruzd (pid %d) ended", n.Name, n.PID)
			assert.NoDirExists(t, n.RunDir)
		}
		assert.NoFileExists(t, filepath.Join(c.dir, cluster.StateFile))
		assert.DirExists(t, c.store, "down keeps the store")
		out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
		require.NoError(t, err, string(out))
		for _, line := range check.NonEmptyLines(string(out)) {
			assert.NotContains(t, line, " "+c.lan, "no LAN bridge or veth left")
		}
		for _, n := range st.Nodes {
			assert.Empty(t, podProcesses(testHostNet, "CRUZ_SOCKET="+n.Socket), "no pod process of %s left", n.Name)
		}
		res := run.wait(t, 30*time.Second)
		assert.NotEqual(t, 0, res.Code, "the job on node1 ended with its node")
		// Down is idempotent.
		r = c.clusterCmd("down", "--lan", c.lan)
		require.Equal(t, 0, r.Code, "second cruz cluster down: %s", r.Stderr)
		r = c.clusterCmd("status")
		assert.NotEqual(t, 0, r.Code)
		assert.Contains(t, r.Stderr, "no cluster is up")
	})
}

// startClusterTCPPair starts a tcp_stream server job on srvNode and a client
// job on cliNode that streams to it over the LAN, and waits until bytes flow.
func startClusterTCPPair(t *testing.T, srvNode, cliNode *agent, u testenv.User, dir, srvName, cliName string) tcpPair {
	t.Helper()
	app := testenv.Bin(t, "tcp_stream")
	srv := srvNode.startCruz(u, dir, "run", "--plain", "--name", srvName, "--", app, "server",
		fmt.Sprint(tcpPort), fmt.Sprint(tcpTotal), fmt.Sprint(tcpReadDelay))
	sj := awaitJobState(srvNode, u, srvName, 30*time.Second, api.StateRunning)
	require.Len(t, sj.Pods, 1)
	ip := sj.Pods[0].IP
	cli := cliNode.startCruz(u, dir, "run", "--plain", "--name", cliName, "--", app, "client", ip,
		fmt.Sprint(tcpPort), fmt.Sprint(tcpTotal), fmt.Sprint(tcpChunk), fmt.Sprint(tcpSendDelay))
	cj := awaitJobState(cliNode, u, cliName, 30*time.Second, api.StateRunning)
	require.Len(t, cj.Pods, 1)
	require.NotEqual(t, ip, cj.Pods[0].IP)
	t.Logf("server pod %s on one node, client pod %s on another", ip, cj.Pods[0].IP)
	srv.waitOutput(t, "recv 1048576\n", 30*time.Second)
	return tcpPair{srv: srv, cli: cli, srvIP: ip}
}

// TestClusterUpRollsBack: when a node's agent fails at start, cruz cluster
// up fails, says why, and removes everything it made.
func TestClusterUpRollsBack(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Bin(t, "cruz")
	dir, err := os.MkdirTemp("/tmp", "cruz-cl-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(bin, "cruzd"), []byte("#!/bin/sh\necho 'fake cruzd: refusing to start' >&2\nexit 1\n"), 0o755))
	c := &vcluster{t: t, dir: filepath.Join(dir, "cl"), lan: fmt.Sprintf("czr%d", os.Getpid()%100000),
		subnet: "10.189.0.0/16", store: filepath.Join(dir, "store"), path: os.Getenv("PATH")}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", c.lan).Run() })
	cmd := exec.Command(testenv.Bin(t, "cruz"), "cluster", "up", "--nodes", "2", "--dir", c.dir, "--lan", c.lan,
		"--subnet", c.subnet, "--store", c.store)
	cmd.Env = append(os.Environ(), "CRUZ_BIN="+bin)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "cruz cluster up with a failing cruzd: %s", out)
	// Every node's cruzd fails: the error names the first one noticed
	// (node2's when its namespace holder died before its LAN link was made).
	assert.Regexp(t, `cruzd of node[12] exited at start`, string(out), "the error names a failed node")
	assert.Contains(t, string(out), "fake cruzd: refusing to start", "the error quotes the node's log")
	assert.Contains(t, string(out), "removing what it made")
	assert.NoFileExists(t, filepath.Join(c.dir, cluster.StateFile))
	assert.NoDirExists(t, filepath.Join(c.dir, "node1"))
	assert.NoDirExists(t, filepath.Join(c.dir, "node2"))
	links, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	require.NoError(t, err)
	assert.NotContains(t, string(links), " "+c.lan, "no LAN bridge or veth left")
	r := c.clusterCmd("down", "--lan", c.lan)
	assert.Equal(t, 0, r.Code, "down after a failed up: %s", r.Stderr)
}

// TestClusterRestartOnAnotherNode: an MPI job stopped by a checkpoint on
// node1 restarts, all of it on node2 (--nodes node2), from the shared store (node2 has never seen it and
// adopts it from the checkpoint's signed record), every pod with its address
// and MAC, and finishes with the output of an uninterrupted run. A user who
// does not own the job cannot do the same.
func TestClusterRestartOnAnotherNode(t *testing.T) {
	c := upCluster(t, 2)
	st := c.status()
	n1, n2 := c.node(t, st, "node1"), c.node(t, st, "node2")
	u := testenv.LookupUser(t, "cruzt1")
	other := testenv.LookupUser(t, "cruzt2")
	dir := testenv.TempDirFor(t, u)
	const np, iters = 2, 40

	run := n1.startCruz(u, dir, "run", "--name", "mv", "--np", fmt.Sprint(np), "--", testenv.Bin(t, "mpi_allreduce"), fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", 60*time.Second)
	before := n1.status(u, "mv")
	n1.checkpoint(u, "mv", "--stop")
	first := run.wait(t, time.Minute)
	require.Equal(t, 75, first.Code, "stderr:\n%s", first.Stderr)

	denied := n2.cruz(other, "", "restart", before.ID)
	assert.Equal(t, 1, denied.Code)
	assert.Contains(t, denied.Stderr, "your own jobs")

	// cruz rm keeps the checkpoints and with them the job's addresses,
	// reserved in the shared store: a new job on node1 gets other ones, and
	// the removed job restarts on node2 with its own.
	rm := n1.cruz(u, "", "rm", before.ID)
	require.Equal(t, 0, rm.Code, "cruz rm: %s", rm.Stderr)
	other2 := n1.startCruz(u, dir, "run", "--name", "other", "--np", fmt.Sprint(np), "--", testenv.Bin(t, "mpi_allreduce"), "100", "100")
	other2.waitOutput(t, "iter 3 ", 60*time.Second)
	for _, p := range n1.status(u, "other").Pods {
		for _, q := range before.Pods {
			require.NotEqual(t, q.IP, p.IP, "new pod %s got the address of %s, whose checkpoint holds it", p.Name, q.Name)
		}
	}

	second := n2.cruz(u, dir, "restart", "--nodes", "node2", before.ID)
	require.Equal(t, 0, second.Code, "restart on node2: %s", second.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), append(check.Lines(first.Stdout), check.Lines(second.Stdout)...))
	after := n2.status(u, before.ID)
	require.Len(t, after.Pods, len(before.Pods))
	for i, p := range after.Pods {
		assert.Equal(t, before.Pods[i].IP, p.IP, "pod %s keeps its address", p.Name)
		assert.Equal(t, before.Pods[i].MAC, p.MAC, "pod %s keeps its MAC", p.Name)
		assert.Equal(t, "node2", p.Node)
	}
	third := other2.wait(t, time.Minute)
	require.Equal(t, 0, third.Code, "stderr:\n%s", third.Stderr)
	require.Equal(t, check.AllreduceOutput(np, 100), check.Lines(third.Stdout), "the job beside it ran undisturbed")
}

package cluster

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNodePool(t *testing.T) {
	sub := netip.MustParsePrefix("10.203.0.0/16")
	assert.Equal(t, "10.203.1.0/24", nodePool(sub, 1).String())
	assert.Equal(t, "10.203.200.0/24", nodePool(sub, 200).String())
	assert.Equal(t, "10.0.3.0/24", nodePool(netip.MustParsePrefix("10.0.0.0/8"), 3).String())
}

func TestOptionsCheck(t *testing.T) {
	ok := Options{Nodes: 3}
	ok.defaults()
	_, err := ok.check()
	require.NoError(t, err)
	// Paths that only slurm.conf cannot hold are fine without --slurm.
	plain := ok
	plain.Dir = "/tmp/a,b"
	_, err = plain.check()
	require.NoError(t, err)
	for _, tt := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.Nodes = 0 }, "--nodes 0 is out of range: a cluster has 1 to 200 nodes"},
		{func(o *Options) { o.Nodes = 201 }, "--nodes 201 is out of range"},
		{func(o *Options) { o.Subnet = "10.203.0.0/24" }, `--subnet "10.203.0.0/24" is not an IPv4 CIDR with a prefix length from 8 to 16`},
		{func(o *Options) { o.Subnet = "10.203.1.0/16" }, "no host bits set"},
		{func(o *Options) { o.LAN = "a-very-long-lan" }, `--lan "a-very-long-lan" is not an interface name of 1 to 11 bytes`},
		{func(o *Options) { o.Dir = "rel" }, `--dir "rel" is not an absolute path`},
		{func(o *Options) { o.Store = "rel" }, `--store "rel" is not an absolute path`},
		{func(o *Options) { o.Slurm, o.Dir = true, "/tmp/a,b" }, `--dir "/tmp/a,b" has a ',', which slurm.conf cannot hold (--slurm)`},
		{func(o *Options) { o.Slurm, o.Dir = true, "/tmp/a b" }, `--dir "/tmp/a b" has a ' '`},
		{func(o *Options) { o.Slurm, o.Dir = true, "/"+strings.Repeat("d", 85) }, "too long for Slurm's munge socket"},
	} {
		o := ok
		tt.mutate(&o)
		_, err := o.check()
		require.Error(t, err)
		assert.Contains(t, err.Error(), tt.want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	require.ErrorIs(t, err, ErrNotUp)
	assert.Contains(t, err.Error(), "cruz cluster up")
	st := &State{Dir: dir, LAN: "czlan0", Nodes: []Node{{Name: "node1", Socket: "/x/node1/cruzd.sock"}, {Name: "node2"}}}
	require.NoError(t, writeState(st))
	got, err := Load(dir)
	require.NoError(t, err)
	n, err := got.Node("node1")
	require.NoError(t, err)
	assert.Equal(t, "/x/node1/cruzd.sock", n.Socket)
	_, err = got.Node("node9")
	assert.ErrorContains(t, err, `no node "node9"; its nodes are node1, node2`)
	require.NoError(t, os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o644))
	_, err = Load(dir)
	assert.ErrorContains(t, err, "cruz cluster down --dir "+dir)
}

func TestFailRefuses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("cluster fail needs root")
	}
	dir := t.TempDir()
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	// The nodes' pids are 0: nothing is killed if a refusal comes too late.
	st := &State{Dir: dir, LAN: "czlan0", Nodes: []Node{{Name: "node1", Config: "/nonexistent/node1/cruzd.toml"},
		{Name: "node2", Config: "/nonexistent/node2/cruzd.toml", Failed: true, FailedAt: at}}}
	require.NoError(t, writeState(st))
	ctx := context.Background()

	_, err := Fail(ctx, dir, "node9")
	assert.ErrorContains(t, err, `no node "node9"; its nodes are node1, node2`)
	_, err = Fail(ctx, dir, "node2")
	assert.ErrorContains(t, err, "node2 already failed")
	assert.ErrorContains(t, err, "cruz cluster down --dir "+dir)
	_, err = Restart(ctx, dir, "node2", false)
	assert.ErrorContains(t, err, "node2 failed")
	assert.ErrorContains(t, err, "cruz cluster down")
	_, err = Fail(ctx, t.TempDir(), "node1")
	assert.ErrorIs(t, err, ErrNotUp)

	got, err := Status(dir)
	require.NoError(t, err)
	n, err := got.Node("node2")
	require.NoError(t, err)
	assert.True(t, n.Failed)
	assert.False(t, n.Alive)
	assert.True(t, at.Equal(n.FailedAt))
}

func TestParseStat(t *testing.T) {
	line := "4242 (cruzd (x) y) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 123456 1000 10 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
	ppid, state, start, ok := parseStat(line)
	require.True(t, ok)
	assert.Equal(t, 17, ppid)
	assert.Equal(t, byte('S'), state)
	assert.Equal(t, uint64(123456), start)
	_, _, _, ok = parseStat("4242 (cruzd) S 17")
	assert.False(t, ok)
	// Our own stat parses, with our parent.
	b, err := os.ReadFile("/proc/self/stat")
	require.NoError(t, err)
	ppid, _, _, ok = parseStat(string(b))
	require.True(t, ok)
	assert.Equal(t, os.Getppid(), ppid)
}

func TestParseNetnsLink(t *testing.T) {
	ino, ok := parseNetnsLink("net:[4026532001]")
	assert.True(t, ok)
	assert.Equal(t, uint64(4026532001), ino)
	for _, s := range []string{"", "pid:[4026532001]", "net:[x]", "socket:[123]", "/dev/null"} {
		_, ok := parseNetnsLink(s)
		assert.False(t, ok, s)
	}
}

func TestFailVictims(t *testing.T) {
	const root, node, pod, other = 1000, 2000, 3000, 4000
	procs := map[int]procInfo{
		1:   {ppid: 0, net: root},
		10:  {ppid: 1, net: node},  // holder
		11:  {ppid: 1, net: node},  // agent
		12:  {ppid: 11, net: node}, // a CRIU it runs
		13:  {ppid: 11, net: pod},  // a pod init it started
		14:  {ppid: 13, net: pod},  // its child
		15:  {ppid: 1, net: pod},   // a pod process reparented to init
		16:  {ppid: 11, net: root}, // something the agent ran in the root netns
		20:  {ppid: 1, net: root},  // the caller
		21:  {ppid: 1, net: root},  // unrelated
		22:  {ppid: 1, net: other}, // unrelated, in another netns
		23:  {ppid: 21, net: root}, // unrelated
		100: {ppid: 1, net: 0},     // unreadable netns
	}
	v := victims{root: root, self: 20, holder: 10, node: map[uint64]bool{node: true}, pods: map[uint64]bool{pod: true},
		tree: map[int]bool{10: true, 11: true}}
	for pid := range descendants(procs, v.tree) {
		v.tree[pid] = true
	}
	assert.Equal(t, map[int]bool{10: true, 11: true, 12: true, 13: true, 14: true, 16: true}, v.tree)
	assert.Equal(t, map[int]string{10: "holder", 11: "", 12: "", 13: "pod", 14: "pod", 15: "pod", 16: ""}, v.pick(procs))
	// Later rounds go by namespace only.
	v.holder, v.tree = 0, nil
	assert.Equal(t, map[int]string{10: "", 11: "", 12: "", 13: "pod", 14: "pod", 15: "pod"}, v.pick(procs))
	// The caller's netns is never a node's or a pod's.
	v.node[root], v.pods[root] = true, true
	assert.NotContains(t, v.pick(procs), 21)
}

func TestFailReportString(t *testing.T) {
	r := FailReport{Node: "node2", LinkCut: true, Agent: true, Holder: true, PodProcesses: 3}
	assert.Equal(t, "node2 failed: link cut, agent and 3 pod processes killed, node removed", r.String())
	r.OtherProcesses = 1
	assert.Equal(t, "node2 failed: link cut, agent, 3 pod processes and 1 other process killed, node removed", r.String())
	r = FailReport{Node: "node1", LinkCut: true, Holder: true}
	assert.Equal(t, "node1 failed: link cut, 0 pod processes killed, node removed", r.String())
	r = FailReport{Node: "node1", Agent: true, PodProcesses: 1}
	assert.Equal(t, "node1 failed: link already gone, agent and 1 pod process killed, node's namespaces already gone", r.String())
}

func TestControllerAddr(t *testing.T) {
	assert.Equal(t, "10.203.0.254", controllerAddr(netip.MustParsePrefix("10.203.0.0/16")).String())
	assert.Equal(t, "10.0.0.254", controllerAddr(netip.MustParsePrefix("10.0.0.0/8")).String())
	// No node has it: their addresses are hosts 1..MaxNodes.
	assert.Less(t, MaxNodes, controllerHost)
	n := prefixNet(netip.PrefixFrom(controllerAddr(netip.MustParsePrefix("10.203.0.0/16")), 16))
	assert.Equal(t, "10.203.0.254/16", n.String())
	p, ok := ipNetPrefix(n)
	assert.True(t, ok)
	assert.Equal(t, "10.203.0.0/16", p.String())
}

func TestSlurmState(t *testing.T) {
	dir := t.TempDir()
	st := &State{Dir: dir, LAN: "czlan0", Nodes: []Node{{Name: "node1"}}}
	require.NoError(t, writeState(st))
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	require.NoError(t, err)
	assert.NotContains(t, string(b), "slurm", "a cluster without Slurm has no slurm state")
	got, err := Status(dir)
	require.NoError(t, err)
	assert.Nil(t, got.Slurm)

	st.Slurm = &SlurmState{Dir: filepath.Join(dir, "slurm"), Conf: filepath.Join(dir, "slurm", "slurm.conf"),
		ControllerAddr: netip.MustParseAddr("10.203.0.254"), Port: 16817, PID: os.Getpid(), NodeDir: filepath.Join(dir, "this-node")}
	require.NoError(t, writeState(st))
	got, err = Status(dir)
	require.NoError(t, err)
	require.NotNil(t, got.Slurm)
	assert.Equal(t, "10.203.0.254:16817", got.Slurm.Addr().String())
	assert.Equal(t, st.Slurm.Conf, got.Slurm.Conf)
	// Our pid runs, but is no slurmctld with that slurm.conf.
	assert.False(t, got.Slurm.Alive)
}

func TestCheckSlurmctldPort(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	err = checkSlurmctldPort(port)
	l.Close()
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("TCP port %d, where the cluster's slurmctld would listen, is in use", port))
	assert.Contains(t, err.Error(), "only one Slurm cluster made by cruz")
	assert.NoError(t, checkSlurmctldPort(port))
}

// TestSpankPlugin: --slurm needs the plugin (next to cruzd, or named), and
// says how to get it.
func TestSpankPlugin(t *testing.T) {
	dir := t.TempDir()
	cruzd := filepath.Join(dir, "cruzd")
	_, err := spankPlugin("", cruzd)
	require.EqualError(t, err, "--slurm: no Cruz SPANK plugin at "+filepath.Join(dir, SpankPlugin)+", so srun and sbatch would have no --cruz: build it next to cruzd with `make build` (it needs Slurm's headers: apt-get install -y libslurm-dev)")
	require.NoError(t, os.WriteFile(filepath.Join(dir, SpankPlugin), nil, 0o755))
	p, err := spankPlugin("", cruzd)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, SpankPlugin), p)
	_, err = spankPlugin(dir, cruzd)
	require.ErrorContains(t, err, "no Cruz SPANK plugin at "+dir)
	spaced := filepath.Join(dir, "a b.so")
	require.NoError(t, os.WriteFile(spaced, nil, 0o755))
	_, err = spankPlugin(spaced, cruzd)
	require.ErrorContains(t, err, "has whitespace")
}

//go:build linux

package slurmcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/nl"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testLog sends the cluster's progress lines to t.Log.
type testLog struct {
	t  *testing.T
	mu sync.Mutex
}

func (l *testLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// requireSlurm skips the test, saying why, unless it can run a cluster.
func requireSlurm(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP: -short (make unit): starting a Slurm cluster takes tens of seconds; make test runs it")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIP: a slurm cluster needs root (network namespaces, munged, slurmd): run go test as root")
	}
	if err := CheckPrograms(); err != nil {
		t.Skipf("SKIP: %v", err)
	}
}

// testNet is a bridge in the root netns holding the controller's address,
// and per node a netns anchored by a sleep process, with a veth into the
// bridge and the node's address.
type testNet struct {
	bridge  string
	ctrl    netip.Addr
	nodes   []Node
	anchors []*exec.Cmd
}

// freeSubnet picks a test /24 that no address or route of this machine
// touches, so that the test never captures real traffic.
func freeSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	addrs, err := nl.AddrList(nil, netlink.FAMILY_V4)
	require.NoError(t, err)
	routes, err := nl.RouteList(nil, netlink.FAMILY_V4)
	require.NoError(t, err)
	var used []netip.Prefix
	for _, a := range addrs {
		if p, ok := toPrefix(a.IPNet); ok {
			used = append(used, p)
		}
	}
	for _, r := range routes {
		if p, ok := toPrefix(r.Dst); ok && p.Bits() > 0 {
			used = append(used, p)
		}
	}
	for x := 77; x < 120; x++ {
		cand := netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", x))
		clash := false
		for _, u := range used {
			if u.Overlaps(cand) {
				clash = true
			}
		}
		if !clash {
			return cand
		}
	}
	t.Fatal("no free test subnet in 10.213.77.0/24 .. 10.213.119.0/24")
	return netip.Prefix{}
}

func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits).Masked(), true
}

func addrAt(p netip.Prefix, host byte) netip.Addr {
	b := p.Addr().As4()
	b[3] = host
	return netip.AddrFrom4(b)
}

// newTestNet makes the network of a cluster of n nodes. Its t.Cleanup
// removes everything, also when the test fails half-way.
func newTestNet(t *testing.T, n int) *testNet {
	t.Helper()
	sub := freeSubnet(t)
	tag := fmt.Sprintf("czs%d", os.Getpid()%100000)
	tn := &testNet{bridge: tag + "b", ctrl: addrAt(sub, 1)}
	t.Logf("test network: bridge %s, %s", tn.bridge, sub)
	t.Cleanup(func() { tn.remove(t) })

	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: tn.bridge}}
	require.NoError(t, netlink.LinkAdd(br), "create bridge %s", tn.bridge)
	brl, err := netlink.LinkByName(tn.bridge)
	require.NoError(t, err)
	require.NoError(t, netlink.AddrAdd(brl, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(tn.ctrl, 24))}))
	require.NoError(t, netlink.LinkSetUp(brl))

	for k := 1; k <= n; k++ {
		// The node's netns lives as long as this sleep (bounded, in case
		// the cleanup never runs).
		anchor := exec.Command("sleep", "900")
		anchor.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Setsid: true, Pdeathsig: syscall.SIGKILL}
		require.NoError(t, anchor.Start(), "start netns anchor")
		tn.anchors = append(tn.anchors, anchor)
		node := Node{Name: fmt.Sprintf("n%d", k), NetnsPID: anchor.Process.Pid, Addr: addrAt(sub, byte(10+k))}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: fmt.Sprintf("%sn%d", tag, k), MasterIndex: brl.Attrs().Index},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsPid(node.NetnsPID),
		}
		require.NoError(t, netlink.LinkAdd(veth), "create veth %s", veth.Name)
		l, err := netlink.LinkByName(veth.Name)
		require.NoError(t, err)
		require.NoError(t, netlink.LinkSetUp(l))
		require.NoError(t, configureNode(node))
		tn.nodes = append(tn.nodes, node)
	}
	return tn
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// configureNode brings up lo and eth0 with the node's address in its netns.
func configureNode(n Node) error {
	ns, err := netns.GetFromPid(n.NetnsPID)
	if err != nil {
		return fmt.Errorf("open netns of %s: %w", n.Name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in netns of %s: %w", n.Name, err)
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s of %s: %w", name, n.Name, err)
		}
		if name == "eth0" {
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(n.Addr, 24))}); err != nil {
				return fmt.Errorf("address of %s: %w", n.Name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bring up %s of %s: %w", name, n.Name, err)
		}
	}
	return nil
}

// remove ends the anchors (which deletes the node netns and the veths in
// them) and deletes the veths' root ends and the bridge.
func (tn *testNet) remove(t *testing.T) {
	for _, a := range tn.anchors {
		_ = a.Process.Kill()
		_ = a.Wait()
	}
	links, _ := nl.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, strings.TrimSuffix(tn.bridge, "b")+"n") || l.Attrs().Name == tn.bridge {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
				t.Errorf("delete %s: %v", l.Attrs().Name, err)
			}
		}
	}
}

// inNetns runs f on a thread in pid's network namespace.
func inNetns(pid int, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Never let the runtime reuse this thread in the node's netns.
		panic(fmt.Sprintf("return to own netns: %v", err))
	}
	return ferr
}

// run runs a Slurm client with the cluster's environment, bounded.
func run(t *testing.T, c *Cluster, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), c.Env()...)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("$ %s %s (%v, %.2fs)\n%s", name, strings.Join(args, " "), err, time.Since(start).Seconds(), strings.TrimRight(string(out), "\n"))
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("%s timed out after %s", name, timeout)
	}
	return string(out), err
}

// leftovers lists live processes that belong to the cluster in dir: its
// daemons (by pid file or command line) and anything, such as job steps and
// tasks, whose environment names its slurm.conf or whose command line names
// a file in dir.
func leftovers(dir string) []string {
	conf := "SLURM_CONF=" + filepath.Join(dir, confName)
	var l []string
	for _, pid := range allPIDs() {
		if pid == os.Getpid() || !alive(pid) {
			continue
		}
		hit := false
		for _, a := range cmdline(pid) {
			if strings.Contains(a, dir+"/") {
				hit = true
			}
		}
		for _, e := range environ(pid) {
			if e == conf {
				hit = true
			}
		}
		if hit {
			l = append(l, fmt.Sprintf("%d %s %q", pid, readComm(pid), cmdline(pid)))
		}
	}
	return l
}

// assertGone checks that nothing of the cluster in dir is left.
func assertGone(t *testing.T, dir string, pids map[string]int) {
	t.Helper()
	assert.Empty(t, leftovers(dir), "processes of the cluster left after stop")
	assert.Empty(t, findDaemons(dir))
	for role, pid := range pids {
		assert.False(t, alive(pid), "%s (pid %d) still alive", role, pid)
	}
	_, err := os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "state directory %s left", dir)
}

// stateDir is a state directory for a cluster under a new t.TempDir, whose
// parent testing makes mode 0700: munged wants every directory above its
// socket searchable by all.
func stateDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	require.NoError(t, os.Chmod(filepath.Dir(tmp), 0o755))
	require.NoError(t, os.Chmod(tmp, 0o755))
	return filepath.Join(tmp, "slurm")
}

// buildSpank compiles the SPANK plugin into a world-readable temp dir, or
// says why it cannot.
func buildSpank(t *testing.T) (string, error) {
	t.Helper()
	if _, err := os.Stat("/usr/include/slurm/spank.h"); err != nil {
		return "", errors.New("no /usr/include/slurm/spank.h (apt-get install -y libslurm-dev)")
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		return "", errors.New("no C compiler cc (apt-get install -y gcc)")
	}
	src, err := filepath.Abs("../../slurm-spank/cruz_spank.c")
	if err != nil {
		return "", err
	}
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	so := filepath.Join(dir, "cruz_spank.so")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cc, "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o", so, src).CombinedOutput()
	require.NoError(t, err, "build the SPANK plugin:\n%s", out)
	require.NoError(t, os.Chmod(so, 0o755))
	return so, nil
}

// TestCluster starts a 2-node cluster with the Cruz SPANK plugin, runs srun
// and sbatch jobs and the plugin's option checks, stops it, and checks that
// nothing is left. Then it starts one more, leaves a job running, kills
// slurmctld and one slurmd, and removes the rest with StopDir as `cruz
// cluster down` would after a crash.
func TestCluster(t *testing.T) {
	requireSlurm(t)
	tn := newTestNet(t, 2)
	log := &testLog{t: t}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The fake agent: the plugin only checks that its socket exists.
	agentDir := t.TempDir()
	require.NoError(t, os.Chmod(agentDir, 0o755))
	agentSock := filepath.Join(agentDir, "cruzd.sock")
	agent, err := net.Listen("unix", agentSock)
	require.NoError(t, err)
	defer agent.Close()
	store := t.TempDir()

	// The fake cruz: the plugin has slurmstepd exec it in place of each
	// task of a --cruz step; it runs the task's program as it is.
	fakeCruz := filepath.Join(agentDir, "cruz")
	// (The epilog runs it too, as `cruz slurm-end JOB`: nothing to do.)
	require.NoError(t, os.WriteFile(fakeCruz, []byte("#!/bin/sh\n[ -n \"$CRUZ_TASK_ARGV0\" ] || exit 0\nexec \"$CRUZ_TASK_ARGV0\" \"$@\"\n"), 0o755))

	plugstack := filepath.Join(agentDir, "plugstack.conf")
	so, spankErr := buildSpank(t)
	writePlugstack := func(socket string) {
		line := ""
		if spankErr == nil {
			line = fmt.Sprintf("required %s socket=%s cruz=%s\n", so, socket, fakeCruz)
		}
		require.NoError(t, os.WriteFile(plugstack, []byte(line), 0o644))
	}
	writePlugstack(agentSock)

	dir := stateDir(t)
	start := time.Now()
	c, err := Start(ctx, Options{Dir: dir, ControllerAddr: tn.ctrl, Nodes: tn.nodes, PlugstackConf: plugstack, CPUsPerNode: 2, Log: log})
	require.NoError(t, err)
	t.Logf("Start took %.2fs", time.Since(start).Seconds())
	pids := c.PIDs()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			assert.NoError(t, StopDir(context.Background(), dir))
		}
	})

	t.Run("srun hostname", func(t *testing.T) {
		out, err := run(t, c, 60*time.Second, "srun", "-N2", "hostname")
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{"n1", "n2"}, strings.Fields(out))
	})

	t.Run("sbatch --wait", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "job.out")
		script := "#!/bin/sh\necho batch on $(hostname)\nsrun -N2 hostname | sort\n"
		scriptFile := filepath.Join(filepath.Dir(out), "job.sh")
		require.NoError(t, os.WriteFile(scriptFile, []byte(script), 0o755))
		_, err := run(t, c, 90*time.Second, "sbatch", "--wait", "-N2", "--output="+out, scriptFile)
		require.NoError(t, err)
		b, err := os.ReadFile(out)
		require.NoError(t, err)
		assert.Regexp(t, `^batch on n[12]\nn1\nn2\n$`, string(b))
	})

	t.Run("spank", func(t *testing.T) {
		if spankErr != nil {
			t.Skipf("SKIP: cannot build the SPANK plugin: %v", spankErr)
		}
		out, err := run(t, c, 30*time.Second, "srun", "--help")
		require.NoError(t, err)
		for _, opt := range []string{"--cruz ", "--cruz-interval=DURATION", "--cruz-store=DIR", "--cruz-restart=auto|never"} {
			assert.Contains(t, out, opt)
		}

		out, err = run(t, c, 30*time.Second, "srun", "--cruz-interval=banana", "-N1", "true")
		require.Error(t, err)
		assert.Contains(t, out, "cruz: ")
		assert.Contains(t, out, "--cruz-interval=banana")
		assert.Contains(t, out, "--cruz-interval=90s")

		// Go's time.ParseDuration syntax, at least 1s.
		for _, bad := range []string{"", "90", "5x", "m", "-5m", "1h-30m", "1e3s", "0.5s", "0"} {
			out, err = run(t, c, 30*time.Second, "srun", "--cruz-interval="+bad, "-N1", "true")
			require.Error(t, err, "--cruz-interval=%s", bad)
			assert.Contains(t, out, "cruz: --cruz-interval="+bad+" is ")
		}
		for _, good := range []string{"1s", "90s", "5m", "1h30m", "1.5h", "2h0m0.5s", "1500ms", ".5m"} {
			_, err = run(t, c, 30*time.Second, "srun", "--cruz-interval="+good, "-N1", "true")
			require.NoError(t, err, "--cruz-interval=%s", good)
		}

		out, err = run(t, c, 30*time.Second, "sbatch", "--cruz-interval=banana", "--wrap", "true")
		require.Error(t, err)
		assert.Contains(t, out, "sbatch: error: cruz: --cruz-interval=banana is not a duration")

		out, err = run(t, c, 30*time.Second, "srun", "--cruz", "--cruz-store=/nonexistent", "-N1", "true")
		require.Error(t, err)
		assert.Contains(t, out, "cruz: --cruz-store=/nonexistent")

		out, err = run(t, c, 30*time.Second, "srun", "--cruz-restart=sometimes", "-N1", "true")
		require.Error(t, err)
		assert.Contains(t, out, "cruz: --cruz-restart=sometimes")

		// The options reach every task as environment variables.
		show := `echo "$(hostname) ${CRUZ_ENABLED-unset} ${CRUZ_INTERVAL-unset} ${CRUZ_STORE-unset} ${CRUZ_RESTART-unset}"`
		out, err = run(t, c, 60*time.Second, "srun", "-N2", "--cruz-interval=1h30m", "--cruz-store="+store, "--cruz-restart=never", "sh", "-c", show)
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{"n1 1 1h30m " + store + " never", "n2 1 1h30m " + store + " never"}, strings.Split(strings.TrimSpace(withoutSrunNotes(out)), "\n"))
		out, err = run(t, c, 60*time.Second, "srun", "-N1", "sh", "-c", show)
		require.NoError(t, err)
		assert.Equal(t, "n1 unset unset unset unset", strings.TrimSpace(withoutSrunNotes(out)))

		// Each task of a --cruz step is handed to cruz, which learns the
		// program's path and the node's agent from its environment.
		out, err = run(t, c, 60*time.Second, "srun", "--cruz", "-N1", "sh", "-c", `echo "$CRUZ_TASK_ARGV0 $CRUZ_SOCKET"`)
		require.NoError(t, err)
		assert.Regexp(t, `^(/usr/bin/|/bin/)?sh `+regexp.QuoteMeta(agentSock)+`$`, strings.TrimSpace(withoutSrunNotes(out)))

		// sbatch hands the options to the batch script and its steps.
		jobOut := filepath.Join(t.TempDir(), "job.out")
		script := filepath.Join(filepath.Dir(jobOut), "job.sh")
		require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n"+show+"\nsrun -N1 -w n2 sh -c '"+strings.ReplaceAll(show, "'", `'\''`)+"'\n"), 0o755))
		_, err = run(t, c, 90*time.Second, "sbatch", "--wait", "-N2", "-w", "n1,n2", "--cruz", "--cruz-interval=5m", "--output="+jobOut, script)
		require.NoError(t, err)
		b, err := os.ReadFile(jobOut)
		require.NoError(t, err)
		assert.Equal(t, "n1 1 5m unset unset\nn2 1 5m unset unset\n", string(b))

		// Without an agent on the nodes, a --cruz step fails at once.
		writePlugstack(filepath.Join(agentDir, "missing.sock"))
		defer writePlugstack(agentSock)
		out, err = run(t, c, 60*time.Second, "srun", "--cruz", "-N1", "-w", "n1", "true")
		require.Error(t, err)
		assert.Contains(t, out, "cruz: no cruz agent on node n1 (socket "+filepath.Join(agentDir, "missing.sock")+"): start cruzd")
	})

	start = time.Now()
	require.NoError(t, c.Stop(ctx))
	stopped = true
	t.Logf("Stop took %.2fs", time.Since(start).Seconds())
	assertGone(t, dir, pids)

	t.Run("StopDir after a crash with a job running", func(t *testing.T) {
		dir := stateDir(t)
		c, err := Start(ctx, Options{Dir: dir, ControllerAddr: tn.ctrl, Nodes: tn.nodes, Log: log})
		require.NoError(t, err)
		pids := c.PIDs()
		t.Cleanup(func() { _ = StopDir(context.Background(), dir) })
		_, err = run(t, c, 30*time.Second, "sbatch", "-N2", "--output=/dev/null", "--wrap", "srun sleep 600")
		require.NoError(t, err)
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := run(t, c, 10*time.Second, "squeue", "--noheader", "--steps", "--format=%i")
			require.NoError(t, err)
			if strings.Contains(out, ".0") {
				break // the srun step runs
			}
			require.True(t, time.Now().Before(deadline), "the job's step did not start within 30s")
			time.Sleep(200 * time.Millisecond)
		}
		// A crash: slurmctld and n1's slurmd die; n1's job step lives on.
		for _, role := range []string{"slurmctld", "slurmd-n1"} {
			require.NoError(t, syscall.Kill(pids[role], syscall.SIGKILL))
		}
		require.Empty(t, awaitGone(ctx, []int{pids["slurmctld"], pids["slurmd-n1"]}, 5*time.Second))
		left := leftovers(dir)
		t.Logf("left after the crash:\n%s", strings.Join(left, "\n"))
		require.NotEmpty(t, left)
		// Forget c, as a crashed `cruz cluster up` would.
		start := time.Now()
		require.NoError(t, StopDir(ctx, dir))
		t.Logf("StopDir took %.2fs", time.Since(start).Seconds())
		assertGone(t, dir, pids)
	})
}

// TestStartRollback makes a node's slurmd fail (its port is taken in the
// node's netns) and checks that Start quotes the daemon's log and leaves
// nothing behind but the logs it was asked to keep.
func TestStartRollback(t *testing.T) {
	requireSlurm(t)
	tn := newTestNet(t, 2)
	var l net.Listener
	require.NoError(t, inNetns(tn.nodes[1].NetnsPID, func() (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", DefaultSlurmdPort))
		return err
	}))
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := stateDir(t)
	c, err := Start(ctx, Options{Dir: dir, ControllerAddr: tn.ctrl, Nodes: tn.nodes, StartTimeout: 20 * time.Second, KeepLogs: true, Log: &testLog{t: t}})
	t.Cleanup(func() { _ = StopDir(context.Background(), dir) })
	require.Error(t, err)
	assert.Nil(t, c)
	t.Logf("Start failed as it should:\n%v", err)
	assert.Contains(t, err.Error(), "slurmd-n2 exited at start")
	assert.Contains(t, err.Error(), "the end of "+filepath.Join(dir, "log", "slurmd-n2.log"))
	assert.Contains(t, err.Error(), "Unable to bind listen port (16818)")
	// KeepLogs: the logs stay, and nothing else.
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	assert.Equal(t, "log", ents[0].Name())
	assert.FileExists(t, filepath.Join(dir, "log", "slurmd-n2.log"))
	require.NoError(t, StopDir(ctx, dir))
	assertGone(t, dir, nil)
}

func TestStartChecks(t *testing.T) {
	requireSlurm(t)
	tn := newTestNet(t, 1)
	ctx := context.Background()
	o := Options{Dir: stateDir(t), ControllerAddr: tn.ctrl, Nodes: tn.nodes}

	bad := o
	bad.ControllerAddr = netip.MustParseAddr("10.213.250.1")
	_, err := Start(ctx, bad)
	assert.ErrorContains(t, err, "controller address 10.213.250.1 is not on any interface")

	bad = o
	bad.Nodes = []Node{{Name: "n1", NetnsPID: os.Getpid(), Addr: tn.nodes[0].Addr}}
	_, err = Start(ctx, bad)
	assert.ErrorContains(t, err, "node n1: pid")
	assert.ErrorContains(t, err, "lives in the root network namespace")

	full := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(full, "precious"), nil, 0o644))
	bad = o
	bad.Dir = full
	_, err = Start(ctx, bad)
	assert.ErrorContains(t, err, "is not empty")
	assert.FileExists(t, filepath.Join(full, "precious"))
}

// withoutSrunNotes drops srun's own notes ("srun: job 12 queued and waiting
// for resources", "srun: job 12 has been allocated resources"), which it
// prints when the previous job still holds the node.
func withoutSrunNotes(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "srun: job ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

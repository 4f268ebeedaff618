package e2e

// The TCP API against strangers on the cluster's network: slow clients
// cannot exhaust an agent, and pods cannot reach the agents' port at all.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
)

// lanHost is a network namespace the test makes on a virtual cluster's LAN,
// with address addr: a machine of the cluster's network that is no node.
type lanHost struct {
	addr   netip.Addr
	holder *exec.Cmd
	veth   string
}

func newLANHost(t *testing.T, c *vcluster, host int) *lanHost {
	t.Helper()
	sub := netip.MustParsePrefix(c.subnet)
	addr := sub.Addr()
	for i := 0; i < host; i++ {
		addr = addr.Next()
	}
	h := &lanHost{addr: addr, holder: exec.Command("unshare", "--net", "sleep", "600"),
		veth: fmt.Sprintf("tlh%d", os.Getpid()%100000)}
	require.NoError(t, h.holder.Start())
	t.Cleanup(func() {
		_ = h.holder.Process.Kill()
		_ = h.holder.Wait()
		_ = exec.Command("ip", "link", "del", h.veth).Run() // gone with the netns already, normally
	})
	pid := strconv.Itoa(h.holder.Process.Pid)
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
	}
	// The holder's netns exists once unshare has exec'd sleep.
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile("/proc/" + pid + "/comm")
		return strings.TrimSpace(string(b)) == "sleep"
	}, 5*time.Second, 10*time.Millisecond)
	run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", pid)
	run("ip", "link", "set", h.veth, "master", c.lan, "up")
	in := []string{"nsenter", "--net=/proc/" + pid + "/ns/net", "ip"}
	run(append(in, "addr", "add", netip.PrefixFrom(addr, sub.Bits()).String(), "dev", "eth0")...)
	run(append(in, "link", "set", "eth0", "up")...)
	run(append(in, "link", "set", "lo", "up")...)
	return h
}

// in runs fn on a thread in the host's netns: sockets made there stay in
// it. The thread ends with fn.
func (h *lanHost) in(t *testing.T, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends in the host's netns
		ns, err := netns.GetFromPid(h.holder.Process.Pid)
		if err != nil {
			done <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	require.NoError(t, <-done)
}

// isTimeout tells whether err is a read deadline passing (the connection
// is still open), not an end or a reset by the other side.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// TestTCPAPIHoldsSlowClients: 1,000 slow unauthenticated connections from
// one machine of the cluster's network against node1's agent. It keeps 512
// (the per-address cap) and closes the rest at once, its memory stays
// bounded, node2 still gets its answers from it within seconds, and it
// closes the slow ones itself when their headers' time is up.
func TestTCPAPIHoldsSlowClients(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 2)
	n2 := c.node(t, st, "node2")
	node1 := st.Nodes[0]
	run := n1.startCruz(u, dir, "run", "--plain", "--name", "busy", "--", testenv.Bin(t, "counter"), "100000", "20")
	run.waitOutput(t, "line 2\n", 60*time.Second)
	h := newLANHost(t, c, 200)
	addr := netip.AddrPortFrom(node1.Addr, cluster.AgentPort).String()

	before := vmRSS(t, node1.PID)
	const n = 1000
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	start := time.Now()
	h.in(t, func() error {
		for i := 0; i < n; i++ {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			conns = append(conns, conn)
			// A request's first line and a header begun: then almost
			// nothing, as a slowloris client does.
			_, _ = io.WriteString(conn, "POST /v1/jobs HTTP/1.1\r\nHost: cruzd\r\nContent-Length: 4000000\r\nX-")
		}
		return nil
	})
	require.Len(t, conns, n)
	t.Logf("%d connections opened in %s", n, time.Since(start).Round(time.Millisecond))

	// Which ones did the agent close at once?
	time.Sleep(500 * time.Millisecond)
	var held []net.Conn
	for _, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		if _, err := conn.Read(make([]byte, 1)); !isTimeout(err) {
			continue // closed: EOF, or a reset (what it sent was never read)
		}
		held = append(held, conn)
	}
	assert.Len(t, held, 512, "the agent holds the per-address cap, no more")

	// Trickle a byte a second on every held connection.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
				for _, conn := range held {
					_, _ = conn.Write([]byte("a"))
				}
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	during := vmRSS(t, node1.PID)
	t.Logf("node1's cruzd VmRSS: %.1f MiB before, %.1f MiB with %d slow connections held (+%.1f MiB)",
		float64(before)/(1<<20), float64(during)/(1<<20), len(held), float64(during-before)/(1<<20))
	assert.Less(t, during-before, int64(64<<20), "cruzd's memory grows by less than 64 MiB")

	// node2 asks node1 (over node1's TCP API) about the job.
	asked := time.Now()
	j := n2.status(u, "busy")
	took := time.Since(asked)
	assert.Equal(t, api.StateRunning, j.State)
	require.Len(t, j.Pods, 1)
	assert.Equal(t, "node1", j.Pods[0].Node)
	assert.Less(t, took, 5*time.Second, "answered within seconds")
	t.Logf("cruz status on node2, answered by node1 over TCP: %s", took.Round(time.Millisecond))

	// The agent ends the slow connections itself, after the header time
	// (10 s from their start, however much they trickle).
	deadline := time.Now().Add(15 * time.Second)
	closed := 0
	for _, conn := range held {
		_ = conn.SetReadDeadline(deadline)
		if _, err := io.ReadAll(conn); !isTimeout(err) {
			closed++
		}
	}
	assert.Equal(t, len(held), closed, "every slow connection was closed by the agent")
	t.Logf("slow connections closed by cruzd %s after they were opened", time.Since(start).Round(100*time.Millisecond))

	log, err := os.ReadFile(node1.Log)
	require.NoError(t, err)
	assert.Contains(t, string(log), `msg="refusing TCP API connections: too many open from one address" remote=`+h.addr.String()+" max=512")
	require.Equal(t, 0, n1.cruz(u, dir, "rm", "busy").Code)
	run.wait(t, 30*time.Second)
	c.requireClean(t, st)
}

// TestPodsCannotReachAgents: a process in a pod cannot connect to its own
// node's agent nor to another node's, while it can connect to the same
// port on another machine of the LAN.
func TestPodsCannotReachAgents(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 2)
	h := newLANHost(t, c, 201)
	var ln net.Listener
	h.in(t, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(h.addr, cluster.AgentPort).String())
		return err
	})
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	targets := []string{st.Nodes[0].Addr.String(), st.Nodes[1].Addr.String(), h.addr.String()}
	script := filepath.Join(dir, "probe.sh")
	require.NoError(t, os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/bash
for ip in %s; do
	if timeout 3 bash -c "exec 3<>/dev/tcp/$ip/%d" 2>/dev/null; then echo "$ip open"; else echo "$ip closed"; fi
done
`, strings.Join(targets, " "), cluster.AgentPort)), 0o755))
	require.NoError(t, os.Chown(script, int(u.UID), int(u.GID)))
	r := n1.cruz(u, dir, "run", "--plain", "--name", "probe", "--", "/bin/bash", script)
	require.Equal(t, 0, r.Code, "stderr: %s", r.Stderr)
	assert.Equal(t, []string{
		st.Nodes[0].Addr.String() + " closed", // its own node's agent
		st.Nodes[1].Addr.String() + " closed", // another node's agent
		h.addr.String() + " open",             // the same port elsewhere on the LAN
	}, check.Lines(r.Stdout))
	c.requireClean(t, st)
}

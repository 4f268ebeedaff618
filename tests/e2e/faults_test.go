package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podPID1 finds the host pid of the PID 1 of the pod with address ip, among
// the processes of the test users in pods.
func podPID1(t *testing.T, ip string) int {
	t.Helper()
	for _, pid := range podProcesses(testHostNet) {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		isInit := false
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				f := strings.Fields(v)
				isInit = len(f) > 1 && f[len(f)-1] == "1"
			}
		}
		if !isInit {
			continue
		}
		out, err := exec.Command("nsenter", "--net=/proc/"+fmt.Sprint(pid)+"/ns/net", "ip", "-o", "-4", "addr", "show", "eth0").CombinedOutput()
		if err == nil && strings.Contains(string(out), " "+ip+"/") {
			return pid
		}
	}
	t.Fatalf("no pod PID 1 with address %s", ip)
	return 0
}

// TestClusterCheckpointFails: a job of 4 ranks on 3 nodes; a checkpoint in
// which CRIU fails on node2 (a wrapper makes node2's CRIU exit at once while
// a trigger file exists, as a CRIU that crashes would) is reported failed,
// naming the node and the pod; the job runs on and finishes right; the
// previous checkpoint is still the latest, and restores to the same result.
func TestClusterCheckpointFails(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 3)
	const np, iters = 4, 60

	// node2's agent runs CRIU through the wrapper (the pods' users run it
	// too, for dumps: the directory is world-readable).
	criu := testenv.RequireCRIU(t)
	wrapDir, err := os.MkdirTemp("", "cruz-criuwrap-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(wrapDir) })
	require.NoError(t, os.Chmod(wrapDir, 0o755))
	trigger := filepath.Join(wrapDir, "fail")
	wrapper := filepath.Join(wrapDir, "criu")
	require.NoError(t, os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\n[ -e %s ] && { echo 'injected CRIU failure' >&2; exit 1; }\nexec %s \"$@\"\n", trigger, criu)), 0o755))
	node2 := st.Nodes[1]
	cfg, err := os.ReadFile(node2.Config)
	require.NoError(t, err)
	require.Contains(t, string(cfg), `path = "criu"`)
	require.NoError(t, os.WriteFile(node2.Config, []byte(strings.Replace(string(cfg), `path = "criu"`, fmt.Sprintf("path = %q", wrapper), 1)), 0o644))
	r := c.clusterCmd("restart", "node2")
	require.Equal(t, 0, r.Code, "cruz cluster restart node2: %s", r.Stderr)
	st = c.status()

	run := n1.startAllreduce(u, dir, "faulty", np, iters)
	good := n1.checkpoint(u, "faulty")
	j := n1.status(u, "faulty")
	var victim api.Pod
	for _, p := range j.Pods {
		if p.Node == "node2" {
			victim = p
		}
	}
	require.NotEmpty(t, victim.Name, "a pod on node2")

	require.NoError(t, os.WriteFile(trigger, nil, 0o644))
	r = n1.cruz(u, "", "checkpoint", "faulty")
	require.NoError(t, os.Remove(trigger))
	require.NotEqual(t, 0, r.Code, "the checkpoint fails; stdout %s", r.Stdout)
	assert.Contains(t, r.Stderr, "node node2", "the error names the node")
	assert.Contains(t, r.Stderr, victim.Name, "the error names the pod")
	t.Logf("failed checkpoint: %s", firstLines(r.Stderr, 3))

	j = n1.status(u, "faulty")
	assert.Equal(t, api.StateRunning, j.State, "the job runs on")
	assert.Equal(t, good, j.LastCheckpoint, "the previous checkpoint stays the latest")
	out := run.wait(t, 2*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), check.Lines(out.Stdout), "the job finished right")

	requireRestoresRest(t, n1, u, dir, "faulty", good, np, iters)
	c.requireClean(t, st)
}

// requireRestoresRest restarts an mpi_allreduce job from checkpoint ckpt
// and checks that it prints the rest of the job's output, to its end.
func requireRestoresRest(t *testing.T, a *agent, u testenv.User, dir, job, ckpt string, np, iters int) {
	t.Helper()
	again := a.cruz(u, dir, "restart", "--checkpoint", ckpt, job)
	require.Equal(t, 0, again.Code, "restart from %s: %s", ckpt, again.Stderr)
	want := check.AllreduceOutput(np, iters)
	got := check.Lines(again.Stdout)
	require.NotEmpty(t, got)
	require.LessOrEqual(t, len(got), len(want))
	assert.Equal(t, want[len(want)-len(got):], got, "the run restored from %s prints the rest of the job", ckpt)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// nodeRequest sends a request to a node agent's TCP API from inside
// another node's network namespace (the only place the pod LAN is), signed
// with key for id and for node signFor unless key is nil, and returns the
// status and body.
func nodeRequest(t *testing.T, from cluster.Node, addr, signFor, method, path string, body []byte, key []byte, id api.Identity) (int, string) {
	t.Helper()
	type answer struct {
		code int
		body string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		runtime.LockOSThread() // the thread changes netns; it ends with the goroutine
		// ... unless it is the main thread, which Go cannot end: go back
		// to the test's netns before returning.
		orig, err := netns.Get()
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer orig.Close()
		defer netns.Set(orig) //nolint:errcheck // best effort; the thread ends anyway
		h, err := netns.GetFromPid(from.PID)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ch <- answer{err: err}
			return
		}
		req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(body))
		if err != nil {
			ch <- answer{err: err}
			return
		}
		if key != nil {
			if err := api.SignRequest(req, key, signFor, id, body, time.Now()); err != nil {
				ch <- answer{err: err}
				return
			}
		}
		// Dial here, on this thread, in the node's netns: an http.Client
		// would dial from another thread, in the test's own netns, and
		// the request would leave the machine by its default route.
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		req.Close = true
		if err := req.Write(conn); err != nil {
			ch <- answer{err: err}
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ch <- answer{code: resp.StatusCode, body: string(b)}
	}()
	a := <-ch
	require.NoError(t, a.err)
	return a.code, a.body
}

// TestClusterSecurity: node operations (what a coordinator asks of the
// agents) are refused to requests without a valid signature, to a signed
// request acting for a user who does not own the pods, and to users on the
// unix socket; a second user cannot checkpoint, migrate, restart, signal or
// remove the first user's job.
func TestClusterSecurity(t *testing.T) {
	c := upCluster(t, 2)
	st := c.status()
	n1 := c.node(t, st, "node1")
	node1, node2 := st.Nodes[0], st.Nodes[1]
	u := testenv.LookupUser(t, "cruzt1")
	other := testenv.LookupUser(t, "cruzt2")
	dir := testenv.TempDirFor(t, u)
	run := n1.startCruz(u, dir, "run", "--name", "mine", "--np", "2", "--", testenv.Bin(t, "mpi_allreduce"), "400", "100")
	run.waitOutput(t, "iter 2 ", 60*time.Second)
	j := n1.status(u, "mine")
	addr2 := fmt.Sprintf("%s:%d", node2.Addr, cluster.AgentPort)
	destroy := []byte(fmt.Sprintf(`{"job":%q}`, j.ID))
	key, err := os.ReadFile(st.KeyFile)
	require.NoError(t, err)

	t.Run("unsigned", func(t *testing.T) {
		code, body := nodeRequest(t, node1, addr2, node2.Name, http.MethodPost, "/v1/node/destroy", destroy, nil, api.Identity{})
		assert.Equal(t, http.StatusUnauthorized, code, body)
	})
	t.Run("wrong key", func(t *testing.T) {
		code, body := nodeRequest(t, node1, addr2, node2.Name, http.MethodPost, "/v1/node/destroy", destroy, bytes.Repeat([]byte("k"), 32), identity(u))
		assert.Equal(t, http.StatusUnauthorized, code, body)
	})
	t.Run("signed for another node", func(t *testing.T) {
		code, body := nodeRequest(t, node1, addr2, node1.Name, http.MethodPost, "/v1/node/destroy", destroy, key, identity(u))
		assert.Equal(t, http.StatusUnauthorized, code, body)
		assert.Contains(t, body, `the request is signed for node \"node1\", this is node \"node2\"`)
	})
	t.Run("signed for another user", func(t *testing.T) {
		code, body := nodeRequest(t, node1, addr2, node2.Name, http.MethodPost, "/v1/node/destroy", destroy, key, identity(other))
		assert.Equal(t, http.StatusForbidden, code, body)
		assert.Contains(t, body, "belong to uid")
	})
	t.Run("user on the unix socket", func(t *testing.T) {
		cmd := testenv.RunAs(u, "curl", "-s", "--unix-socket", node2.Socket, "-X", "POST", "-d", string(destroy), "http://cruzd/v1/node/destroy")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "curl: %s", out)
		assert.Contains(t, string(out), "for cruz agents only", "a user cannot call node operations directly")
	})
	logs, err := os.ReadFile(node2.Log)
	require.NoError(t, err)
	assert.Contains(t, string(logs), "refused a TCP API request", "refusals are logged")

	t.Run("another user", func(t *testing.T) {
		for _, args := range [][]string{
			{"checkpoint", j.ID},
			{"migrate", "--rank", "1", "--to", "node1", j.ID},
			{"restart", j.ID},
			{"signal", j.ID, "TERM"},
			{"rm", j.ID},
		} {
			r := n1.cruz(other, "", args...)
			assert.NotEqual(t, 0, r.Code, "cruzt2: cruz %v", args)
			assert.Contains(t, r.Stderr, "your own jobs", "cruzt2: cruz %v", args)
		}
	})
	// The job was not touched by any of it.
	assert.Equal(t, api.StateRunning, n1.status(u, "mine").State)
	require.Equal(t, 0, n1.cruz(u, "", "rm", "mine").Code)
	run.wait(t, time.Minute)
	c.requireClean(t, st)
}

// childWith returns a child of parent whose command line contains s, or 0.
func childWith(parent int, s string) int {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscan(p.Name(), &pid); err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
		var state string
		var ppid int
		if _, err := fmt.Sscan(rest, &state, &ppid); err != nil || ppid != parent {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte(s)) {
			return pid
		}
	}
	return 0
}

// TestClusterAgentKilledMidDump: the agent of a node that holds ranks of a
// job coordinated elsewhere is killed (SIGKILL) while it dumps them for a
// checkpoint. The checkpoint is reported failed; the pods on that node live
// on (their traffic held) until the node's agent is restarted, which takes
// them back and lets their traffic flow; the job finishes with the right
// result, and the previous checkpoint is still the latest and restores.
func TestClusterAgentKilledMidDump(t *testing.T) {
	c := upCluster(t, 3)
	st := c.status()
	n1 := c.node(t, st, "node1")
	node2 := st.Nodes[1]
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters = 4, 80

	run := n1.startAllreduce(u, dir, "crash", np, iters)
	good := n1.checkpoint(u, "crash")
	onNode2 := 0
	for _, p := range n1.status(u, "crash").Pods {
		if p.Node == "node2" {
			onNode2++
		}
	}
	require.Positive(t, onNode2, "node2 holds pods of the job")

	ck := n1.startCruz(u, "", "checkpoint", "crash")
	killed := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !killed; {
		if childWith(node2.PID, "criu") != 0 {
			require.NoError(t, unix.Kill(node2.PID, unix.SIGKILL))
			killed = true
			break
		}
		select {
		case <-ck.done:
			t.Fatalf("the checkpoint ended before node2 dumped anything: %s", ck.stderr.String())
		case <-time.After(2 * time.Millisecond):
		}
	}
	require.True(t, killed, "node2's agent started CRIU")
	r := ck.wait(t, 2*time.Minute)
	require.NotEqual(t, 0, r.Code, "the checkpoint fails: %s", r.Stdout)
	assert.Contains(t, r.Stderr, "node2")
	t.Logf("checkpoint with node2's agent killed: %s", firstLines(r.Stderr, 2))

	rr := c.clusterCmd("restart", "node2")
	require.Equal(t, 0, rr.Code, "cruz cluster restart node2: %s", rr.Stderr)
	out := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), check.Lines(out.Stdout), "the job finished right")
	logs, err := os.ReadFile(node2.Log)
	require.NoError(t, err)
	assert.Equal(t, onNode2, strings.Count(string(logs), "took back a pod"), "the new agent took back node2's pods")
	j := n1.status(u, "crash")
	assert.Equal(t, good, j.LastCheckpoint, "the previous checkpoint stays the latest")

	requireRestoresRest(t, n1, u, dir, "crash", good, np, iters)
	c.requireClean(t, c.status())
}

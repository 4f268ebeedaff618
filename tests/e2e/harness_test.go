// Package e2e runs Cruz end to end: a real cruzd (as root) with its own
// socket, run directory, pod bridge, subnet and store, real CRIU, real MPICH
// jobs in real namespaces, driven through the real cruz CLI as the
// unprivileged test users that `make users` creates.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// agentSeq makes each agent's bridge and subnet unique within the test run.
var agentSeq atomic.Int32

// agent is a private cruzd for one test.
type agent struct {
	t       *testing.T
	dir     string
	socket  string
	runDir  string
	store   string
	bridge  string
	subnet  string
	config  string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	env     []string // added to cruzd's environment
	addr    string   // the bridge's address (agentOptions.bridgeAddr), or ""
}

// agentOptions change the agent's config.
type agentOptions struct {
	criuPath  string   // criu.path; default: the system's CRIU
	extra     string   // TOML appended to the config
	storeTOML string   // keys put in the config's [store] table
	listen    string   // agent.listen: the TCP API's address; default none
	env       []string // added to cruzd's environment (e.g. NOTIFY_SOCKET)
	// bridgeAddr puts the subnet's first address on the pod bridge
	// (network.address, agent.addr) and takes pods' from its upper half;
	// BRIDGE_ADDR in extra stands for that address.
	bridgeAddr bool
}

// startAgent starts a private cruzd and stops it (and removes every trace)
// when the test ends. It needs root and CRIU, and skips loudly without them.
func startAgent(t *testing.T, opt agentOptions) *agent {
	t.Helper()
	a := newAgent(t, opt)
	a.start()
	return a
}

// newAgent is startAgent without the start: the agent's config and
// directory, cleaned up when the test ends.
func newAgent(t *testing.T, opt agentOptions) *agent {
	t.Helper()
	testenv.RequireRoot(t)
	criu := testenv.RequireCRIU(t)
	if opt.criuPath == "" {
		opt.criuPath = criu
	}
	n := agentSeq.Add(1)
	dir, err := os.MkdirTemp("/tmp", "cruz-e2e-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	a := &agent{t: t, dir: dir, runDir: filepath.Join(dir, "run"), store: filepath.Join(dir, "store"),
		bridge: fmt.Sprintf("cze%d_%d", os.Getpid()%10000, n), subnet: fmt.Sprintf("10.%d.%d.0/24", 220+os.Getpid()%30, n%250),
		logPath: filepath.Join(dir, "agent.log"), done: make(chan struct{}), env: opt.env}
	if len(a.bridge) > 15 {
		a.bridge = a.bridge[:15]
	}
	a.socket = filepath.Join(a.runDir, "cruzd.sock")
	a.config = filepath.Join(dir, "cruzd.toml")
	network := ""
	if opt.bridgeAddr {
		sub := netip.MustParsePrefix(a.subnet)
		a.addr = sub.Addr().Next().String()
		upper := sub.Addr().As4()
		upper[3] = 128
		network = fmt.Sprintf("address = %q\npool = %q\n", a.addr+"/24", netip.PrefixFrom(netip.AddrFrom4(upper), 25))
		opt.extra = strings.ReplaceAll(opt.extra, "BRIDGE_ADDR", a.addr)
	}
	cfg := fmt.Sprintf(`version = 1
[agent]
socket = %q
run_dir = %q
key_file = %q
log_level = "debug"
listen = %q
[network]
bridge = %q
subnet = %q
%s[store]
dir = %q
%s
[criu]
path = %q
timeout = "2m"
%s`, a.socket, a.runDir, filepath.Join(dir, "key", "cluster.key"), opt.listen, a.bridge, a.subnet, network, a.store, opt.storeTOML, opt.criuPath, opt.extra)
	require.NoError(t, os.WriteFile(a.config, []byte(cfg), 0o644))
	t.Cleanup(a.cleanup)
	return a
}

// start runs cruzd with the agent's config and waits until it answers.
func (a *agent) start() {
	a.t.Helper()
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(a.t, err)
	defer logf.Close()
	a.cmd = exec.Command(testenv.Bin(a.t, "cruzd"), "--config", a.config)
	a.cmd.Env = append(os.Environ(), a.env...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	require.NoError(a.t, a.cmd.Start())
	a.done = make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := api.NewClient(a.socket).Version(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-a.done:
			a.t.Fatalf("cruzd exited at start:\n%s", a.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	a.t.Fatalf("cruzd did not answer within 30s:\n%s", a.log())
}

// stop ends cruzd with SIGTERM (it ends its jobs' pods) and waits.
func (a *agent) stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
}

func (a *agent) log() string {
	b, _ := os.ReadFile(a.logPath)
	return string(b)
}

// cleanup stops the agent and removes everything it and the test made: the
// pods it could not remove itself, the bridge, the netns mount point, dirs.
func (a *agent) cleanup() {
	a.stop()
	// A stopped agent has ended every pod of its jobs: one that outlived it
	// is a leak (and is killed, so that it does not outlive the test).
	for _, pid := range a.ownPodProcesses() {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		a.t.Errorf("pod process %d (%s) outlived the agent; killing it", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	if a.t.Failed() {
		a.t.Logf("agent log (%s):\n%s", a.logPath, tail(a.log(), 80))
	}
	nsDir := filepath.Join(a.runDir, "netns")
	if entries, err := os.ReadDir(nsDir); err == nil {
		for _, e := range entries {
			p := filepath.Join(nsDir, e.Name())
			_ = unix.Unmount(p, unix.MNT_DETACH)
			_ = os.Remove(p)
		}
	}
	_ = unix.Unmount(nsDir, unix.MNT_DETACH)
	_ = exec.Command("ip", "link", "del", a.bridge).Run()
	if !a.t.Failed() {
		_ = os.RemoveAll(a.dir)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// result is a finished cruz command.
type result struct {
	Stdout, Stderr string
	Code           int
}

// cruz runs the cruz CLI as u against this agent and waits for it.
func (a *agent) cruz(u testenv.User, dir string, args ...string) result {
	a.t.Helper()
	c := a.startCruz(u, dir, args...)
	return c.wait(a.t, 5*time.Minute)
}

// cruzCmd is a cruz command running in the background.
type cruzCmd struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	code           int
}

func (a *agent) startCruz(u testenv.User, dir string, args ...string) *cruzCmd {
	a.t.Helper()
	return a.startCruzEnv(u, dir, nil, args...)
}

// startCruzEnv is startCruz with more environment variables for cruz (which
// cruz run passes on to the job).
func (a *agent) startCruzEnv(u testenv.User, dir string, env []string, args ...string) *cruzCmd {
	a.t.Helper()
	cmd := testenv.RunAs(u, testenv.Bin(a.t, "cruz"), args...)
	cmd.Env = append(append(cmd.Env, "CRUZ_SOCKET="+a.socket), env...)
	if dir != "" {
		cmd.Dir = dir
	}
	c := &cruzCmd{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.stdout, c.stderr
	require.NoError(a.t, cmd.Start())
	go func() {
		err := cmd.Wait()
		c.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			c.code = ee.ExitCode()
		} else if err != nil {
			c.code = -1
		}
		close(c.done)
	}()
	return c
}

func (c *cruzCmd) wait(t *testing.T, timeout time.Duration) result {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		t.Fatalf("cruz %v did not end within %s; stdout:\n%s\nstderr:\n%s", c.cmd.Args[1:], timeout, c.stdout.String(), c.stderr.String())
	}
	return result{Stdout: c.stdout.String(), Stderr: c.stderr.String(), Code: c.code}
}

// waitOutput waits until the command's stdout contains s.
func (c *cruzCmd) waitOutput(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(c.stdout.String(), s) {
			return
		}
		select {
		case <-c.done:
			t.Fatalf("cruz ended (status %d) before printing %q; stdout:\n%s\nstderr:\n%s", c.code, s, c.stdout.String(), c.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q in cruz's output within %s; stdout:\n%s\nstderr:\n%s", s, timeout, c.stdout.String(), c.stderr.String())
}

// runCommand runs cmd to its end, killing it after timeout (a test failure),
// and returns what it printed and its exit status.
func runCommand(t *testing.T, cmd *exec.Cmd, timeout time.Duration) result {
	t.Helper()
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not end within %s; stdout:\n%s\nstderr:\n%s", cmd.Args, timeout, stdout.String(), stderr.String())
	}
	res := result{Stdout: stdout.String(), Stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return res
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// status returns `cruz status --json JOB` parsed.
func (a *agent) status(u testenv.User, job string) api.Job {
	a.t.Helper()
	r := a.cruz(u, "", "status", "--json", job)
	require.Equal(a.t, 0, r.Code, "cruz status: %s", r.Stderr)
	var j api.Job
	require.NoError(a.t, json.Unmarshal([]byte(r.Stdout), &j), "cruz status --json printed: %s", r.Stdout)
	return j
}

// checkpoint takes a checkpoint and returns its id.
func (a *agent) checkpoint(u testenv.User, job string, extra ...string) string {
	a.t.Helper()
	r := a.cruz(u, "", append(append([]string{"checkpoint"}, extra...), job)...)
	require.Equal(a.t, 0, r.Code, "cruz checkpoint %s: %s", job, r.Stderr)
	id := strings.TrimSpace(r.Stdout)
	require.Regexp(a.t, `^ckpt-\d{4}$`, id)
	return id
}

// requireNoLeaks checks that nothing of any job is left on the node: no pod
// netns, no veth on the bridge, no process in a pod, no filter table, no
// half-written checkpoint, no CRIU.
func (a *agent) requireNoLeaks() {
	a.t.Helper()
	nsDir := filepath.Join(a.runDir, "netns")
	entries, _ := os.ReadDir(nsDir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Empty(a.t, names, "pod netns left in %s", nsDir)
	out, err := exec.Command("ip", "-o", "link", "show", "master", a.bridge).CombinedOutput()
	if err == nil {
		require.Empty(a.t, strings.TrimSpace(string(out)), "veths left on bridge %s", a.bridge)
	}
	// A pod process of this agent runs in a network namespace other than
	// the node's, with this agent's socket in its environment (cruz passes
	// its environment, CRUZ_SOCKET included, to the job).
	for _, pid := range a.ownPodProcesses() {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		a.t.Errorf("pod process %d (%s) is still running", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	jobs, _ := os.ReadDir(a.store)
	for _, j := range jobs {
		cks, _ := os.ReadDir(filepath.Join(a.store, j.Name()))
		for _, c := range cks {
			require.False(a.t, strings.HasPrefix(c.Name(), ".tmp-"), "half-written checkpoint %s/%s left", j.Name(), c.Name())
		}
	}
}

// ownPodProcesses lists the processes in this agent's pods: those in a
// network namespace other than the node's with this agent's CRUZ_SOCKET in
// their environment (cruz passes its environment to the job).
func (a *agent) ownPodProcesses() []int {
	return podProcesses(testHostNet, "CRUZ_SOCKET="+a.socket)
}

// testHostNet is the inode of the network namespace the tests run in, read
// once before any test runs: later, /proc/self/ns/net is the main thread's,
// which a test that enters a node's namespace on a locked thread might be.
var testHostNet = func() uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		panic("stat /proc/self/ns/net: " + err.Error())
	}
	return st.Ino
}()

// podProcesses lists processes of the test users (uid >= 1000) that run in
// a network namespace other than hostNet and, if env is given, have it in
// their environment.
func podProcesses(hostNet uint64, env ...string) []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscan(p.Name(), &pid); err != nil {
			continue
		}
		var st, ns unix.Stat_t
		if unix.Stat(filepath.Join("/proc", p.Name()), &st) != nil || st.Uid < 1000 {
			continue
		}
		if unix.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &ns) != nil || ns.Ino == hostNet {
			continue
		}
		if len(env) == 0 {
			pids = append(pids, pid)
			continue
		}
		environ, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "environ"))
		for _, kv := range bytes.Split(environ, []byte{0}) {
			if string(kv) == env[0] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

package agent

// Fake nodes for the coordinator's unit tests: they answer node operations
// the way a node would (a dump writes image files into the pending
// checkpoint's pod directory of the real store), record every call in
// order, and can be told to fail, hang or be down. No root, no namespaces,
// no CRIU.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/store"
	"github.com/cruz-hpc/cruz/policy"
	"github.com/stretchr/testify/require"
)

// fakeCall is one node operation a fake node was asked.
type fakeCall struct {
	Node     string
	Op       api.NodeOp
	Pods     []string
	Continue bool
	// OutputOnly: a block of what the pods send only.
	OutputOnly bool
	// InputOnly: a resume of what reaches the pods only.
	InputOnly bool
	// At and End: when the node was asked and when it answered; Lat: the
	// simulated time the operation took there (the scale benchmark's).
	At, End time.Time
	Lat     time.Duration
}

func (c fakeCall) String() string {
	s := c.Node + " " + string(c.Op)
	if len(c.Pods) > 0 {
		s += " " + strings.Join(c.Pods, ",")
	}
	if c.Continue {
		s += " +cont"
	}
	if c.OutputOnly {
		s += " +output"
	}
	if c.InputOnly {
		s += " +input"
	}
	return s
}

// fakeCluster is the set of fake nodes an agent under test talks to.
type fakeCluster struct {
	st    *store.Store
	mu    sync.Mutex
	nodes map[string]*fakeNode
	calls []fakeCall
	// latency, if set, is how long a node takes for op (the scale
	// benchmark simulates nodes' own work and the network with it).
	latency func(op api.NodeOp) time.Duration
}

// fakeNode is one node: which operations fail or hang there, whether it is
// down, and which pods it holds.
type fakeNode struct {
	c    *fakeCluster
	name string
	// guarded by c.mu
	down    bool
	fail    map[api.NodeOp]error
	hang    map[api.NodeOp]bool
	pods    map[string]bool // pod name -> held here
	exited  chan struct{}   // closed: every wait answers (exit 0)
	dumpDir map[string]string
	// onResume, if set, runs when the node is asked to resume its pods
	// (e.g. to spoil a checkpoint between its dump and its commit).
	onResume func()
	// queue is what the node's agent answers to GET /v1/queue?local=1.
	queue []api.QueueJob
}

func newFakeCluster(st *store.Store, names ...string) *fakeCluster {
	fc := &fakeCluster{st: st, nodes: map[string]*fakeNode{}}
	for _, n := range names {
		fc.nodes[n] = &fakeNode{c: fc, name: n, fail: map[api.NodeOp]error{}, hang: map[api.NodeOp]bool{},
			pods: map[string]bool{}, exited: make(chan struct{}), dumpDir: map[string]string{}}
	}
	return fc
}

func (fc *fakeCluster) dial(node string, _ api.Identity) (nodeConn, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	n, ok := fc.nodes[node]
	if !ok {
		return nil, api.Errorf(api.ErrInvalid, "unknown node %q", node)
	}
	return n, nil
}

// node returns the fake node name, for the test to set it up.
func (fc *fakeCluster) node(name string) *fakeNode { return fc.nodes[name] }

// set changes a fake node under the cluster's lock.
func (fc *fakeCluster) set(fn func()) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fn()
}

// log returns the calls so far, as "node op pods" strings, in order.
func (fc *fakeCluster) log() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	out := make([]string, len(fc.calls))
	for i, c := range fc.calls {
		out[i] = c.String()
	}
	return out
}

// opsOn lists the operations node was asked, in order, but the watchers'
// (wait, pods), which run beside the protocol.
func (fc *fakeCluster) opsOn(node string) []api.NodeOp {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	var out []api.NodeOp
	for _, c := range fc.calls {
		if c.Node == node && c.Op != api.OpWait && c.Op != api.OpPods {
			out = append(out, c.Op)
		}
	}
	return out
}

// callsOf lists the calls of op, in order.
func (fc *fakeCluster) callsOf(op api.NodeOp) []fakeCall {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	var out []fakeCall
	for _, c := range fc.calls {
		if c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

var errFakeDown = errors.New("connection refused (fake node down)")

func (n *fakeNode) Do(ctx context.Context, op api.NodeOp, req api.NodeRequest) (api.NodeResponse, error) {
	c := n.c
	c.mu.Lock()
	pods := append([]string(nil), req.Pods...)
	for _, r := range req.Restore {
		pods = append(pods, r.Spec.Name)
	}
	if req.Spec != nil {
		pods = append(pods, req.Spec.Name)
	}
	sort.Strings(pods)
	var lat time.Duration
	if c.latency != nil && op != api.OpWait {
		lat = c.latency(op)
	}
	call := len(c.calls)
	c.calls = append(c.calls, fakeCall{Node: n.name, Op: op, Pods: pods, Continue: req.Continue, OutputOnly: req.OutputOnly, InputOnly: req.InputOnly,
		At: time.Now(), Lat: lat})
	down, fail, hang, onResume := n.down, n.fail[op], n.hang[op], n.onResume
	c.mu.Unlock()
	if lat > 0 {
		select {
		case <-time.After(lat):
		case <-ctx.Done():
		}
	}
	defer func() {
		c.mu.Lock()
		if call < len(c.calls) { // a benchmark may have cleared the log
			c.calls[call].End = time.Now()
		}
		c.mu.Unlock()
	}()
	if op == api.OpResume && onResume != nil {
		onResume()
	}
	switch {
	case down:
		return api.NodeResponse{}, fmt.Errorf("node %s: %w", n.name, errFakeDown)
	case hang && op != api.OpWait:
		<-ctx.Done()
		return api.NodeResponse{}, fmt.Errorf("node %s: %w", n.name, ctx.Err())
	case fail != nil:
		return api.NodeResponse{}, fmt.Errorf("node %s: %w", n.name, fail)
	}
	switch op {
	case api.OpStart:
		n.hold(req.Spec.Name, true)
	case api.OpDump:
		var resp api.NodeResponse
		for _, p := range req.Pods {
			dir, err := c.st.PendingPodDir(req.Job, req.Images, p)
			if err != nil {
				return api.NodeResponse{}, err
			}
			if err := os.WriteFile(filepath.Join(dir, "pages-1.img"), []byte("pages of "+p), 0o600); err != nil {
				return api.NodeResponse{}, err
			}
			c.mu.Lock()
			n.dumpDir[p] = dir
			c.mu.Unlock()
			resp.Dumps = append(resp.Dumps, api.PodDump{Pod: p, DumpMS: 1, Pipes: map[string]string{"pipe:[7]": "stdout"}})
		}
		return resp, nil
	case api.OpRestore:
		for _, r := range req.Restore {
			n.hold(r.Spec.Name, true)
		}
	case api.OpDestroy:
		for _, p := range req.Pods {
			n.hold(p, false)
		}
		return api.NodeResponse{Empty: true}, nil
	case api.OpWait:
		select {
		case <-n.exited:
			return api.NodeResponse{ExitCode: 0}, nil
		case <-ctx.Done():
			return api.NodeResponse{}, ctx.Err()
		}
	case api.OpPods:
		var resp api.NodeResponse
		for _, p := range req.Pods {
			resp.Pods = append(resp.Pods, api.PodStatus{Name: p, Role: api.RoleRank, PID: 100})
		}
		return resp, nil
	}
	return api.NodeResponse{}, nil
}

func (n *fakeNode) hold(pod string, on bool) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	if on {
		n.pods[pod] = true
	} else {
		delete(n.pods, pod)
	}
}

// held lists the pods the node holds, by name.
func (n *fakeNode) held() []string {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	var out []string
	for p := range n.pods {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Output is a node's output log of a job: empty, open until ctx ends.
func (n *fakeNode) Output(ctx context.Context, _ string, _ int64) (io.ReadCloser, error) {
	r, w := io.Pipe()
	go func() { <-ctx.Done(); w.Close() }()
	return r, nil
}

func (n *fakeNode) Ping(context.Context) error {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	if n.down {
		return errFakeDown
	}
	return nil
}

func (n *fakeNode) Job(context.Context, string) (api.Job, error) {
	return api.Job{}, api.Errorf(api.ErrNotFound, "no such job on fake node %s", n.name)
}

func (n *fakeNode) Call(_ context.Context, method, path string, _, out any) error {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	if n.down {
		return errFakeDown
	}
	if method == "GET" && path == "/v1/queue?local=1" {
		*out.(*api.Queue) = api.Queue{Jobs: n.queue}
		return nil
	}
	return errors.New("fake nodes pass nothing on")
}

// newTestAgent is an agent of node n1 in a cluster of nodes (n1 first)
// whose nodes are all fakes, with a real store and run directory in
// temporary directories.
func newTestAgent(t testing.TB, nodes ...string) (*Agent, *fakeCluster) {
	t.Helper()
	cfg := config.Default()
	cfg.Agent.RunDir = t.TempDir()
	cfg.Store.Dir = filepath.Join(t.TempDir(), "store")
	cfg.CRIU.Timeout = config.Duration{Duration: 200 * time.Millisecond}
	cfg.Policy.RestartBase = config.Duration{Duration: time.Millisecond}
	for i, n := range nodes[1:] {
		cfg.Cluster.Peers = append(cfg.Cluster.Peers, fmt.Sprintf("%s=10.0.0.%d:7170", n, i+2))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(cfg.Agent.RunDir, "jobs"), 0o711))
	key := []byte("0123456789abcdef0123456789abcdef")
	st, err := store.Open(cfg.Store.Dir, key)
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := newAgent(cfg, log, st, key, nodes[0], nil)
	fc := newFakeCluster(st, nodes...)
	a.dial = fc.dial
	a.dumpGrace = 100 * time.Millisecond
	return a, fc
}

// addJob registers a running MPI job of the test agent's user whose pods
// are placed as where says (pod name suffix -> node: "mpiexec", "r0", ...),
// held by the fake nodes.
func addJob(t testing.TB, a *Agent, fc *fakeCluster, id string, where map[string]string) *job {
	t.Helper()
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	rec := jobRecord{ID: id, Name: id, User: "tester", UID: uid, GID: gid, State: api.StateRunning,
		Request: api.RunRequest{NP: len(where) - 1, Argv: []string{"app"}, Dir: "/"},
		Policy:  jobPolicy{Mode: policy.ModeOff, Keep: 3, Restart: "auto"}}
	ip := netip.MustParseAddr("10.203.0.10")
	names := make([]string, 0, len(where))
	for suffix := range where {
		names = append(names, suffix)
	}
	sort.Strings(names) // mpiexec, r0, r1, ...
	for _, suffix := range names {
		role, rank := api.RoleRank, 0
		if suffix == "mpiexec" {
			role, rank = api.RoleMpiexec, -1
		} else {
			fmt.Sscanf(suffix, "r%d", &rank)
		}
		ip = ip.Next()
		spec := api.PodSpec{Name: id + "-" + suffix, Hostname: id + "-" + suffix, Role: role, Rank: rank,
			Addr: netip.PrefixFrom(ip, 16), UID: uid, GID: gid, Node: where[suffix]}
		rec.Pods = append(rec.Pods, spec)
		fc.node(where[suffix]).hold(spec.Name, true)
	}
	require.NoError(t, os.MkdirAll(a.jobDir(id), 0o700))
	out, err := joblog.Open(filepath.Join(a.jobDir(id), "output"), uid)
	require.NoError(t, err)
	t.Cleanup(out.Close)
	j := &job{rec: rec, out: out, live: true, gen: 1}
	a.mu.Lock()
	a.jobs[id] = j
	a.mu.Unlock()
	require.NoError(t, a.persist(j))
	return j
}

// latest is the id of the job's newest complete checkpoint ("" if none).
func latest(t *testing.T, a *Agent, id string) string {
	t.Helper()
	m, _, _, err := a.store.Latest(id)
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	require.NoError(t, err)
	if m == nil {
		return ""
	}
	return m.ID
}

// leftovers lists what a half-done operation left in the job's store
// directory (.tmp-, xfer- and .del- entries).
func leftovers(t *testing.T, a *Agent, id string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(a.store.Root(), id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") || strings.HasPrefix(e.Name(), ".del-") || strings.Contains(e.Name(), "xfer-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// Package agent is cruzd, the per-node root daemon of Cruz: the API server
// (HTTP on a unix socket that identifies users by the socket's peer
// credentials, and on an optional TCP port for other agents, signed with the
// cluster key), and the coordinator of the jobs started on it: their
// records, output and event logs, the checkpoint protocol across nodes,
// restarts, live migration, the policy engine (periodic checkpoints,
// failure detection, automatic recovery) and Slurm steps. It reaches the
// pods of its jobs only through node operations (nodeConn: this node's
// internal/node directly, other nodes over TCP); it never touches a pod,
// a namespace or CRIU itself.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/cruz-hpc/cruz/internal/criu"
	"github.com/cruz-hpc/cruz/internal/metrics"
	"github.com/cruz-hpc/cruz/internal/node"
	"github.com/cruz-hpc/cruz/internal/pod"
	"github.com/cruz-hpc/cruz/internal/proc"
	"github.com/cruz-hpc/cruz/internal/slurm"
	"github.com/cruz-hpc/cruz/internal/store"
	"golang.org/x/sys/unix"
)

// caller is who a request acts for: from the unix socket's peer credentials
// (the kernel vouches for them), or, over TCP, the identity a signed
// request carries.
type caller = api.Identity

// rootCaller is the agent acting as root (for itself, not for a user).
var rootCaller = caller{UID: 0, GID: 0, User: "root"}

// Agent is one node's cruzd.
type Agent struct {
	cfg         config.Config
	log         *slog.Logger
	store       *store.Store
	key         []byte // cluster key: signs manifests and TCP API requests
	criuVersion int
	// criuPath and criuFrom are the CRIU the agent runs and where it
	// comes from (criu.Source, with the bundled one's recorded version).
	criuPath, criuFrom string
	node               string
	subnet             netip.Prefix
	pool               netip.Prefix // where pod addresses come from, inside subnet
	// local is this node's pods (the node side of the protocol).
	local *node.Node
	// dial reaches a node's side: dialNode, or fakes in tests.
	dial dialer
	// dumpGrace is what a node gets beyond CRIU's timeout to answer a dump.
	dumpGrace time.Duration
	// self is cruzd's executable: Open MPI's remote shell in jobs' pods.
	self string
	// runLock is this agent's hold on its run directory (nil in unit tests).
	runLock *RunLock
	// metrics records what happens to the jobs (metrics.Nop when
	// metrics.listen is empty); metricsHandler serves them.
	metrics        metrics.Recorder
	metricsHandler http.Handler
	// showStep asks slurmctld about a Slurm step (slurm.ShowStep, or a
	// fake in tests).
	showStep func(ctx context.Context, id string) (slurm.Step, error)

	mu   sync.Mutex
	jobs map[string]*job // jobs this agent coordinates
	// clients of the other nodes' TCP API, by node and identity.
	clients map[string]*api.Client
	// eventsMu serialises appends to the jobs' event logs.
	eventsMu sync.Mutex
}

// New takes the run directory (one agent per run directory), checks the
// node (CRIU version and kernel support, the pod bridge, the run and store
// directories), then cleans up after an agent that died: every pod of a job
// that was running is killed and removed, and the job is marked lost, to be
// restarted from its latest checkpoint.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// A second agent on the same run directory would "clean up" the first
	// one's pods: refuse before touching anything.
	lock, err := LockRunDir(cfg.Agent.RunDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Release()
		}
	}()
	// Holds and dumps run at the agent's priority (agent.nice); pods reset
	// theirs to 0 (pod.Init), and CRIU restores each task's own.
	if err := proc.SetNice(cfg.Agent.Nice); err != nil {
		log.Warn("cannot set the agent's priority (agent.nice): holds of jobs' traffic may last longer on a busy node", "nice", cfg.Agent.Nice, "err", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	// Two run directories with one socket: the same refusal.
	if err := checkSocketFree(cfg.Agent.Socket); err != nil {
		return nil, err
	}
	if err := pod.CheckFilter(); err != nil {
		return nil, err
	}
	// CRIU's kernel checks connect over loopback: in a node's own new
	// network namespace (cruz cluster up) lo starts down.
	if err := pod.SetLinkUp("lo"); err != nil {
		return nil, err
	}
	// Which CRIU: criu.path as configured, or (the default "criu") the one
	// on PATH when it is >= 4.2, else the one the cruz package carries.
	choice := criu.Choose(ctx, cfg.CRIU.Path, self, func(ctx context.Context, p string) (int, error) {
		return (&criu.Swrk{Path: p, LogLevel: cfg.CRIU.LogLevel, Self: self}).Version(ctx)
	})
	if choice.Skipped != "" {
		log.Warn("not using the criu on PATH: using the CRIU bundled with cruz instead", "why", choice.Skipped, "bundled", choice.Path)
	}
	runner := &criu.Swrk{Path: choice.Path, LogLevel: cfg.CRIU.LogLevel, Self: self}
	v, err := runner.Check(ctx)
	if err != nil {
		return nil, err
	}
	criuFrom := choice.Source.String()
	if choice.Source == criu.SourceBundled && choice.Bundled.Version != "" {
		criuFrom += " " + choice.Bundled.Version
	}
	log.Info("using CRIU", "version", criu.VersionString(v), "path", choice.Path, "from", criuFrom)
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{cfg.Agent.RunDir, 0o755}, {filepath.Join(cfg.Agent.RunDir, "jobs"), 0o711}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("create run directory %s: %w (agent.run_dir in the config)", d.path, err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("chmod %s: %w", d.path, err)
		}
	}
	if err := pod.SharedRoot(log); err != nil {
		return nil, err
	}
	key, err := store.LoadKey(cfg.Agent.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load the manifest signing key (agent.key_file): %w", err)
	}
	st, err := store.Open(cfg.Store.Dir, key)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint store (store.dir): %w", err)
	}
	switch l := st.Layout(); {
	case l.Marked:
		log.Debug("checkpoint store", "store", st.Root(), "layout", l.Version, "written_by", l.WrittenBy)
	case l.Found == 0:
		log.Info("new checkpoint store: recorded its layout", "store", st.Root(), "layout", l.Version, "written_by", l.WrittenBy)
	default:
		log.Info("checkpoint store without a layout marker (layout 1): read as it is and marked with this cruzd's layout (docs/store-layout.md)", "store", st.Root(), "layout", l.Version, "written_by", l.WrittenBy)
	}
	if cfg.Agent.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Agent.Hostname)); err != nil {
			return nil, fmt.Errorf("set the host name to %q (agent.hostname): %w", cfg.Agent.Hostname, err)
		}
	}
	if _, err := pod.EnsureBridge(cfg.Network.Bridge, cfg.Network.MTU); err != nil {
		return nil, err
	}
	if cfg.Network.Address != "" {
		if err := pod.SetBridgeAddress(cfg.Network.Bridge, cfg.Network.Address); err != nil {
			return nil, err
		}
	}
	if cfg.Network.Uplink != "" {
		if err := pod.AttachUplink(ctx, cfg.Network.Uplink, cfg.Network.Bridge, pod.UplinkWait); err != nil {
			return nil, err
		}
	}
	name, _ := os.Hostname()
	host := &pod.Host{Bridge: cfg.Network.Bridge, MTU: cfg.Network.MTU, CRIU: runner, Self: self, Log: log, MaxFileBytes: cfg.Store.MaxFileBytes}
	a := newAgent(cfg, log, st, key, name, host)
	a.criuVersion = v
	a.criuPath, a.criuFrom = choice.Path, criuFrom
	a.self = self
	a.runLock = lock
	if cfg.Metrics.Listen != "" {
		m := a.newMetrics()
		a.metrics, a.metricsHandler = m, m.Handler()
	}
	if err := a.reconcile(ctx); err != nil {
		return nil, fmt.Errorf("reconcile state left by the previous agent: %w", err)
	}
	log.Info("agent ready", "criu", criu.VersionString(v), "criu_from", criuFrom, "node", name, "bridge", cfg.Network.Bridge,
		"subnet", cfg.Network.Subnet, "store", cfg.Store.Dir, "jobs", len(a.jobs))
	return a, nil
}

// newAgent wires an agent of node name from its parts, checking nothing:
// New (the real one) and the unit tests (with a fake host and dialer) use it.
func newAgent(cfg config.Config, log *slog.Logger, st *store.Store, key []byte, name string, host node.PodHost) *Agent {
	a := &Agent{
		cfg: cfg, log: log, store: st, key: key, node: name,
		subnet:    cfg.SubnetPrefix(),
		pool:      cfg.PoolPrefix(),
		jobs:      map[string]*job{},
		clients:   map[string]*api.Client{},
		dumpGrace: 15 * time.Second,
		metrics:   metrics.Nop{},
	}
	a.dial = a.dialNode
	a.showStep = func(ctx context.Context, id string) (slurm.Step, error) {
		return slurm.ShowStep(ctx, cfg.Agent.SlurmConf, id)
	}
	a.local = node.New(node.Config{Name: name, RunDir: cfg.Agent.RunDir, Subnet: a.subnet, CRIUTimeout: cfg.CRIU.Timeout.Duration,
		Store: st, Host: host, Local: localSinks{a}, Peers: peerJobAsker{a}, Log: log, MaxLogBytes: cfg.Output.MaxLogBytes,
		SlurmCgroups: slurmCgroups(cfg.Agent.SlurmCgroups, name)})
	return a
}

// CRIUVersion is the version of the CRIU the agent checked at start.
func (a *Agent) CRIUVersion() string { return criu.VersionString(a.criuVersion) }

// CRIUSource is the path of the agent's CRIU and where it comes from, e.g.
// "/usr/lib/cruz/criu, bundled with cruz 4.2.1-1 (Debian testing)".
func (a *Agent) CRIUSource() string {
	if a.criuPath == "" {
		return ""
	}
	return a.criuPath + ", " + a.criuFrom
}

// Shutdown ends every running job of this agent: its pods (on every node)
// are killed and removed and the job is marked lost, so that nothing
// outlives the agent and the job can be restarted from its latest
// checkpoint; the pods this node holds for jobs coordinated elsewhere are
// removed too.
func (a *Agent) Shutdown(ctx context.Context) {
	for _, j := range a.jobList() {
		j.op.Lock()
		if j.hasPods() {
			a.log.Info("ending job at agent shutdown", "job", j.id())
			a.teardown(j, api.Frame{Error: "the cruz agent on this node stopped; restart the job from its latest checkpoint with: cruz restart " + j.id()})
			a.setState(j, api.StateLost, "the agent stopped while the job ran")
		}
		j.op.Unlock()
	}
	// Pods of jobs that other nodes coordinate go too: nothing of a job
	// outlives an agent that was told to stop (a crash is another matter:
	// see internal/node's Reconcile).
	a.local.Shutdown(ctx)
}

func (a *Agent) jobDir(id string) string { return filepath.Join(a.cfg.Agent.RunDir, "jobs", id) }

// localSinks tells this node's pods of a job coordinated here where their
// output goes: the job's output log.
type localSinks struct{ a *Agent }

func (l localSinks) OutputSink(id string) (node.OutputSink, api.Identity, bool) {
	l.a.mu.Lock()
	j, ok := l.a.jobs[id]
	l.a.mu.Unlock()
	if !ok {
		return nil, api.Identity{}, false
	}
	return l.a.jobSink(j), j.owner(), true
}

// peerJobAsker lets this node ask a coordinator about pods it took back.
type peerJobAsker struct{ a *Agent }

func (p peerJobAsker) Job(ctx context.Context, nodeName, id string) (api.Job, error) {
	nc, err := p.a.conn(nodeName, rootCaller)
	if err != nil {
		return api.Job{}, err
	}
	return nc.Job(ctx, id)
}

// CloseInheritedFiles marks every descriptor above stderr that this process
// inherited as close-on-exec, so none of them leaks into a pod or CRIU.
// Go does not do this for descriptors it did not open itself.
func CloseInheritedFiles() error {
	return unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}

// slurmCgroups are agent.slurm_cgroups with the node's name for %n.
func slurmCgroups(roots []string, node string) []string {
	out := make([]string, len(roots))
	for i, r := range roots {
		out[i] = strings.ReplaceAll(r, "%n", node)
	}
	return out
}

// Package agent is cruzd, the per-node root daemon of Cruz. It owns every
// privileged operation: pods (network, pid, uts and ipc namespaces), the
// packet filter that holds a pod's traffic, CRIU dumps and restores, and the
// checkpoint store. Users reach it through an HTTP API on a unix socket that
// identifies them by the socket's peer credentials; agents and coordinators
// may also use it over TCP (agent.listen), signed with the cluster key.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/cruz-hpc/cruz/internal/store"
	"golang.org/x/sys/unix"
)

// Version is the agent's version, reported by GET /v1/version.
const Version = "0.1.0"

// Agent is one node's cruzd.
type Agent struct {
	cfg         config.Config
	log         *slog.Logger
	store       *store.Store
	key         []byte // cluster key: signs manifests and TCP API requests
	host        *podHost
	criuVersion int
	node        string
	subnet      netip.Prefix
	pool        netip.Prefix // where pod addresses come from, inside subnet

	mu   sync.Mutex
	jobs map[string]*job // jobs this agent coordinates
	// sets are the pods on this node, by job, whatever node coordinates.
	sets map[string]*podSet
	// clients of the other nodes' TCP API, by node and identity.
	clients map[string]*api.Client
	// eventsMu serialises appends to the jobs' event logs.
	eventsMu sync.Mutex
}

// New checks the node (CRIU version and kernel support, the pod bridge, the
// run and store directories), then cleans up after an agent that died:
// every pod of a job that was running is killed and removed, and the job is
// marked lost, to be restarted from its latest checkpoint.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	// A second agent on the same node would "clean up" the first one's
	// pods: refuse before touching anything.
	if err := checkSocketFree(cfg.Agent.Socket); err != nil {
		return nil, err
	}
	if err := checkFilter(); err != nil {
		return nil, err
	}
	// CRIU's kernel checks connect over loopback: in a node's own new
	// network namespace (cruz cluster up) lo starts down.
	if err := setLinkUp("lo"); err != nil {
		return nil, err
	}
	criu := &criuRunner{path: cfg.CRIU.Path, logLevel: cfg.CRIU.LogLevel, self: self}
	v, err := criu.check(ctx)
	if err != nil {
		return nil, err
	}
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
	if err := sharedRoot(log); err != nil {
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
	if cfg.Agent.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Agent.Hostname)); err != nil {
			return nil, fmt.Errorf("set the host name to %q (agent.hostname): %w", cfg.Agent.Hostname, err)
		}
	}
	if _, err := ensureBridge(cfg.Network.Bridge, cfg.Network.MTU); err != nil {
		return nil, err
	}
	if cfg.Network.Address != "" {
		if err := setBridgeAddress(cfg.Network.Bridge, cfg.Network.Address); err != nil {
			return nil, err
		}
	}
	if cfg.Network.Uplink != "" {
		if err := attachUplink(ctx, cfg.Network.Uplink, cfg.Network.Bridge, uplinkWait); err != nil {
			return nil, err
		}
	}
	node, _ := os.Hostname()
	a := &Agent{
		cfg: cfg, log: log, store: st, key: key, criuVersion: v, node: node,
		subnet:  cfg.SubnetPrefix(),
		pool:    cfg.PoolPrefix(),
		host:    &podHost{runDir: cfg.Agent.RunDir, bridge: cfg.Network.Bridge, mtu: cfg.Network.MTU, criu: criu, self: self},
		jobs:    map[string]*job{},
		sets:    map[string]*podSet{},
		clients: map[string]*api.Client{},
	}
	if err := a.reconcile(ctx); err != nil {
		return nil, fmt.Errorf("reconcile state left by the previous agent: %w", err)
	}
	log.Info("agent ready", "criu", versionString(v), "node", node, "bridge", cfg.Network.Bridge,
		"subnet", cfg.Network.Subnet, "store", cfg.Store.Dir, "jobs", len(a.jobs))
	return a, nil
}

// CRIUVersion is the version of the CRIU the agent checked at start.
func (a *Agent) CRIUVersion() string { return versionString(a.criuVersion) }

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
	// see adopt_linux.go).
	a.mu.Lock()
	var jobs []string
	for id := range a.sets {
		jobs = append(jobs, id)
	}
	a.mu.Unlock()
	for _, id := range jobs {
		a.log.Info("removing pods at agent shutdown", "job", id)
		_, _ = a.nodeOp(ctx, rootCaller, opDestroy, nodeReq{Job: id})
	}
}

func (a *Agent) jobList() []*job {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*job, 0, len(a.jobs))
	for _, j := range a.jobs {
		out = append(out, j)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].rec.Created.Before(out[k].rec.Created) })
	return out
}

func (a *Agent) jobDir(id string) string { return filepath.Join(a.cfg.Agent.RunDir, "jobs", id) }

// reconcile loads the job records a previous agent left, takes back the
// live pods of jobs that other nodes coordinate (adopt_linux.go), removes
// every other pod still on the node and every veth that no pod explains, and
// removes half-written checkpoints of its own jobs.
func (a *Agent) reconcile(ctx context.Context) error {
	keepVeths := map[string]bool{}
	sets, _ := os.ReadDir(a.setsDir())
	for _, e := range sets {
		dir := filepath.Join(a.setsDir(), e.Name())
		var rec setRecord
		if b, err := os.ReadFile(filepath.Join(dir, "set.json")); err == nil && json.Unmarshal(b, &rec) == nil {
			if rec.Coordinator != "" && rec.Coordinator != a.node && rec.Job == e.Name() {
				if veths := a.readopt(dir, rec); veths != nil {
					for _, v := range veths {
						keepVeths[v] = true
					}
					continue
				}
			}
			// The pods' network namespaces die with their last process.
			for pod, ino := range rec.Netns {
				a.log.Warn("removing a pod that ran when the previous agent ended", "job", rec.Job, "pod", pod, "coordinator", rec.Coordinator)
				killNetns(ino)
			}
		}
		_ = os.RemoveAll(dir)
	}
	entries, err := os.ReadDir(filepath.Join(a.cfg.Agent.RunDir, "jobs"))
	if err != nil {
		return err
	}
	var remote, autoRecover []*job
	for _, e := range entries {
		dir := filepath.Join(a.cfg.Agent.RunDir, "jobs", e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "job.json"))
		if err != nil {
			a.log.Warn("removing job directory without a readable record", "dir", dir, "err", err)
			_ = os.RemoveAll(dir)
			continue
		}
		var rec jobRecord
		if err := json.Unmarshal(b, &rec); err != nil || rec.ID != e.Name() {
			a.log.Warn("removing job directory with a bad record", "dir", dir, "err", err)
			_ = os.RemoveAll(dir)
			continue
		}
		outPath, err := a.outputPath(rec)
		if err != nil {
			return err
		}
		out, err := openOutputLog(outPath, rec.UID)
		if err != nil {
			return err
		}
		j := &job{rec: rec, out: out}
		if holdsPods(rec.State) {
			// A checkpoint or migration this agent had under way died
			// with it. (Only such jobs: a job this node once ran may be
			// checkpointed by another coordinator right now.)
			if n, err := a.store.CleanTemp(rec.ID); err != nil {
				a.log.Warn("cleaning half-written checkpoints", "job", rec.ID, "err", err)
			} else if n > 0 {
				a.log.Info("removed half-written checkpoints", "job", rec.ID, "count", n)
			}
			j.rec.State, j.rec.Message = api.StateLost, "the agent restarted while the job ran; restart it from its latest checkpoint"
			if rec.Policy.Restart == "auto" {
				j.rec.Message = "the agent restarted while the job ran; rolling it back to its latest checkpoint (cruz events " + rec.ID + ")"
				j.out.append(api.Frame{Error: "the cruz agent coordinating the job restarted; the job is rolled back to its latest checkpoint: follow it with cruz attach " + rec.ID})
				autoRecover = append(autoRecover, j)
			} else {
				j.out.append(api.Frame{Error: "the cruz agent restarted while the job ran; restart it from its latest checkpoint with: cruz restart " + rec.ID})
			}
			if err := a.persist(j); err != nil {
				return err
			}
			for _, p := range rec.Pods {
				if p.Node != "" && p.Node != a.node && rec.Policy.Restart != "auto" {
					remote = append(remote, j)
					break
				}
			}
		}
		a.jobs[rec.ID] = j
	}
	if n, err := a.store.CleanDeleted(); err != nil {
		a.log.Warn("finishing interrupted deletions in the store", "err", err)
	} else if n > 0 {
		a.log.Info("finished interrupted deletions in the store", "count", n)
	}
	// Every other veth left on the pod bridge is a leftover.
	for _, name := range hostVeths(a.cfg.Network.Bridge) {
		if keepVeths[name] {
			continue
		}
		a.log.Info("removing leftover veth", "veth", name)
		_ = deleteLinkByName(name)
	}
	// The pods the lost jobs had on other nodes go too, once those nodes
	// answer (in the background: they may be starting as well).
	for _, j := range remote {
		go a.removeRemotePods(j)
	}
	// Jobs whose policy says so are rolled back by themselves (their
	// pods elsewhere are removed first, in the same step).
	for _, j := range autoRecover {
		go a.recoverLost(j)
	}
	return nil
}

// removeRemotePods asks the other nodes to remove a lost job's pods, for up
// to a minute.
func (a *Agent) removeRemotePods(j *job) {
	for try := 0; try < 60; try++ {
		j.op.Lock()
		if j.hasPods() {
			j.op.Unlock()
			return // restarted meanwhile
		}
		_, err := a.onNodes(context.Background(), j, opDestroy, func(node string, pods []string) nodeReq {
			if node == a.node {
				return nodeReq{Job: j.id()}
			}
			return nodeReq{Job: j.id(), Pods: pods}
		})
		j.op.Unlock()
		if err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	a.log.Warn("could not remove the pods of a lost job on other nodes", "job", j.id())
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// persist writes the job's record atomically.
func (a *Agent) persist(j *job) error {
	j.saving.Lock()
	defer j.saving.Unlock()
	j.mu.Lock()
	b, err := json.MarshalIndent(j.rec, "", "  ")
	id := j.rec.ID
	j.mu.Unlock()
	if err != nil {
		return err
	}
	dir := a.jobDir(id)
	tmp := filepath.Join(dir, ".job.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save job %s: %w", id, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "job.json")); err != nil {
		return fmt.Errorf("save job %s: %w", id, err)
	}
	return nil
}

// usedAddrs lists the pod addresses held by jobs that have pods or may be
// restarted into them (stopped or lost jobs keep their addresses, which move
// with their ranks).
// cancelledAddrHold is how long a cancelled Slurm step's pod addresses stay
// reserved for a requeue to resume it with.
const cancelledAddrHold = 24 * time.Hour

func (a *Agent) usedAddrs(except string) map[netip.Addr]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	used := map[netip.Addr]string{}
	for id, j := range a.jobs {
		if id == except {
			continue
		}
		j.mu.Lock()
		// A Slurm step that was cancelled is resumed by a requeue, which
		// comes soon or never (scancel): its addresses are kept for it a day.
		expired := j.rec.State == api.StateCancelled && time.Since(j.rec.Updated) > cancelledAddrHold
		if holdsAddrs(j.rec.State) && !expired {
			for _, p := range j.rec.Pods {
				used[p.Addr.Addr()] = id
			}
		}
		j.mu.Unlock()
	}
	return used
}

// allocAddrs picks n free addresses of the node's pool (network.pool, by
// default the whole pod subnet), with the subnet's prefix length. The
// subnet's network, first host (left for a gateway) and broadcast
// addresses, and the pool's own network and broadcast addresses, are never
// used. Caller holds allocMu.
func (a *Agent) allocAddrs(n int) ([]netip.Prefix, error) {
	out := pickAddrs(a.subnet, a.pool, a.usedAddrs(""), n)
	if len(out) < n {
		if a.pool != a.subnet {
			return nil, fmt.Errorf("this node's address pool %s (of subnet %s) has fewer than %d free addresses: remove old jobs (cruz rm) or widen network.pool", a.pool, a.subnet, n)
		}
		return nil, fmt.Errorf("the pod subnet %s has fewer than %d free addresses: remove old jobs (cruz rm) or widen network.subnet", a.subnet, n)
	}
	return out, nil
}

// pickAddrs returns up to n addresses of pool that are not in used, as
// allocAddrs describes.
func pickAddrs(subnet, pool netip.Prefix, used map[netip.Addr]string, n int) []netip.Prefix {
	if !pool.IsValid() {
		pool = subnet
	}
	subNet := subnet.Masked().Addr()
	gateway := subNet.Next()
	var out []netip.Prefix
	for ip := pool.Masked().Addr().Next(); pool.Contains(ip) && len(out) < n; ip = ip.Next() {
		if !pool.Contains(ip.Next()) || !subnet.Contains(ip.Next()) { // a broadcast address
			break
		}
		if ip == gateway || !subnet.Contains(ip) {
			continue
		}
		if _, taken := used[ip]; !taken {
			out = append(out, netip.PrefixFrom(ip, subnet.Bits()))
		}
	}
	return out
}

// lookup finds a job by id or, failing that, by name among the caller's jobs,
// and checks that the caller may act on it.
func (a *Agent) lookup(c caller, ref string) (*job, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	j, ok := a.jobs[ref]
	if !ok {
		var matches []*job
		for _, cand := range a.jobs {
			if cand.rec.Name == ref && (c.UID == 0 || cand.rec.UID == c.UID) {
				matches = append(matches, cand)
			}
		}
		if len(matches) == 0 {
			if sj, ok := a.lookupSlurmLocked(c, ref); ok {
				matches = append(matches, sj)
			}
		}
		switch len(matches) {
		case 0:
			return nil, errorf(errNotFound, "job %q does not exist on this node (cruz status lists your jobs)", ref)
		case 1:
			j = matches[0]
		default:
			ids := make([]string, len(matches))
			for i, m := range matches {
				ids[i] = m.rec.ID
			}
			sort.Strings(ids)
			return nil, errorf(errBadRequest, "job name %q matches several jobs (%v): use the job id", ref, ids)
		}
	}
	if c.UID != 0 && j.rec.UID != c.UID {
		return nil, errorf(errForbidden, "job %s belongs to user %s: you (uid %d) can act only on your own jobs", j.rec.ID, j.rec.User, c.UID)
	}
	return j, nil
}

// Errors that the API maps to HTTP statuses.
var (
	errBadRequest = errors.New("bad request")
	errNotFound   = errors.New("not found")
	errForbidden  = errors.New("forbidden")
	errConflict   = errors.New("conflict")
)

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

func errorf(kind error, format string, a ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, a...)}
}

// CloseInheritedFiles marks every descriptor above stderr that this process
// inherited as close-on-exec, so none of them leaks into a pod or CRIU.
// Go does not do this for descriptors it did not open itself.
func CloseInheritedFiles() error {
	return unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}

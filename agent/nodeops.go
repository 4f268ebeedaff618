package agent

// Node operations: what a job's coordinator asks of every node that holds
// some of the job's pods. The coordinator is the agent a job was started or
// restarted on; it keeps the job's record and output and drives the Cruz
// protocol. The pods themselves live in a podSet on each node, whatever node
// coordinates: the coordinator calls its own node directly and the other
// nodes over their TCP API, with the same requests (nodeReq), signed with the
// cluster key for the job's owner, so a node acts on a pod only for its owner.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/store"
)

// nodeReq is one node operation on a job's pods on a node.
type nodeReq struct {
	Job         string `json:"job"`
	Coordinator string `json:"coordinator,omitempty"`
	// Pods names the pods concerned; empty means all of the job's pods on
	// the node (block, resume, destroy, release).
	Pods []string `json:"pods,omitempty"`
	// Spec is the pod to start (start).
	Spec *podSpec `json:"spec,omitempty"`
	// Images is the checkpoint or transfer id dumped into (dump) or restored
	// from (restore).
	Images string `json:"images,omitempty"`
	// Stop leaves the dumped pods stopped (dump): for a checkpoint that ends
	// the job, or a migration.
	Stop bool `json:"stop,omitempty"`
	// Continue (resume) also sends SIGCONT to the pods' processes: after a
	// dump that failed or left them stopped, not after one that kept them
	// running (a signal during the next dump would make it fail).
	Continue bool `json:"continue,omitempty"`
	// Restore lists the pods to restore, each with its spec and stdio keys.
	Restore []restorePod `json:"restore,omitempty"`
	Signal  int          `json:"signal,omitempty"`
}

type restorePod struct {
	Spec  podSpec           `json:"spec"`
	Pipes map[string]string `json:"pipes,omitempty"`
}

// nodeResp answers a node operation.
type nodeResp struct {
	Dumps []podDump `json:"dumps,omitempty"`
	// OutputEnd is where the node's output log of the job ended once the
	// destroyed pods' output was all written (destroy).
	OutputEnd int64 `json:"output_end,omitempty"`
	// ExitCode of the pod waited for (wait).
	ExitCode int        `json:"exit_code"`
	Pods     []podState `json:"pods,omitempty"`
	// Empty: the job has no pods left on the node (destroy).
	Empty bool `json:"empty,omitempty"`
}

type podDump struct {
	Pod    string            `json:"pod"`
	DumpMS int64             `json:"dump_ms"`
	Pipes  map[string]string `json:"pipes,omitempty"`
}

type podState struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	PID    int    `json:"pid"`
	Exited bool   `json:"exited,omitempty"`
	Code   int    `json:"code,omitempty"`
}

// Node operations.
const (
	opStart   = "start"
	opBlock   = "block"
	opDump    = "dump"
	opResume  = "resume"
	opDestroy = "destroy"
	opRestore = "restore"
	opRelease = "release"
	opWait    = "wait"
	opSignal  = "signal"
	opPods    = "pods"
)

// errPodGone: the pod waited for is not on the node (any more).
var errPodGone = errors.New("pod is not on this node")

// podSet is one job's pods on this node.
type podSet struct {
	job         string
	uid, gid    uint32
	coordinator string
	dir         string // run_dir/sets/<job>
	sink        outputSink
	out         *outputLog // nil when this node coordinates (sink is the job's log)

	// op serialises dumps with what undoes them: a resume that comes
	// while a dump still runs (the coordinator gave up on it) waits for it.
	op   sync.Mutex
	mu   sync.Mutex
	pods map[string]*podRuntime
	// saving serialises writes of set.json.
	saving sync.Mutex
}

// setRecord is set.json: what an agent that restarts must know of a set.
type setRecord struct {
	Job         string             `json:"job"`
	UID         uint32             `json:"uid"`
	GID         uint32             `json:"gid"`
	Coordinator string             `json:"coordinator"`
	Netns       map[string]uint64  `json:"netns"`
	Specs       map[string]podSpec `json:"specs"`
}

func (s *podSet) list(names []string) ([]*podRuntime, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(names) == 0 {
		out := make([]*podRuntime, 0, len(s.pods))
		for _, p := range s.pods {
			out = append(out, p)
		}
		sort.Slice(out, func(i, k int) bool { return out[i].spec.Name < out[k].spec.Name })
		return out, nil
	}
	out := make([]*podRuntime, 0, len(names))
	for _, n := range names {
		p, ok := s.pods[n]
		if !ok {
			return nil, errorf(errNotFound, "pod %s of job %s is not on node %s", n, s.job, "this node")
		}
		out = append(out, p)
	}
	return out, nil
}

func (a *Agent) setsDir() string { return filepath.Join(a.cfg.Agent.RunDir, "sets") }

// podSetFor returns the job's set, creating it for the caller if needed.
func (a *Agent) podSetFor(c caller, job, coordinator string) (*podSet, error) {
	if err := store.ValidateJobID(job); err != nil {
		return nil, errorf(errBadRequest, "%v", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.sets[job]; ok {
		if c.UID != 0 && s.uid != c.UID {
			return nil, errorf(errForbidden, "the pods of job %s on node %s belong to uid %d, not %d", job, a.node, s.uid, c.UID)
		}
		return s, nil
	}
	s := &podSet{job: job, uid: c.UID, gid: c.GID, coordinator: coordinator, dir: filepath.Join(a.setsDir(), job),
		pods: map[string]*podRuntime{}}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pod set directory: %w", err)
	}
	if j, ok := a.jobs[job]; ok && coordinator == a.node {
		s.uid, s.gid = j.rec.UID, j.rec.GID
		s.sink = a.jobSink(j)
	} else {
		out, err := openOutputLog(filepath.Join(s.dir, "output"), s.uid)
		if err != nil {
			return nil, err
		}
		s.out = out
		s.sink = func(stream string, data []byte) {
			if data != nil {
				out.append(api.Frame{Stream: stream, Data: data})
			}
		}
	}
	a.sets[job] = s
	return s, nil
}

// podSetOf returns the job's set if the caller may act on it.
func (a *Agent) podSetOf(c caller, job string) (*podSet, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sets[job]
	if !ok {
		return nil, errorf(errNotFound, "job %s has no pods on node %s", job, a.node)
	}
	if c.UID != 0 && s.uid != c.UID {
		return nil, errorf(errForbidden, "the pods of job %s on node %s belong to uid %d: you (uid %d) can act only on your own jobs", job, a.node, s.uid, c.UID)
	}
	return s, nil
}

// persistSet saves the set's record, or removes the set when it is empty.
func (a *Agent) persistSet(s *podSet) {
	s.saving.Lock()
	defer s.saving.Unlock()
	s.mu.Lock()
	rec := setRecord{Job: s.job, UID: s.uid, GID: s.gid, Coordinator: s.coordinator, Netns: map[string]uint64{}, Specs: map[string]podSpec{}}
	for name, p := range s.pods {
		rec.Netns[name] = p.ns.ino
		rec.Specs[name] = p.spec
	}
	empty := len(s.pods) == 0
	s.mu.Unlock()
	if empty {
		a.mu.Lock()
		if a.sets[s.job] == s {
			delete(a.sets, s.job)
		}
		a.mu.Unlock()
		if s.out != nil {
			s.out.close()
		}
		_ = os.RemoveAll(s.dir)
		return
	}
	b, _ := json.Marshal(rec)
	tmp := filepath.Join(s.dir, ".set.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, "set.json"))
		if err != nil {
			a.log.Error("saving pod set", "job", s.job, "err", err)
		}
	}
}

// nodeOp carries out one node operation for caller c.
func (a *Agent) nodeOp(ctx context.Context, c caller, op string, req nodeReq) (nodeResp, error) {
	if op == opStart || op == opRestore {
		return a.nodeCreate(ctx, c, op, req)
	}
	s, err := a.podSetOf(c, req.Job)
	if err != nil {
		if op == opDestroy && errors.Is(err, errNotFound) {
			return nodeResp{}, nil // already gone
		}
		return nodeResp{}, err
	}
	pods, err := s.list(req.Pods)
	if err != nil {
		if op != opDestroy {
			return nodeResp{}, err
		}
		pods, _ = s.list(nil) // destroy what is there of them
		pods = only(pods, req.Pods)
	}
	switch op {
	case opBlock:
		return nodeResp{}, parallel(pods, func(p *podRuntime) error { return blockPodTraffic(ctx, p.nsPath) })
	case opDump:
		s.op.Lock()
		defer s.op.Unlock()
		return a.nodeDump(ctx, s, pods, req)
	case opResume:
		s.op.Lock()
		defer s.op.Unlock()
		if req.Continue {
			for _, p := range pods {
				p.resumeStopped()
			}
			// A dump cut short (CRIU killed, a task some other tracer
			// held) can leave a task stopped only once the tracer lets
			// go: look again a few times, for stopped tasks only, and
			// never while a dump of the set runs.
			go func() {
				for _, d := range []time.Duration{500 * time.Millisecond, 2 * time.Second, 5 * time.Second} {
					time.Sleep(d)
					if !s.op.TryLock() {
						continue
					}
					for _, p := range pods {
						p.continueStopped()
					}
					s.op.Unlock()
				}
			}()
		}
		return nodeResp{}, parallel(pods, func(p *podRuntime) error { return unblockPodTraffic(ctx, p.nsPath) })
	case opRelease:
		return nodeResp{}, a.releasePods(ctx, pods)
	case opDestroy:
		var wg sync.WaitGroup
		for _, p := range pods {
			wg.Add(1)
			go func(p *podRuntime) { defer wg.Done(); a.host.destroy(p) }(p)
		}
		wg.Wait()
		var end int64
		if s.out != nil {
			end = s.out.offset()
		}
		s.mu.Lock()
		for _, p := range pods {
			if s.pods[p.spec.Name] == p {
				delete(s.pods, p.spec.Name)
			}
		}
		empty := len(s.pods) == 0
		s.mu.Unlock()
		a.persistSet(s)
		return nodeResp{OutputEnd: end, Empty: empty}, nil
	case opWait:
		if len(pods) != 1 {
			return nodeResp{}, errorf(errBadRequest, "wait takes exactly one pod")
		}
		select {
		case <-pods[0].exited:
			return nodeResp{ExitCode: pods[0].exitCode()}, nil
		case <-ctx.Done():
			return nodeResp{}, ctx.Err()
		}
	case opSignal:
		if req.Signal <= 0 || req.Signal > 64 {
			return nodeResp{}, errorf(errBadRequest, "signal %d is not a valid signal number", req.Signal)
		}
		for _, p := range pods {
			sig := syscall.Signal(req.Signal)
			if terminatesByDefault(sig) && !handlesSignal(p.pid, sig) {
				sig = syscall.SIGKILL
			}
			if err := p.signal(sig); err != nil {
				return nodeResp{}, err
			}
		}
		return nodeResp{}, nil
	case opPods:
		var out nodeResp
		for _, p := range pods {
			st := podState{Name: p.spec.Name, Role: p.spec.Role, PID: p.pid}
			select {
			case <-p.exited:
				st.Exited, st.Code = true, p.exitCode()
			default:
			}
			out.Pods = append(out.Pods, st)
		}
		return out, nil
	}
	return nodeResp{}, errorf(errNotFound, "unknown node operation %q", op)
}

func only(pods []*podRuntime, names []string) []*podRuntime {
	if len(names) == 0 {
		return pods
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []*podRuntime
	for _, p := range pods {
		if want[p.spec.Name] {
			out = append(out, p)
		}
	}
	return out
}

// nodeCreate starts a new pod, or restores pods from images, on this node.
func (a *Agent) nodeCreate(ctx context.Context, c caller, op string, req nodeReq) (nodeResp, error) {
	var specs []podSpec
	if op == opStart {
		if req.Spec == nil {
			return nodeResp{}, errorf(errBadRequest, "start needs a pod spec")
		}
		specs = []podSpec{*req.Spec}
	} else {
		for _, r := range req.Restore {
			specs = append(specs, r.Spec)
		}
	}
	if len(specs) == 0 {
		return nodeResp{}, errorf(errBadRequest, "no pod given")
	}
	for _, sp := range specs {
		if err := store.ValidatePodName(sp.Name); err != nil || !strings.HasPrefix(sp.Name, req.Job+"-") {
			return nodeResp{}, errorf(errBadRequest, "pod name %q is not a pod of job %s", sp.Name, req.Job)
		}
		// A pod runs as the user the request acts for, never as another.
		if c.UID != 0 && (sp.UID != c.UID || sp.GID != c.GID) {
			return nodeResp{}, errorf(errForbidden, "pod %s would run as uid %d gid %d, but the request acts for uid %d", sp.Name, sp.UID, sp.GID, c.UID)
		}
		if !a.subnet.Contains(sp.Addr.Addr()) || sp.Addr.Bits() != a.subnet.Bits() {
			return nodeResp{}, errorf(errBadRequest, "pod %s address %s is not in this node's pod subnet %s", sp.Name, sp.Addr, a.subnet)
		}
	}
	if req.Coordinator == "" {
		req.Coordinator = a.node
	}
	owner := c
	if c.UID == 0 {
		owner = caller{UID: specs[0].UID, GID: specs[0].GID, Groups: specs[0].Groups}
	}
	allocMu.Lock()
	s, err := a.podSetFor(owner, req.Job, req.Coordinator)
	if err != nil {
		allocMu.Unlock()
		return nodeResp{}, err
	}
	if err := a.checkFreeHere(req.Job, specs); err != nil {
		allocMu.Unlock()
		a.persistSet(s)
		return nodeResp{}, err
	}
	s.mu.Lock()
	for _, sp := range specs {
		if _, dup := s.pods[sp.Name]; dup {
			s.mu.Unlock()
			allocMu.Unlock()
			return nodeResp{}, errorf(errConflict, "pod %s already runs on node %s", sp.Name, a.node)
		}
	}
	s.mu.Unlock()
	allocMu.Unlock()

	var made []*podRuntime
	var mu sync.Mutex
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, sp := range specs {
		wg.Add(1)
		go func(i int, sp podSpec) {
			defer wg.Done()
			var p *podRuntime
			var err error
			if op == opStart {
				p, err = a.host.start(ctx, sp, s.sink)
			} else {
				p, err = a.restoreOne(ctx, s, req, sp, req.Restore[i].Pipes)
			}
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			made = append(made, p)
			mu.Unlock()
		}(i, sp)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, p := range made {
			a.host.destroy(p)
		}
		a.persistSet(s)
		return nodeResp{}, err
	}
	s.mu.Lock()
	for _, p := range made {
		s.pods[p.spec.Name] = p
	}
	s.mu.Unlock()
	a.persistSet(s)
	return nodeResp{}, nil
}

// checkFreeHere refuses pods whose address another job's pods use on this
// node. Caller holds allocMu.
func (a *Agent) checkFreeHere(job string, specs []podSpec) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, other := range a.sets {
		if id == job {
			continue
		}
		other.mu.Lock()
		for _, p := range other.pods {
			for _, sp := range specs {
				if p.spec.Addr.Addr() == sp.Addr.Addr() {
					other.mu.Unlock()
					return errorf(errConflict, "address %s of pod %s is in use on node %s by job %s", sp.Addr.Addr(), sp.Name, a.node, id)
				}
			}
		}
		other.mu.Unlock()
	}
	return nil
}

// restoreOne restores one pod from the images of a checkpoint or transfer
// in the shared store, into a new netns whose traffic stays blocked.
func (a *Agent) restoreOne(ctx context.Context, s *podSet, req nodeReq, sp podSpec, pipes map[string]string) (*podRuntime, error) {
	var images string
	if strings.HasPrefix(req.Images, "xfer-") {
		dir, err := a.store.TransferDir(req.Job, req.Images)
		if err != nil {
			return nil, errorf(errBadRequest, "%v", err)
		}
		images = filepath.Join(dir, sp.Name)
	} else {
		if err := store.ValidateCheckpointID(req.Images); err != nil {
			return nil, errorf(errBadRequest, "%v", err)
		}
		images = filepath.Join(a.store.Root(), req.Job, req.Images, sp.Name)
	}
	work := filepath.Join(s.dir, "criu", "restore-"+req.Images, sp.Name)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	p, err := a.host.restore(ctx, sp, images, work, pipes, s.sink, a.cfg.CRIU.Timeout.Duration)
	if err != nil {
		return nil, fmt.Errorf("on node %s: %w", a.node, err)
	}
	os.RemoveAll(work)
	return p, nil
}

// nodeDump dumps the pods into the pending checkpoint (or transfer) whose
// pod directories the coordinator made in the shared store.
func (a *Agent) nodeDump(ctx context.Context, s *podSet, pods []*podRuntime, req nodeReq) (nodeResp, error) {
	res := make([]podDump, len(pods))
	idx := map[*podRuntime]int{}
	for i, p := range pods {
		idx[p] = i
	}
	err := parallel(pods, func(p *podRuntime) error {
		dir, err := a.store.PendingPodDir(req.Job, req.Images, p.spec.Name)
		if err != nil {
			return err
		}
		work := filepath.Join(s.dir, "criu", req.Images, p.spec.Name)
		if err := os.MkdirAll(work, 0o700); err != nil {
			return err
		}
		opts := dumpOptions{Pid: p.pid, ImagesDir: dir, WorkDir: work,
			NetnsPath: p.nsPath, KeepRunning: !req.Stop, UID: p.spec.UID, GID: p.spec.GID, Timeout: a.cfg.CRIU.Timeout.Duration}
		st, err := a.host.criu.dump(ctx, opts)
		for try := 1; try <= 3 && err != nil && transientDumpError(err) && ctx.Err() == nil; try++ {
			// CRIU found a socket's receive queue changing under it: data
			// that was already past the filter when the pod was blocked
			// (in the socket's backlog) reached the queue while CRIU read
			// it. CRIU resumed the pod; the backlog is drained by now, so
			// dump again.
			a.log.Info("dump again after a transient TCP repair error", "pod", p.spec.Name, "try", try, "err", firstLine(err.Error()))
			_ = os.RemoveAll(dir)
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
			st, err = a.host.criu.dump(ctx, opts)
		}
		if err != nil {
			return fmt.Errorf("pod %s on node %s: %w", p.spec.Name, a.node, err)
		}
		os.RemoveAll(work)
		pipes := map[string]string{}
		for k, v := range p.pipes {
			pipes[k] = v
		}
		res[idx[p]] = podDump{Pod: p.spec.Name, DumpMS: st.Duration.Milliseconds(), Pipes: pipes}
		return nil
	})
	if err != nil {
		return nodeResp{}, err
	}
	return nodeResp{Dumps: res}, nil
}

// releasePods lets restored (or migrated) pods' traffic flow, pushes the
// data their TCP sockets hold, and tells the LAN where their addresses now
// live.
func (a *Agent) releasePods(ctx context.Context, pods []*podRuntime) error {
	if err := parallel(pods, func(p *podRuntime) error { return unblockPodTraffic(ctx, p.nsPath) }); err != nil {
		return err
	}
	for _, p := range pods {
		if err := announcePod(p.nsPath, p.spec.Addr.Addr()); err != nil {
			a.log.Warn("gratuitous ARP", "pod", p.spec.Name, "err", err)
		}
	}
	for _, p := range pods {
		pushPendingTCP(p.ns.ino)
	}
	return nil
}

// nodeHandler serves POST /v1/node/{op}: only to other agents (requests
// signed with the cluster key), never to users on the unix socket.
func (a *Agent) handleNodeOp(w http.ResponseWriter, r *http.Request, c caller) error {
	if !fromPeer(r.Context()) {
		return errorf(errForbidden, "node operations are for cruz agents only (signed with the cluster key over the TCP API)")
	}
	var req nodeReq
	if err := decode(r, &req); err != nil {
		return err
	}
	op := r.PathValue("op")
	ctx := r.Context()
	if op != opWait {
		// A dump or restore must not be cut short because the
		// coordinator's connection broke: it is undone by abort.
		ctx = context.WithoutCancel(ctx)
	}
	resp, err := a.nodeOp(ctx, c, op, req)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// handleNodeOutput streams what a job's pods on this node print, from an
// offset of the node's log, for the job's coordinator.
func (a *Agent) handleNodeOutput(w http.ResponseWriter, r *http.Request, c caller) error {
	if !fromPeer(r.Context()) {
		return errorf(errForbidden, "node operations are for cruz agents only (signed with the cluster key over the TCP API)")
	}
	s, err := a.podSetOf(c, r.PathValue("job"))
	if err != nil {
		return err
	}
	if s.out == nil {
		return errorf(errConflict, "job %s is coordinated by this node: attach to it instead", s.job)
	}
	var from int64
	if v := r.URL.Query().Get("from"); v != "" {
		if _, err := fmt.Sscanf(v, "%d", &from); err != nil || from < 0 {
			return errorf(errBadRequest, "from=%q is not an offset", v)
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	if flusher != nil {
		flusher.Flush()
	}
	_ = s.out.followOffsets(r.Context(), from, func(f api.Frame, end int64) error {
		if err := enc.Encode(nodeFrame{Frame: f, End: end}); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	return nil
}

// nodeFrame is a frame of a node's output log with the offset it ends at.
type nodeFrame struct {
	api.Frame
	End int64 `json:"end"`
}

// peerKey marks a request that came over the TCP API, signed with the
// cluster key: only agents hold the key.
type peerKey struct{}

func fromPeer(ctx context.Context) bool {
	v, _ := ctx.Value(peerKey{}).(bool)
	return v
}

// nodeTimeout bounds a node operation that is not a dump, restore or wait
// (those get criu.timeout more).
const nodeTimeout = 10 * time.Second

// transientDumpError: CRIU's TCP repair read a receive queue while it was
// still changing; the same dump a moment later succeeds.
func transientDumpError(err error) bool {
	return strings.Contains(err.Error(), "libsoccr_save() failed") || strings.Contains(err.Error(), "soccr.c")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

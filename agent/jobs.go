package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/store"
	"github.com/cruz-hpc/cruz/launcher"
	"golang.org/x/sys/unix"
)

// jobRecord is what the agent remembers of a job (job.json in its run
// directory) and what a checkpoint keeps of it (the manifest's spec).
type jobRecord struct {
	ID       string         `json:"id"`
	Name     string         `json:"name"`
	User     string         `json:"user"`
	UID      uint32         `json:"uid"`
	GID      uint32         `json:"gid"`
	Groups   []uint32       `json:"groups,omitempty"`
	Request  api.RunRequest `json:"request"`
	State    string         `json:"state"`
	Message  string         `json:"message,omitempty"`
	ExitCode *int           `json:"exit_code,omitempty"`
	Pods     []podSpec      `json:"pods"`
	Created  time.Time      `json:"created"`
	Updated  time.Time      `json:"updated"`
	// LastCheckpoint is the newest checkpoint this agent committed.
	LastCheckpoint string `json:"last_checkpoint,omitempty"`
	// Netns maps each live pod to its network namespace's inode, so that
	// an agent that restarts after a crash can find and remove the pods.
	Netns map[string]uint64 `json:"netns,omitempty"`
	// OutputStart is where the current run's frames start in the output
	// log: a restart's client is streamed from there.
	OutputStart int64 `json:"output_start"`
}

// holdsPods: the job has (or had, when the agent died) pods on the node.
func holdsPods(state string) bool {
	return state == api.StateStarting || state == api.StateRunning || state == api.StateRestoring
}

// holdsAddrs: the job's pod addresses stay reserved for it.
func holdsAddrs(state string) bool {
	return holdsPods(state) || state == api.StateStopped || state == api.StateLost
}

// job is a job known to this agent.
type job struct {
	// op serialises operations that change the job's pods: start,
	// checkpoint, restart, removal. A checkpoint request that finds it
	// taken is refused rather than queued.
	op sync.Mutex
	// mu guards rec and pods.
	mu   sync.Mutex
	rec  jobRecord
	pods map[string]*podRuntime
	out  *outputLog
	// ending is set while the agent itself stops the pods (stop-checkpoint,
	// removal), so that the exit of PID 1 is not reported as the job's end.
	ending bool
}

func (j *job) id() string { return j.rec.ID }

func (j *job) hasPods() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.pods) > 0
}

func (j *job) state() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rec.State
}

// mainPod is the pod whose PID 1's exit ends the job: mpiexec, or the only
// pod of a plain job.
func (j *job) mainPod() *podRuntime {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, p := range j.pods {
		if p.spec.Role != "rank" {
			return p
		}
	}
	return nil
}

func (j *job) podList() []*podRuntime {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]*podRuntime, 0, len(j.pods))
	for _, s := range j.rec.Pods {
		if p := j.pods[s.Name]; p != nil {
			out = append(out, p)
		}
	}
	return out
}

func (a *Agent) setState(j *job, state, msg string) {
	j.mu.Lock()
	j.rec.State, j.rec.Message, j.rec.Updated = state, msg, time.Now().UTC()
	j.mu.Unlock()
	if err := a.persist(j); err != nil {
		a.log.Error("saving job state", "job", j.id(), "err", err)
	}
}

var jobNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$`)

// maxPodsPerJob bounds a job's pods on one node.
const maxPodsPerJob = 256

func validateRun(req *api.RunRequest) error {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return errorf(errBadRequest, "no command given: cruz run [--np N] -- COMMAND ARGS...")
	}
	if req.Plain && req.NP == 0 {
		req.NP = 1
	}
	if req.NP < 1 || req.NP > maxPodsPerJob {
		return errorf(errBadRequest, "--np %d is out of range: give a number of ranks from 1 to %d", req.NP, maxPodsPerJob)
	}
	if req.Plain && req.NP != 1 {
		return errorf(errBadRequest, "a plain (non-MPI) job runs in one pod: drop --np or --plain")
	}
	if req.Name == "" {
		req.Name = filepath.Base(req.Argv[0])
		if !jobNameRE.MatchString(req.Name) {
			req.Name = "job"
		}
	}
	if !jobNameRE.MatchString(req.Name) {
		return errorf(errBadRequest, "job name %q is not valid: use 1 to 40 letters, digits, '.', '_' or '-', starting with a letter or digit", req.Name)
	}
	if !filepath.IsAbs(req.Dir) {
		return errorf(errBadRequest, "working directory %q must be an absolute path", req.Dir)
	}
	for _, kv := range req.Env {
		if !strings.Contains(kv, "=") || strings.HasPrefix(kv, "=") || strings.ContainsRune(kv, 0) {
			return errorf(errBadRequest, "environment entry %q is not KEY=VALUE", kv)
		}
	}
	return nil
}

func newJobID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// allocMu serialises address allocation with the registration of the job
// that takes the addresses.
var allocMu sync.Mutex

// Run creates a job for caller and starts it. It returns once every pod is
// up (or the job failed to start, with the reason).
func (a *Agent) Run(ctx context.Context, c caller, req api.RunRequest) (*job, error) {
	if err := validateRun(&req); err != nil {
		return nil, err
	}
	npods := req.NP + 1
	if req.Plain {
		npods = 1
	}
	id := newJobID()
	allocMu.Lock()
	addrs, err := a.allocAddrs(npods)
	if err != nil {
		allocMu.Unlock()
		return nil, errorf(errConflict, "%v", err)
	}
	now := time.Now().UTC()
	rec := jobRecord{ID: id, Name: req.Name, User: c.User, UID: c.UID, GID: c.GID, Groups: c.Groups,
		Request: req, State: api.StateStarting, Created: now, Updated: now}
	env := append(append([]string{}, req.Env...), a.cfg.MPI.Env...)
	mk := func(name, role string, rank int, addr netip.Prefix, argv []string) podSpec {
		return podSpec{Name: name, Hostname: name, Role: role, Rank: rank, Addr: addr, Argv: argv,
			Env: env, Dir: req.Dir, UID: c.UID, GID: c.GID, Groups: c.Groups}
	}
	if req.Plain {
		// mpi.env applies here too: an MPICH program run with one rank
		// (a singleton) must stay off shared memory, which would be a
		// deleted file in /dev/shm for CRIU to carry.
		rec.Pods = []podSpec{mk(id+"-main", "main", 0, addrs[0], req.Argv)}
	} else {
		rec.Pods = append(rec.Pods, mk(id+"-mpiexec", "mpiexec", -1, addrs[0], nil))
		hosts := make([]string, req.NP)
		for r := 0; r < req.NP; r++ {
			rec.Pods = append(rec.Pods, mk(fmt.Sprintf("%s-r%d", id, r), "rank", r, addrs[r+1], nil))
			hosts[r] = addrs[r+1].Addr().String()
		}
		rec.Pods[0].Argv = launcher.MpiexecArgv(a.cfg.MPI.Mpiexec, hosts, req.NP, req.Argv)
	}
	if err := os.MkdirAll(a.jobDir(id), 0o700); err != nil {
		allocMu.Unlock()
		return nil, fmt.Errorf("create job directory: %w", err)
	}
	out, err := openOutputLog(filepath.Join(a.jobDir(id), "output"), c.UID)
	if err != nil {
		allocMu.Unlock()
		return nil, err
	}
	j := &job{rec: rec, out: out, pods: map[string]*podRuntime{}}
	j.op.Lock()
	defer j.op.Unlock()
	a.mu.Lock()
	a.jobs[id] = j
	a.mu.Unlock()
	allocMu.Unlock()
	if err := a.persist(j); err != nil {
		return nil, err
	}
	a.log.Info("starting job", "job", id, "name", req.Name, "user", c.User, "np", req.NP, "plain", req.Plain)
	if err := a.startPods(ctx, j); err != nil {
		a.teardown(j, api.Frame{Error: "the job could not start: " + err.Error()})
		a.setState(j, api.StateFailed, err.Error())
		a.log.Warn("job failed to start", "job", id, "err", err)
		return j, err
	}
	a.setState(j, api.StateRunning, "")
	return j, nil
}

// launchTimeout bounds the wait for mpiexec's proxy launch lines.
const launchTimeout = 60 * time.Second

// startPods starts a new job's pods: for MPI, mpiexec's pod first, then one
// pod per hydra proxy, each proxy as PID 1 of its rank's pod.
func (a *Agent) startPods(ctx context.Context, j *job) error {
	specs := j.rec.Pods
	sink := a.jobSink(j)
	if j.rec.Request.Plain {
		p, err := a.host.start(ctx, specs[0], sink)
		if err != nil {
			return err
		}
		a.addPod(j, p)
		return nil
	}
	gate := newLaunchGate(len(specs)-1, sink)
	mpiexec, err := a.host.start(ctx, specs[0], func(stream string, data []byte) {
		if stream == "stdout" {
			gate.write(data)
			return
		}
		sink(stream, data)
	})
	if err != nil {
		return err
	}
	a.addPod(j, mpiexec)
	var res launchResult
	select {
	case res = <-gate.result:
	case <-time.After(launchTimeout):
		return fmt.Errorf("mpiexec printed no proxy launch lines within %s", launchTimeout)
	}
	if res.err != nil {
		// mpiexec failed by itself (bad arguments, say): what it printed
		// is in the job's output; its exit status is the job's.
		<-mpiexec.exited
		return fmt.Errorf("mpiexec: %w (exit status %d)", res.err, mpiexec.exitCode())
	}
	for _, l := range res.launches {
		spec := specs[1+l.ID]
		spec.Argv = l.Argv
		p, err := a.host.start(ctx, spec, sink)
		if err != nil {
			return err
		}
		j.mu.Lock()
		j.rec.Pods[1+l.ID].Argv = l.Argv
		j.mu.Unlock()
		a.addPod(j, p)
	}
	return nil
}

// addPod registers a running pod and, for the job's main pod, watches for
// the end of the job.
func (a *Agent) addPod(j *job, p *podRuntime) {
	j.mu.Lock()
	j.pods[p.spec.Name] = p
	if j.rec.Netns == nil {
		j.rec.Netns = map[string]uint64{}
	}
	j.rec.Netns[p.spec.Name] = p.ns.ino
	j.mu.Unlock()
	if err := a.persist(j); err != nil {
		a.log.Error("saving job state", "job", j.id(), "err", err)
	}
	if p.spec.Role != "rank" {
		go a.watchMain(j, p)
	}
}

// watchMain waits for the job's main process to end and then ends the job,
// unless the agent itself stopped it.
func (a *Agent) watchMain(j *job, p *podRuntime) {
	<-p.exited
	j.op.Lock()
	defer j.op.Unlock()
	j.mu.Lock()
	current := j.pods[p.spec.Name] == p
	ending := j.ending
	j.mu.Unlock()
	if !current || ending {
		return
	}
	code := p.exitCode()
	// The other pods end by themselves once mpiexec is gone; give them a
	// moment before killing what is left.
	deadline := time.After(10 * time.Second)
	for _, q := range j.podList() {
		select {
		case <-q.exited:
		case <-deadline:
		}
	}
	a.teardown(j, api.Frame{Exit: &api.ExitInfo{Code: code}})
	j.mu.Lock()
	j.rec.ExitCode = &code
	j.mu.Unlock()
	a.setState(j, api.StateExited, "")
	a.log.Info("job ended", "job", j.id(), "exit", code)
}

// teardown removes all of the job's pods and then appends the frame that ends
// the current run, after the last byte of the pods' output.
func (a *Agent) teardown(j *job, final api.Frame) {
	j.mu.Lock()
	j.ending = true
	j.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range j.podList() {
		wg.Add(1)
		go func(p *podRuntime) {
			defer wg.Done()
			a.host.destroy(p)
		}(p)
	}
	wg.Wait()
	j.mu.Lock()
	j.pods = map[string]*podRuntime{}
	j.rec.Netns = nil
	j.ending = false
	j.mu.Unlock()
	j.out.append(final)
}

// jobSink appends pod output to the job's output log.
func (a *Agent) jobSink(j *job) outputSink {
	return func(stream string, data []byte) {
		if data != nil {
			j.out.append(api.Frame{Stream: stream, Data: data})
		}
	}
}

// launchGate sits between mpiexec's stdout and the job's output until hydra
// has printed its proxy launch lines, which it hands to the agent instead.
type launchGate struct {
	hosts  int
	sink   outputSink
	buf    []byte
	done   bool
	result chan launchResult
}

type launchResult struct {
	launches []launcher.ProxyLaunch
	err      error
}

func newLaunchGate(hosts int, sink outputSink) *launchGate {
	return &launchGate{hosts: hosts, sink: sink, result: make(chan launchResult, 1)}
}

var launchEndLine = []byte("HYDRA_LAUNCH_END\n")

// write gets mpiexec's stdout in order (nil at its end).
func (g *launchGate) write(data []byte) {
	if g.done {
		g.sink("stdout", data)
		return
	}
	if data == nil {
		g.finish(g.buf, nil)
		return
	}
	g.buf = append(g.buf, data...)
	if i := bytes.Index(g.buf, launchEndLine); i >= 0 {
		g.finish(g.buf[:i+len(launchEndLine)], g.buf[i+len(launchEndLine):])
	} else if len(g.buf) > 1<<20 {
		g.finish(g.buf, nil)
	}
}

func (g *launchGate) finish(head, rest []byte) {
	g.done = true
	launches, other, err := launcher.ReadLaunches(bufio.NewReader(bytes.NewReader(head)), g.hosts)
	for _, l := range other {
		g.sink("stdout", []byte(l+"\n"))
	}
	g.result <- launchResult{launches: launches, err: err}
	if len(rest) > 0 {
		g.sink("stdout", append([]byte(nil), rest...))
	}
}

// spec is what a checkpoint keeps of the job, to restart it.
func (j *job) spec() (json.RawMessage, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return json.Marshal(j.rec)
}

// Checkpoint takes a consistent checkpoint of all of a job's pods (the Cruz
// protocol on one node): block every pod's traffic, dump every pod, commit
// the checkpoint atomically, then unblock (or, with stop, remove the pods).
// Any failure abandons the checkpoint, leaves the previous one as the latest
// and lets the job run on.
func (a *Agent) Checkpoint(ctx context.Context, c caller, ref string, stop bool) (*store.Manifest, error) {
	j, err := a.lookup(c, ref)
	if err != nil {
		return nil, err
	}
	if !j.op.TryLock() {
		return nil, errorf(errConflict, "job %s is busy with another operation (a checkpoint, start or restart): try again when it is done", j.id())
	}
	defer j.op.Unlock()
	if st := j.state(); st != api.StateRunning {
		return nil, errorf(errConflict, "job %s is %s, not running: only a running job can be checkpointed", j.id(), st)
	}
	return a.checkpointLocked(ctx, j, stop)
}

func (a *Agent) checkpointLocked(ctx context.Context, j *job, stop bool) (_ *store.Manifest, err error) {
	t0 := time.Now()
	pods := j.podList()
	phases := map[string]int64{}
	pend, err := a.store.Begin(j.id(), store.Owner{UID: j.rec.UID, GID: j.rec.GID})
	if err != nil {
		return nil, fmt.Errorf("start checkpoint: %w", err)
	}
	log := a.log.With("job", j.id(), "checkpoint", pend.ID(), "stop", stop)
	log.Info("checkpoint started", "pods", len(pods))
	stopped := false
	defer func() {
		if err == nil {
			return
		}
		_ = pend.Abort()
		if stopped {
			for _, p := range pods {
				p.resumeStopped()
			}
		}
		a.unblockAll(j, pods)
		log.Warn("checkpoint failed; the job runs on", "err", err)
	}()
	// 1. Hold every pod's traffic.
	if err := parallel(pods, func(p *podRuntime) error { return blockPodTraffic(ctx, p.nsPath) }); err != nil {
		return nil, err
	}
	t1 := time.Now()
	phases["block"] = t1.Sub(t0).Milliseconds()
	// 2. Dump every pod.
	stopped = stop
	workRoot := filepath.Join(a.jobDir(j.id()), "criu", pend.ID())
	defer func() {
		if err == nil {
			os.RemoveAll(workRoot)
		}
	}()
	images := make([]store.PodImage, len(pods))
	for i, p := range pods {
		images[i] = store.PodImage{Name: p.spec.Name, Role: p.spec.Role, Rank: p.spec.Rank,
			IP: p.spec.Addr.Addr().String(), MAC: podMAC(p.spec.Addr.Addr()).String(),
			Hostname: p.spec.Hostname, Node: a.node, Extra: map[string]string{}}
		for k, v := range p.pipes {
			images[i].Extra[k] = v
		}
	}
	idx := map[*podRuntime]int{}
	for i, p := range pods {
		idx[p] = i
	}
	err = parallel(pods, func(p *podRuntime) error {
		dir, err := pend.PodDir(p.spec.Name)
		if err != nil {
			return err
		}
		work := filepath.Join(workRoot, p.spec.Name)
		if err := os.MkdirAll(work, 0o700); err != nil {
			return err
		}
		st, err := a.host.criu.dump(ctx, dumpOptions{Pid: p.pid, ImagesDir: dir, WorkDir: work,
			NetnsPath: p.nsPath, KeepRunning: !stop, UID: p.spec.UID, GID: p.spec.GID, Timeout: a.cfg.CRIU.Timeout.Duration})
		if err != nil {
			return fmt.Errorf("pod %s: %w", p.spec.Name, err)
		}
		images[idx[p]].DumpMillis = st.Duration.Milliseconds()
		return nil
	})
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	phases["dump"] = t2.Sub(t1).Milliseconds()
	// 3. Commit: the checkpoint becomes visible, complete, or not at all.
	spec, err := j.spec()
	if err != nil {
		return nil, err
	}
	m := &store.Manifest{JobName: j.rec.Name, Created: t0.UTC(), Stopped: stop, Pods: images, Phases: phases, Spec: spec}
	warnings, err := pend.Commit(m)
	if err != nil {
		return nil, fmt.Errorf("commit checkpoint: %w", err)
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	t3 := time.Now()
	phases["commit"] = t3.Sub(t2).Milliseconds()
	j.mu.Lock()
	j.rec.LastCheckpoint = m.ID
	j.mu.Unlock()
	// 4. Resume, or end the job's run here.
	if stop {
		a.teardown(j, api.Frame{Stopped: &api.StoppedInfo{Checkpoint: m.ID}})
		a.setState(j, api.StateStopped, "stopped at checkpoint "+m.ID)
	} else {
		a.unblockAll(j, pods)
		if err := a.persist(j); err != nil {
			log.Error("saving job state", "err", err)
		}
	}
	m.Phases["resume"] = time.Since(t3).Milliseconds()
	log.Info("checkpoint committed", "bytes", m.Bytes, "phases_ms", m.Phases, "total_ms", time.Since(t0).Milliseconds())
	return m, nil
}

func (a *Agent) unblockAll(j *job, pods []*podRuntime) {
	for _, p := range pods {
		if err := unblockPodTraffic(context.Background(), p.nsPath); err != nil {
			a.log.Error("unblocking pod traffic", "job", j.id(), "pod", p.spec.Name, "err", err)
		}
	}
}

// parallel runs fn for every pod at once and joins their errors.
func parallel(pods []*podRuntime, fn func(*podRuntime) error) error {
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func(i int, p *podRuntime) {
			defer wg.Done()
			errs[i] = fn(p)
		}(i, p)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Restart restores a job that is not running from one of its checkpoints
// (the latest good one if id is empty), every pod with its address and MAC,
// and lets the pods' traffic flow only once all of them are restored.
func (a *Agent) Restart(ctx context.Context, c caller, ref, id string) (*job, int64, error) {
	j, err := a.lookup(c, ref)
	if errors.Is(err, errNotFound) {
		j, err = a.adopt(c, ref, err)
	}
	if err != nil {
		return nil, 0, err
	}
	if !j.op.TryLock() {
		return nil, 0, errorf(errConflict, "job %s is busy with another operation: try again when it is done", j.id())
	}
	defer j.op.Unlock()
	prev := j.state()
	if holdsPods(prev) {
		return nil, 0, errorf(errConflict, "job %s is %s: stop it first with `cruz checkpoint --stop %s`", j.id(), prev, j.id())
	}
	var m *store.Manifest
	var dir string
	var skipped []string
	if id == "" {
		m, dir, skipped, err = a.store.Latest(j.id())
		for _, s := range skipped {
			a.log.Warn("skipping checkpoint", "job", j.id(), "reason", s)
		}
		if err == nil && m == nil {
			err = errorf(errNotFound, "job %s has no complete checkpoint to restart from", j.id())
		}
	} else {
		m, dir, err = a.store.Load(j.id(), id)
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidID) {
			return nil, 0, errorf(errNotFound, "%v", err)
		}
		if errors.Is(err, store.ErrCorrupt) {
			return nil, 0, errorf(errConflict, "%v", err)
		}
		return nil, 0, err
	}
	var saved jobRecord
	if err := json.Unmarshal(m.Spec, &saved); err != nil || saved.ID != j.id() || m.Owner.UID != j.rec.UID {
		return nil, 0, errorf(errConflict, "checkpoint %s does not belong to job %s", m.ID, j.id())
	}
	allocMu.Lock()
	used := a.usedAddrs(j.id())
	for _, p := range saved.Pods {
		if other, taken := used[p.Addr.Addr()]; taken {
			allocMu.Unlock()
			return nil, 0, errorf(errConflict, "address %s of pod %s is in use by job %s: remove that job (cruz rm %s) or wait for it to end", p.Addr.Addr(), p.Name, other, other)
		}
	}
	start := j.out.offset()
	// The restart's client is streamed from start: what it must hear about
	// the checkpoints skipped on the way goes after it.
	for _, s := range skipped {
		j.out.append(api.Frame{Stream: "stderr", Data: []byte("cruz: skipping checkpoint: " + s + "\n")})
	}
	j.mu.Lock()
	j.rec.Pods, j.rec.ExitCode, j.rec.OutputStart = saved.Pods, nil, start
	j.mu.Unlock()
	a.setState(j, api.StateRestoring, "from checkpoint "+m.ID)
	allocMu.Unlock()
	log := a.log.With("job", j.id(), "checkpoint", m.ID)
	log.Info("restart started", "pods", len(m.Pods))
	t0 := time.Now()
	if err := a.restorePods(ctx, j, m, dir); err != nil {
		a.teardown(j, api.Frame{Error: "restart failed: " + err.Error()})
		j.mu.Lock()
		j.rec.OutputStart = j.out.offset()
		j.mu.Unlock()
		a.setState(j, prev, "restart from "+m.ID+" failed: "+err.Error())
		log.Warn("restart failed", "err", err)
		return nil, 0, err
	}
	a.setState(j, api.StateRunning, "")
	log.Info("restart done", "ms", time.Since(t0).Milliseconds())
	return j, start, nil
}

// adopt makes a job known to this agent from its checkpoints alone (the
// node rebooted and lost its run directory, say): the newest checkpoint
// with a valid signature holds the job's record. Only its owner or root may.
func (a *Agent) adopt(c caller, id string, notFound error) (*job, error) {
	if store.ValidateJobID(id) != nil {
		return nil, notFound
	}
	list, _, err := a.store.List(id)
	if err != nil || len(list) == 0 {
		return nil, notFound
	}
	m := list[len(list)-1]
	if c.UID != 0 && m.Owner.UID != c.UID {
		return nil, errorf(errForbidden, "job %s belongs to uid %d: you (uid %d) can act only on your own jobs", id, m.Owner.UID, c.UID)
	}
	var rec jobRecord
	if err := json.Unmarshal(m.Spec, &rec); err != nil || rec.ID != id {
		return nil, errorf(errConflict, "checkpoint %s of job %s has no usable job record", m.ID, id)
	}
	rec.State, rec.Message, rec.Netns, rec.OutputStart, rec.ExitCode = api.StateLost, "known from its checkpoints only", nil, 0, nil
	if err := os.MkdirAll(a.jobDir(id), 0o700); err != nil {
		return nil, fmt.Errorf("create job directory: %w", err)
	}
	out, err := openOutputLog(filepath.Join(a.jobDir(id), "output"), rec.UID)
	if err != nil {
		return nil, err
	}
	j := &job{rec: rec, out: out, pods: map[string]*podRuntime{}}
	a.mu.Lock()
	if existing, ok := a.jobs[id]; ok {
		a.mu.Unlock()
		out.close()
		return existing, nil
	}
	a.jobs[id] = j
	a.mu.Unlock()
	a.log.Info("job adopted from its checkpoints", "job", id, "checkpoint", m.ID, "by", c.UID)
	return j, a.persist(j)
}

func (a *Agent) restorePods(ctx context.Context, j *job, m *store.Manifest, dir string) (err error) {
	byName := map[string]podSpec{}
	for _, s := range j.rec.Pods {
		byName[s.Name] = s
	}
	// CRIU's logs stay in the job's run directory when the restore fails.
	workRoot := filepath.Join(a.jobDir(j.id()), "criu", "restore-"+m.ID)
	_ = os.RemoveAll(workRoot)
	defer func() {
		if err == nil {
			os.RemoveAll(workRoot)
		}
	}()
	sink := a.jobSink(j)
	var mu sync.Mutex
	var restored []*podRuntime
	errs := make([]error, len(m.Pods))
	var wg sync.WaitGroup
	for i, img := range m.Pods {
		spec, ok := byName[img.Name]
		if !ok {
			return fmt.Errorf("checkpoint %s has pod %s that its job spec lacks", m.ID, img.Name)
		}
		wg.Add(1)
		go func(i int, img store.PodImage, spec podSpec) {
			defer wg.Done()
			work := filepath.Join(workRoot, img.Name)
			if err := os.MkdirAll(work, 0o700); err != nil {
				errs[i] = err
				return
			}
			p, err := a.host.restore(ctx, spec, filepath.Join(dir, img.Name), work, img.Extra, sink, a.cfg.CRIU.Timeout.Duration)
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			restored = append(restored, p)
			mu.Unlock()
		}(i, img, spec)
	}
	wg.Wait()
	j.mu.Lock()
	for _, p := range restored {
		j.pods[p.spec.Name] = p
		if j.rec.Netns == nil {
			j.rec.Netns = map[string]uint64{}
		}
		j.rec.Netns[p.spec.Name] = p.ns.ino
	}
	j.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Every pod is back: let the traffic flow, then watch the job.
	if err := parallel(restored, func(p *podRuntime) error { return unblockPodTraffic(ctx, p.nsPath) }); err != nil {
		return err
	}
	for _, p := range restored {
		pushPendingTCP(p.ns.ino)
	}
	for _, p := range restored {
		if p.spec.Role != "rank" {
			go a.watchMain(j, p)
		}
	}
	return a.persist(j)
}

// Signal forwards sig to the job's main process (mpiexec, which passes it on
// to the ranks, or a plain job's command). A pod's PID 1 ignores signals it
// has no handler for, unlike an ordinary process, so a signal whose default
// action ends a process ends it with SIGKILL when PID 1 does not handle it.
func (a *Agent) Signal(c caller, ref string, sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return errorf(errBadRequest, "signal %d is not a valid signal number", sig)
	}
	j, err := a.lookup(c, ref)
	if err != nil {
		return err
	}
	p := j.mainPod()
	if p == nil {
		return errorf(errConflict, "job %s is %s: it has no process to signal", j.id(), j.state())
	}
	if terminatesByDefault(sig) && !handlesSignal(p.pid, sig) {
		sig = unix.SIGKILL
	}
	a.log.Info("signal", "job", j.id(), "signal", sig.String(), "by", c.UID)
	return p.signal(sig)
}

func terminatesByDefault(sig syscall.Signal) bool {
	switch sig {
	case unix.SIGCHLD, unix.SIGCONT, unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGURG, unix.SIGWINCH:
		return false
	}
	return true
}

// handlesSignal tells whether pid catches or ignores sig (from /proc status).
func handlesSignal(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, field := range []string{"SigCgt:", "SigIgn:"} {
			if v, ok := strings.CutPrefix(line, field); ok {
				var mask uint64
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &mask); err == nil && mask&(1<<(uint(sig)-1)) != 0 {
					return true
				}
			}
		}
	}
	return false
}

// Remove kills a job's pods if it has any and forgets the job; with
// checkpoints its checkpoints are deleted too.
func (a *Agent) Remove(c caller, ref string, checkpoints bool) error {
	j, err := a.lookup(c, ref)
	if err != nil {
		return err
	}
	j.op.Lock()
	defer j.op.Unlock()
	if j.hasPods() {
		a.teardown(j, api.Frame{Error: fmt.Sprintf("job removed by uid %d (cruz rm)", c.UID)})
	}
	a.mu.Lock()
	delete(a.jobs, j.id())
	a.mu.Unlock()
	j.out.close()
	if err := os.RemoveAll(a.jobDir(j.id())); err != nil {
		return fmt.Errorf("remove job directory: %w", err)
	}
	if checkpoints {
		if err := a.store.DeleteJob(j.id()); err != nil {
			return fmt.Errorf("delete checkpoints of job %s: %w", j.id(), err)
		}
	}
	a.log.Info("job removed", "job", j.id(), "by", c.UID, "checkpoints", checkpoints)
	return nil
}

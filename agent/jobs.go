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
	"io/fs"
	"net/http"
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
	// OutputStart is where the current run's frames start in the output
	// log: a restart's client is streamed from there.
	OutputStart int64 `json:"output_start"`
	// Policy is the job's checkpoint and recovery policy.
	Policy jobPolicy `json:"policy"`
	// Spares are nodes held back to replace nodes that fail.
	Spares []string `json:"spares,omitempty"`
}

// holdsPods: the job has (or had, when the agent died) pods on the node.
func holdsPods(state string) bool {
	return state == api.StateStarting || state == api.StateRunning || state == api.StateRestoring
}

// holdsAddrs: the job's pod addresses stay reserved for it.
func holdsAddrs(state string) bool {
	return holdsPods(state) || state == api.StateStopped || state == api.StateLost || state == api.StateCancelled
}

// job is a job known to this agent.
type job struct {
	// op serialises operations that change the job's pods: start,
	// checkpoint, restart, removal. A checkpoint request that finds it
	// taken is refused rather than queued.
	op sync.Mutex
	// mu guards the fields below.
	mu  sync.Mutex
	rec jobRecord
	out *outputLog
	// live: the job's pods exist (on whatever nodes rec.Pods names).
	live bool
	// gen counts the job's runs and moves of its main pod, so that a
	// watcher of a main pod that is gone ignores its end.
	gen int
	// ending is set while the agent itself stops the pods (stop-checkpoint,
	// removal), so that the exit of PID 1 is not reported as the job's end.
	ending bool
	// followers copy the output of the job's pods on other nodes.
	followers map[string]*follower
	// sup is the policy engine's state of the job (supervise.go).
	sup *supervisor
	// saving serialises writes of job.json.
	saving sync.Mutex
	// dedup filters the stdout of a run restored by an automatic rollback.
	dedup *lineDedup
	// signalled: the job's user sent it a signal that ends processes, so
	// its end is not a failure to recover from.
	signalled bool
	// endCode is the status the main process ended with, for the recovery
	// of that failure: if the job gives up, its status is that one.
	endCode *int
}

func (j *job) id() string { return j.rec.ID }

func (j *job) hasPods() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.live
}

func (j *job) state() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rec.State
}

// mainPod is the pod whose PID 1's exit ends the job: mpiexec, or the only
// pod of a plain job.
func (j *job) mainPod() (podSpec, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, p := range j.rec.Pods {
		if p.Role != "rank" {
			return p, true
		}
	}
	return podSpec{}, false
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
	if req.Plain && len(req.Nodes) > 0 {
		return errorf(errBadRequest, "a plain (non-MPI) job runs in one pod on the agent's node: drop --nodes")
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
	if req.Slurm != nil {
		return nil, errorf(errBadRequest, "a Slurm step's job starts through POST /v1/slurm/steps (srun --cruz)")
	}
	return a.run(ctx, c, req, newJobID())
}

// run creates job id for caller and starts it.
func (a *Agent) run(ctx context.Context, c caller, req api.RunRequest, id string) (*job, error) {
	if err := validateRun(&req); err != nil {
		return nil, err
	}
	if err := a.checkStore(req.Store); err != nil {
		return nil, err
	}
	nodes := req.Nodes
	if len(nodes) == 0 {
		nodes = a.nodes()
	}
	if err := a.checkNodes(nodes); err != nil {
		return nil, err
	}
	pol, err := a.resolvePolicy(req)
	if err != nil {
		return nil, err
	}
	var spares []string
	if req.Spares < 0 || (req.Spares > 0 && req.Spares >= len(nodes)) {
		return nil, errorf(errBadRequest, "--spares %d: of the %d nodes (%s) at least one must run the job", req.Spares, len(nodes), strings.Join(nodes, ", "))
	}
	if req.Spares > 0 {
		nodes, spares = nodes[:len(nodes)-req.Spares], nodes[len(nodes)-req.Spares:]
	}
	npods := req.NP + 1
	if req.Plain {
		npods = 1
	}
	allocMu.Lock()
	addrs, err := a.allocAddrs(npods)
	if err != nil {
		allocMu.Unlock()
		return nil, errorf(errConflict, "%v", err)
	}
	now := time.Now().UTC()
	rec := jobRecord{ID: id, Name: req.Name, User: c.User, UID: c.UID, GID: c.GID, Groups: c.Groups,
		Request: req, State: api.StateStarting, Created: now, Updated: now, Policy: pol, Spares: spares}
	env := append(append([]string{}, req.Env...), a.cfg.MPI.Env...)
	mk := func(name, role string, rank int, addr netip.Prefix, argv []string) podSpec {
		return podSpec{Name: name, Hostname: name, Role: role, Rank: rank, Addr: addr, Argv: argv,
			Env: env, Dir: req.Dir, UID: c.UID, GID: c.GID, Groups: c.Groups, Node: a.node}
	}
	if req.Plain {
		// mpi.env applies here too: an MPICH program run with one rank
		// (a singleton) must stay off shared memory, which would be a
		// deleted file in /dev/shm for CRIU to carry.
		rec.Pods = []podSpec{mk(id+"-main", "main", 0, addrs[0], req.Argv)}
	} else {
		rec.Pods = append(rec.Pods, mk(id+"-mpiexec", "mpiexec", -1, addrs[0], nil))
		hosts := make([]string, req.NP)
		placed := placeRanks(req.NP, nodes)
		if req.Slurm != nil {
			placed = req.Slurm.RankNodes
		}
		for r := 0; r < req.NP; r++ {
			spec := mk(fmt.Sprintf("%s-r%d", id, r), "rank", r, addrs[r+1], nil)
			spec.Node = placed[r]
			rec.Pods = append(rec.Pods, spec)
			hosts[r] = addrs[r+1].Addr().String()
		}
		rec.Pods[0].Argv = launcher.MpiexecArgv(a.cfg.MPI.Mpiexec, hosts, req.NP, req.Argv)
	}
	if err := os.MkdirAll(a.jobDir(id), 0o700); err != nil {
		allocMu.Unlock()
		return nil, fmt.Errorf("create job directory: %w", err)
	}
	outPath, err := a.outputPath(rec)
	if err == nil && req.Slurm != nil {
		// A new run of the step: nothing of an earlier one.
		if rerr := os.Remove(outPath); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("remove the earlier output log: %w", rerr)
		}
	}
	if err != nil {
		allocMu.Unlock()
		return nil, err
	}
	out, err := openOutputLog(outPath, c.UID)
	if err != nil {
		allocMu.Unlock()
		return nil, err
	}
	j := &job{rec: rec, out: out}
	j.op.Lock()
	defer j.op.Unlock()
	a.mu.Lock()
	if _, taken := a.jobs[id]; taken {
		a.mu.Unlock()
		allocMu.Unlock()
		out.close()
		return nil, errorf(errConflict, "job %s exists already", id)
	}
	a.jobs[id] = j
	a.mu.Unlock()
	allocMu.Unlock()
	if err := a.persist(j); err != nil {
		return nil, err
	}
	a.log.Info("starting job", "job", id, "name", req.Name, "user", c.User, "np", req.NP, "plain", req.Plain, "nodes", nodes)
	if err := a.startPods(ctx, j); err != nil {
		a.teardown(j, api.Frame{Error: "the job could not start: " + err.Error()})
		a.setState(j, api.StateFailed, err.Error())
		a.log.Warn("job failed to start", "job", id, "err", err)
		return j, err
	}
	a.setState(j, api.StateRunning, "")
	msg := fmt.Sprintf("started: %d ranks on %s; %s", req.NP, strings.Join(nodes, ", "), pol)
	if req.Plain {
		msg = "started: one pod on " + a.node + "; " + pol.String()
	}
	if len(spares) > 0 {
		msg += "; spares " + strings.Join(spares, ", ")
	}
	a.event(j, api.Event{Kind: "started", Message: msg})
	return j, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// launchTimeout bounds the wait for mpiexec's proxy launch lines.
const launchTimeout = 60 * time.Second

// startPods starts a new job's pods: for MPI, mpiexec's pod first, then one
// pod per hydra proxy, each proxy as PID 1 of its rank's pod, on its node.
func (a *Agent) startPods(ctx context.Context, j *job) error {
	j.mu.Lock()
	specs := append([]podSpec(nil), j.rec.Pods...)
	j.live = true
	j.gen++
	gen := j.gen
	j.mu.Unlock()
	self, err := a.client(a.node, j.owner())
	if err != nil {
		return err
	}
	if j.rec.Request.Plain {
		if _, err := self.do(ctx, opStart, nodeReq{Job: j.id(), Spec: &specs[0]}); err != nil {
			return err
		}
		go a.watchMain(j, gen)
		go a.supervise(j, gen)
		return nil
	}
	gate := newLaunchGate(len(specs)-1, a.jobSink(j))
	if err := a.startMpiexec(ctx, j, specs[0], gate); err != nil {
		return err
	}
	var res launchResult
	select {
	case res = <-gate.result:
	case <-time.After(launchTimeout):
		return fmt.Errorf("mpiexec printed no proxy launch lines within %s", launchTimeout)
	}
	if res.err != nil {
		// mpiexec failed by itself (bad arguments, say): what it printed
		// is in the job's output; its exit status is the job's.
		code, _ := self.do(ctx, opWait, nodeReq{Job: j.id(), Pods: []string{specs[0].Name}})
		return fmt.Errorf("mpiexec: %w (exit status %d)", res.err, code.ExitCode)
	}
	// The ranks start at once on all their nodes.
	var wg sync.WaitGroup
	errs := make([]error, len(res.launches))
	for i, l := range res.launches {
		spec := specs[1+l.ID]
		spec.Argv = l.Argv
		j.mu.Lock()
		j.rec.Pods[1+l.ID].Argv = l.Argv
		j.mu.Unlock()
		wg.Add(1)
		go func(i int, spec podSpec) {
			defer wg.Done()
			nc, err := a.client(spec.Node, j.owner())
			if err == nil {
				_, err = nc.do(ctx, opStart, nodeReq{Job: j.id(), Coordinator: a.node, Spec: &spec})
			}
			errs[i] = err
		}(i, spec)
	}
	wg.Wait()
	for node := range j.byNode() {
		a.follow(j, node)
	}
	if err := a.persist(j); err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	go a.watchMain(j, gen)
	go a.supervise(j, gen)
	return nil
}

// startMpiexec starts mpiexec's pod on this node, its stdout going through
// gate until hydra has printed its proxy launch lines.
func (a *Agent) startMpiexec(ctx context.Context, j *job, spec podSpec, gate *launchGate) error {
	c := j.owner()
	s, err := a.podSetFor(c, j.id(), a.node)
	if err != nil {
		return err
	}
	sink := s.sink
	p, err := a.host.start(ctx, spec, func(stream string, data []byte) {
		if stream == "stdout" {
			gate.write(data)
			return
		}
		sink(stream, data)
	})
	if err != nil {
		a.persistSet(s)
		return err
	}
	s.mu.Lock()
	s.pods[p.spec.Name] = p
	s.mu.Unlock()
	a.persistSet(s)
	return nil
}

// watchMain waits for the job's main process to end and then ends the job,
// unless the agent itself stopped it or the run (or the main pod's place)
// changed meanwhile.
func (a *Agent) watchMain(j *job, gen int) {
	main, ok := j.mainPod()
	if !ok {
		return
	}
	current := func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.gen == gen && j.live
	}
	var code int
	for {
		if !current() {
			return
		}
		nc, err := a.client(main.Node, j.owner())
		if err != nil {
			a.log.Error("watching the main pod", "job", j.id(), "err", err)
			return
		}
		resp, err := nc.do(context.Background(), opWait, nodeReq{Job: j.id(), Pods: []string{main.Name}})
		if err == nil {
			code = resp.ExitCode
			break
		}
		if errors.Is(err, errNotFound) || isStatus(err, http.StatusNotFound) {
			code = -1
			break
		}
		// The node did not answer: try again while the run lasts.
		a.log.Warn("cannot reach the main pod's node", "job", j.id(), "node", main.Node, "err", err)
		time.Sleep(time.Second)
	}
	if j.current(gen) && j.failedEnd(code) {
		j.mu.Lock()
		j.endCode = &code
		j.mu.Unlock()
		a.recoverJob(j, gen, fmt.Sprintf("the job's main process (%s on %s) ended with status %d", main.Name, main.Node, code), main.Node)
		return
	}
	j.op.Lock()
	defer j.op.Unlock()
	j.mu.Lock()
	stale := j.gen != gen || !j.live || j.ending
	j.mu.Unlock()
	if stale {
		return
	}
	// The other pods end by themselves once mpiexec is gone; give them a
	// moment before killing what is left.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := a.onNodes(context.Background(), j, opPods, func(_ string, pods []string) nodeReq {
			return nodeReq{Job: j.id(), Pods: pods}
		})
		left := 0
		for _, r := range resp {
			for _, p := range r.Pods {
				if !p.Exited {
					left++
				}
			}
		}
		if err != nil || left == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.teardown(j, api.Frame{Exit: &api.ExitInfo{Code: code}})
	j.mu.Lock()
	j.rec.ExitCode = &code
	j.mu.Unlock()
	a.setState(j, api.StateExited, "")
	a.event(j, api.Event{Kind: "exited", Message: fmt.Sprintf("the job ended with status %d", code)})
	a.log.Info("job ended", "job", j.id(), "exit", code)
	a.dropSlurmCheckpoints(j)
}

// isStatus tells whether err is an agent's answer with that HTTP status.
func isStatus(err error, status int) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Status == status
}

// teardown removes all of the job's pods, on every node, and then appends
// the frame that ends the current run, after the last byte of the pods'
// output.
func (a *Agent) teardown(j *job, final api.Frame) {
	j.mu.Lock()
	j.ending = true
	j.mu.Unlock()
	resp, err := a.onNodes(context.Background(), j, opDestroy, func(_ string, pods []string) nodeReq {
		return nodeReq{Job: j.id(), Pods: pods}
	})
	if err != nil {
		a.log.Error("removing the job's pods", "job", j.id(), "err", err)
	}
	for node, r := range resp {
		a.unfollow(j, node, r.OutputEnd)
	}
	a.stopFollowers(j)
	a.endDedup(j)
	j.mu.Lock()
	j.live = false
	j.ending = false
	j.mu.Unlock()
	j.out.append(final)
}

// jobSink appends pod output to the job's output log.
func (a *Agent) jobSink(j *job) outputSink {
	return func(stream string, data []byte) {
		if data != nil {
			a.emit(j, stream, data)
		}
	}
}

// emit appends pod output to the job's log, through the filter that drops
// what a rolled-back run prints again (dedup.go).
func (a *Agent) emit(j *job, stream string, data []byte) {
	j.mu.Lock()
	d := j.dedup
	j.mu.Unlock()
	if d != nil && stream == "stdout" {
		data = d.feed(data)
		if n, ok := d.decided(); ok {
			a.event(j, api.Event{Kind: "output", Message: fmt.Sprintf("the restored run repeated %d lines of output the failed run had printed after the checkpoint; they are not shown twice", n)})
		}
		if len(data) == 0 {
			return
		}
	}
	j.out.append(api.Frame{Stream: stream, Data: data})
}

// endDedup settles the rollback filter, if any, and emits what it held.
func (a *Agent) endDedup(j *job) {
	j.mu.Lock()
	d := j.dedup
	j.dedup = nil
	j.mu.Unlock()
	if d != nil {
		if rest := d.flush(); len(rest) > 0 {
			j.out.append(api.Frame{Stream: "stdout", Data: rest})
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
	m, err := a.checkpointLocked(ctx, j, stop)
	if err != nil {
		a.event(j, api.Event{Kind: "checkpoint_failed", Message: fmt.Sprintf("checkpoint by uid %d failed: %v", c.UID, firstLine(err.Error()))})
		return nil, err
	}
	kind, what := "checkpoint", "checkpoint"
	if stop {
		kind, what = "stopped", "stopped at checkpoint"
	}
	a.event(j, api.Event{Kind: kind, Checkpoint: m.ID, Message: fmt.Sprintf("%s %s by uid %d: %s", what, m.ID, c.UID, humanSize(m.Bytes))})
	return m, nil
}

func (a *Agent) checkpointLocked(ctx context.Context, j *job, stop bool) (_ *store.Manifest, err error) {
	t0 := time.Now()
	j.mu.Lock()
	specs := append([]podSpec(nil), j.rec.Pods...)
	j.mu.Unlock()
	phases := map[string]int64{}
	outAtBlock := j.out.offset()
	pend, err := a.store.Begin(j.id(), store.Owner{UID: j.rec.UID, GID: j.rec.GID})
	if err != nil {
		return nil, fmt.Errorf("start checkpoint: %w", err)
	}
	groups := j.byNode()
	log := a.log.With("job", j.id(), "checkpoint", pend.ID(), "stop", stop)
	log.Info("checkpoint started", "pods", len(specs), "nodes", len(groups))
	defer func() {
		if err == nil {
			return
		}
		_ = pend.Abort()
		if ctx.Err() != nil {
			// A recovery cancelled it: it removes the run's pods itself,
			// and must not wait here for a node that is gone.
			log.Warn("checkpoint cancelled", "err", err)
			return
		}
		// Undo on every node: stopped pods go on, traffic flows again. A
		// node that does not answer soon is likely gone.
		actx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, rerr := a.onNodes(actx, j, opResume, func(_ string, pods []string) nodeReq {
			return nodeReq{Job: j.id(), Pods: pods, Continue: true}
		}); rerr != nil {
			log.Error("resuming the job after the failed checkpoint", "err", rerr)
		}
		log.Warn("checkpoint failed; the job runs on", "err", err)
	}()
	for _, sp := range specs {
		if _, err := pend.PodDir(sp.Name); err != nil {
			return nil, err
		}
	}
	// 1. Hold every pod's traffic, on every node.
	if _, err := a.onNodes(ctx, j, opBlock, func(_ string, pods []string) nodeReq {
		return nodeReq{Job: j.id(), Pods: pods}
	}); err != nil {
		return nil, fmt.Errorf("block traffic: %w", err)
	}
	t1 := time.Now()
	phases["block"] = t1.Sub(t0).Milliseconds()
	// 2. Dump every pod, on every node at once. A node that does not answer
	// within the CRIU timeout (and a margin) fails the checkpoint.
	dctx, cancel := context.WithTimeout(ctx, a.cfg.CRIU.Timeout.Duration+15*time.Second)
	defer cancel()
	dumps, err := a.onNodes(dctx, j, opDump, func(_ string, pods []string) nodeReq {
		return nodeReq{Job: j.id(), Pods: pods, Images: pend.ID(), Stop: stop}
	})
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	t2 := time.Now()
	phases["dump"] = t2.Sub(t1).Milliseconds()
	byPod := map[string]podDump{}
	for _, r := range dumps {
		for _, d := range r.Dumps {
			byPod[d.Pod] = d
		}
	}
	images := make([]store.PodImage, len(specs))
	for i, sp := range specs {
		d, ok := byPod[sp.Name]
		if !ok {
			return nil, fmt.Errorf("node %s did not report the dump of pod %s", sp.Node, sp.Name)
		}
		images[i] = store.PodImage{Name: sp.Name, Role: sp.Role, Rank: sp.Rank,
			IP: sp.Addr.Addr().String(), MAC: podMAC(sp.Addr.Addr()).String(),
			Hostname: sp.Hostname, Node: nodeOr(sp.Node, a.node), DumpMillis: d.DumpMS, Extra: d.Pipes}
	}
	// 3. Commit: the checkpoint becomes visible, complete, or not at all.
	spec, err := j.spec()
	if err != nil {
		return nil, err
	}
	m := &store.Manifest{JobName: j.rec.Name, Created: t0.UTC(), Stopped: stop, Pods: images, Phases: phases, Spec: spec, OutputOffset: outAtBlock}
	warnings, err := pend.Commit(m)
	if err != nil {
		return nil, fmt.Errorf("commit checkpoint: %w", err)
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	t3 := time.Now() // Commit recorded its own time as phase "commit"
	j.mu.Lock()
	j.rec.LastCheckpoint = m.ID
	j.mu.Unlock()
	// 4. Resume, or end the job's run here.
	if stop {
		a.teardown(j, api.Frame{Stopped: &api.StoppedInfo{Checkpoint: m.ID}})
		a.setState(j, api.StateStopped, "stopped at checkpoint "+m.ID)
	} else {
		if _, err := a.onNodes(context.Background(), j, opResume, func(_ string, pods []string) nodeReq {
			return nodeReq{Job: j.id(), Pods: pods}
		}); err != nil {
			log.Error("resuming the job after its checkpoint", "err", err)
		}
		if err := a.persist(j); err != nil {
			log.Error("saving job state", "err", err)
		}
	}
	m.Phases["resume"] = time.Since(t3).Milliseconds()
	log.Info("checkpoint committed", "bytes", m.Bytes, "phases_ms", m.Phases, "total_ms", time.Since(t0).Milliseconds())
	return m, nil
}

func nodeOr(node, def string) string {
	if node == "" {
		return def
	}
	return node
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
func (a *Agent) Restart(ctx context.Context, c caller, ref, id string, nodes []string) (*job, int64, error) {
	if err := a.checkNodes(nodes); err != nil {
		return nil, 0, err
	}
	j, err := a.lookup(c, ref)
	if errors.Is(err, errNotFound) {
		j, err = a.adopt(c, ref, err)
	}
	if err != nil {
		return nil, 0, err
	}
	return a.restart(ctx, c, j, id, func(pods []podSpec) error { return a.place(pods, nodes) }, nil)
}

// restart restores job j from checkpoint id (latest good one if empty),
// its pods placed by place. prepare, if set, runs once the checkpoint is
// chosen, before any pod is restored.
func (a *Agent) restart(ctx context.Context, c caller, j *job, id string, place func([]podSpec) error, prepare func(j *job, m *store.Manifest, start int64)) (*job, int64, error) {
	var err error
	if !j.op.TryLock() {
		return nil, 0, errorf(errConflict, "job %s is busy with another operation: try again when it is done", j.id())
	}
	defer j.op.Unlock()
	prev := j.state()
	if holdsPods(prev) {
		return nil, 0, errorf(errConflict, "job %s is %s: stop it first with `cruz checkpoint --stop %s`", j.id(), prev, j.id())
	}
	var m *store.Manifest
	var skipped []string
	if id == "" {
		m, _, skipped, err = a.store.Latest(j.id())
		for _, s := range skipped {
			a.log.Warn("skipping checkpoint", "job", j.id(), "reason", s)
		}
		if err == nil && m == nil {
			err = errorf(errNotFound, "job %s has no complete checkpoint to restart from", j.id())
		}
	} else {
		m, _, err = a.store.Load(j.id(), id)
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
	if node := a.peersHolding(ctx, c, j.id()); node != "" {
		return nil, 0, errorf(errConflict, "job %s runs on node %s, its coordinator: stop it there first (cruz --node %s checkpoint --stop %s)", j.id(), node, node, j.id())
	}
	if err := place(saved.Pods); err != nil {
		return nil, 0, err
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
	if prepare != nil {
		prepare(j, m, start)
	}
	j.mu.Lock()
	j.rec.Pods, j.rec.ExitCode, j.rec.OutputStart = saved.Pods, nil, start
	j.live = true
	j.gen++
	gen := j.gen
	j.mu.Unlock()
	a.setState(j, api.StateRestoring, "from checkpoint "+m.ID)
	allocMu.Unlock()
	log := a.log.With("job", j.id(), "checkpoint", m.ID)
	log.Info("restart started", "pods", len(m.Pods), "nodes", len(j.byNode()))
	t0 := time.Now()
	if err := a.restorePods(ctx, j, m, gen); err != nil {
		a.teardown(j, api.Frame{Error: "restart failed: " + err.Error()})
		j.mu.Lock()
		j.rec.OutputStart = j.out.offset()
		j.mu.Unlock()
		a.setState(j, prev, "restart from "+m.ID+" failed: "+err.Error())
		log.Warn("restart failed", "err", err)
		return nil, 0, err
	}
	a.setState(j, api.StateRunning, "")
	a.event(j, api.Event{Kind: "restarted", Checkpoint: m.ID, Millis: time.Since(t0).Milliseconds(),
		Message: fmt.Sprintf("restarted from %s by uid %d in %d ms", m.ID, c.UID, time.Since(t0).Milliseconds())})
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
	rec.State, rec.Message, rec.OutputStart, rec.ExitCode = api.StateLost, "known from its checkpoints only", 0, nil
	if err := os.MkdirAll(a.jobDir(id), 0o700); err != nil {
		return nil, fmt.Errorf("create job directory: %w", err)
	}
	outPath, err := a.outputPath(rec)
	if err != nil {
		return nil, err
	}
	out, err := openOutputLog(outPath, rec.UID)
	if err != nil {
		return nil, err
	}
	j := &job{rec: rec, out: out}
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

// place puts the pods on nodes: without nodes, where the checkpoint had
// them (pods of records without a node go to this one); with nodes, the
// main pod on the first and the ranks spread over all of them in blocks.
func (a *Agent) place(pods []podSpec, nodes []string) error {
	if len(nodes) == 0 {
		for i := range pods {
			if pods[i].Node == "" {
				pods[i].Node = a.node
			}
			if !a.isNode(pods[i].Node) {
				return errorf(errConflict, "pod %s was on node %s, which this cluster does not have: choose nodes with --nodes", pods[i].Name, pods[i].Node)
			}
		}
		return nil
	}
	var ranks []int
	for i := range pods {
		if pods[i].Role == "rank" {
			ranks = append(ranks, i)
		} else {
			pods[i].Node = nodes[0]
		}
	}
	for k, node := range placeRanks(len(ranks), nodes) {
		pods[ranks[k]].Node = node
	}
	return nil
}

// restorePods restores every pod of the checkpoint on its node, with traffic
// held everywhere until the last one is restored, then released at once.
func (a *Agent) restorePods(ctx context.Context, j *job, m *store.Manifest, gen int) error {
	pipes := map[string]map[string]string{}
	for _, img := range m.Pods {
		pipes[img.Name] = img.Extra
	}
	j.mu.Lock()
	byName := map[string]podSpec{}
	for _, sp := range j.rec.Pods {
		byName[sp.Name] = sp
	}
	j.mu.Unlock()
	for _, img := range m.Pods {
		if _, ok := byName[img.Name]; !ok {
			return fmt.Errorf("checkpoint %s has pod %s that its job spec lacks", m.ID, img.Name)
		}
	}
	if _, err := a.onNodes(ctx, j, opRestore, func(node string, pods []string) nodeReq {
		req := nodeReq{Job: j.id(), Coordinator: a.node, Images: m.ID}
		for _, name := range pods {
			req.Restore = append(req.Restore, restorePod{Spec: byName[name], Pipes: pipes[name]})
		}
		return req
	}); err != nil {
		return err
	}
	for node := range j.byNode() {
		a.follow(j, node)
	}
	// Every pod is back: let the traffic flow, then watch the job.
	if _, err := a.onNodes(ctx, j, opRelease, func(_ string, pods []string) nodeReq {
		return nodeReq{Job: j.id(), Pods: pods}
	}); err != nil {
		return err
	}
	go a.watchMain(j, gen)
	go a.supervise(j, gen)
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
	main, ok := j.mainPod()
	if !ok || !j.hasPods() {
		return errorf(errConflict, "job %s is %s: it has no process to signal", j.id(), j.state())
	}
	nc, err := a.client(main.Node, j.owner())
	if err != nil {
		return err
	}
	if terminatesByDefault(sig) {
		j.mu.Lock()
		j.signalled = true
		j.mu.Unlock()
	}
	a.log.Info("signal", "job", j.id(), "signal", sig.String(), "by", c.UID)
	_, err = nc.do(context.Background(), opSignal, nodeReq{Job: j.id(), Pods: []string{main.Name}, Signal: int(sig)})
	return err
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

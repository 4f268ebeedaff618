package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/mpi"
	"github.com/cruz-hpc/cruz/internal/node"
)

// Starting a job: its record, its addresses, mpiexec's pod and the launch
// gate that reads which proxy each rank pod runs, then one pod per rank on
// its node; watching its main process; ending it.

// Run creates a job for caller and starts it. It returns once every pod is
// up (or the job failed to start, with the reason).
func (a *Agent) Run(ctx context.Context, c caller, req api.RunRequest) (*job, error) {
	if req.Slurm != nil {
		return nil, api.Errorf(api.ErrInvalid, "a Slurm step's job starts through POST /v1/slurm/steps (srun --cruz)")
	}
	if a.cfg.Agent.SlurmOnly && c.UID != 0 {
		return nil, api.Errorf(api.ErrForbidden, "this cluster runs jobs only under Slurm (agent.slurm_only on node %s): run it with srun --cruz or sbatch, not cruz run", a.node)
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
	if err := a.checkStoreOwner(c, id); err != nil {
		return nil, err
	}
	nodes := req.Nodes
	if len(nodes) == 0 {
		nodes = a.nodes()
	}
	var err error
	if err = a.checkNodes(nodes); err != nil {
		return nil, err
	}
	var launcher mpi.Launcher
	if !req.Plain {
		if launcher, err = a.launcher(req.MPI); err != nil {
			return nil, err
		}
		if err := checkLauncher(launcher); err != nil {
			return nil, err
		}
		req.MPI = string(launcher.Kind())
	}
	pol, err := a.resolvePolicy(req)
	if err != nil {
		return nil, err
	}
	var spares []string
	if req.Spares < 0 || (req.Spares > 0 && req.Spares >= len(nodes)) {
		return nil, api.Errorf(api.ErrInvalid, "--spares %d: of the %d nodes (%s) at least one must run the job", req.Spares, len(nodes), strings.Join(nodes, ", "))
	}
	if req.Spares > 0 {
		nodes, spares = nodes[:len(nodes)-req.Spares], nodes[len(nodes)-req.Spares:]
	}
	npods := 1
	var groups []rankGroup
	if !req.Plain {
		placed := placeRanks(req.NP, nodes)
		if req.Slurm != nil {
			placed = req.Slurm.RankNodes
		}
		groups = groupRanks(placed, req.RanksPerPod)
		npods += len(groups)
	}
	allocMu.Lock()
	addrs, err := a.allocAddrs(npods)
	if err != nil {
		allocMu.Unlock()
		return nil, api.Errorf(api.ErrConflict, "%w", err)
	}
	now := time.Now().UTC()
	rec := jobRecord{ID: id, Name: req.Name, User: c.User, UID: c.UID, GID: c.GID, Groups: c.Groups,
		Request: req, State: api.StateStarting, Created: now, Updated: now, Policy: pol, Spares: spares}
	env := append(append([]string{}, req.Env...), a.cfg.MPI.Env...)
	privateDev := false
	if launcher != nil {
		lenv := launcher.Env(c.UID)
		privateDev = launcher.PrivateDev()
		if req.RanksPerPod > 1 {
			// The ranks of a pod may share memory: its segments must be
			// in the pod's own /dev/shm, to be saved and moved with it.
			lenv, privateDev = launcher.Shared(lenv), true
		}
		env = append(append([]string{}, req.Env...), lenv...)
	}
	mk := func(name string, role api.PodRole, rank int, addr netip.Prefix, argv []string) api.PodSpec {
		return api.PodSpec{Name: name, Hostname: name, Role: role, Rank: rank, Addr: addr, Argv: argv,
			Env: env, Dir: req.Dir, UID: c.UID, GID: c.GID, Groups: c.Groups, Node: a.node, PrivateDev: privateDev}
	}
	if req.Plain {
		// mpi.env applies here too: an MPICH program run with one rank
		// (a singleton) must stay off shared memory, which would be a
		// deleted file in /dev/shm for CRIU to carry.
		rec.Pods = []api.PodSpec{mk(id+"-main", api.RoleMain, 0, addrs[0], req.Argv)}
	} else {
		rec.Pods = append(rec.Pods, mk(id+"-mpiexec", api.RoleMpiexec, -1, addrs[0], nil))
		hosts := make([]string, len(groups))
		for i, g := range groups {
			spec := mk(rankPodName(id, g), api.RoleRank, g.First, addrs[i+1], nil)
			spec.Node = g.Node
			hosts[i] = addrs[i+1].Addr().String()
			if req.RanksPerPod > 1 {
				// Slots: hydra and mpirun put that many ranks, in order,
				// on the pod's proxy or daemon.
				spec.Ranks = g.Count
				hosts[i] += ":" + strconv.Itoa(g.Count)
			}
			rec.Pods = append(rec.Pods, spec)
		}
		rec.Pods[0].Argv = launcher.Argv(hosts, req.NP, req.Argv)
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
	out, err := joblog.Open(outPath, c.UID)
	if err != nil {
		allocMu.Unlock()
		return nil, err
	}
	j := &job{rec: rec, out: out}
	a.boundOutput(j)
	j.op.Lock()
	defer j.op.Unlock()
	a.mu.Lock()
	if _, taken := a.jobs[id]; taken {
		a.mu.Unlock()
		allocMu.Unlock()
		out.Close()
		return nil, api.Errorf(api.ErrConflict, "job %s exists already", id)
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
	if req.RanksPerPod > 1 {
		msg = fmt.Sprintf("started: %d ranks in %d pods of up to %d on %s; %s", req.NP, len(groups), req.RanksPerPod, strings.Join(nodes, ", "), pol)
	}
	if req.Plain {
		msg = "started: one pod on " + a.node + "; " + pol.String()
	}
	if len(spares) > 0 {
		msg += "; spares " + strings.Join(spares, ", ")
	}
	a.event(j, api.Event{Kind: api.EventStarted, Message: msg})
	return j, nil
}

// launchTimeout bounds the wait for mpiexec's proxy launch lines.
const launchTimeout = 60 * time.Second

// startPods starts a new job's pods: for MPI, mpiexec's pod first (on
// this node), then one pod per hydra proxy, each proxy as PID 1 of its
// rank's pod, on its node. Until hydra has printed its proxy launch lines,
// mpiexec's stdout goes through a launch gate (emit), which hands them here.
func (a *Agent) startPods(ctx context.Context, j *job) error {
	j.mu.Lock()
	specs := append([]api.PodSpec(nil), j.rec.Pods...)
	j.live = true
	j.gen++
	gen := j.gen
	j.mu.Unlock()
	self, err := a.conn(a.node, j.owner())
	if err != nil {
		return err
	}
	if j.rec.Request.Plain {
		if _, err := self.Do(ctx, api.OpStart, api.NodeRequest{Job: j.id(), Coordinator: a.node, Spec: &specs[0]}); err != nil {
			return err
		}
		go a.watchMain(j, gen)
		go a.supervise(j, gen)
		return nil
	}
	launcher, err := a.launcher(j.rec.Request.MPI)
	if err != nil {
		return err
	}
	hosts := make([]string, 0, len(specs)-1)
	for _, s := range specs[1:] {
		hosts = append(hosts, s.Addr.Addr().String())
	}
	gate := mpi.NewLaunchGate(launcher, hosts, func(data []byte) { a.emit(j, "stdout", data) })
	j.mu.Lock()
	j.gate = gate
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		j.gate = nil
		j.mu.Unlock()
	}()
	if _, err := self.Do(ctx, api.OpStart, api.NodeRequest{Job: j.id(), Coordinator: a.node, Spec: &specs[0]}); err != nil {
		return err
	}
	var res mpi.LaunchResult
	select {
	case res = <-gate.Result():
	case <-time.After(launchTimeout):
		return fmt.Errorf("%s named no process for the rank pods within %s", launcher.Command(), launchTimeout)
	}
	if res.Err != nil {
		// mpiexec failed by itself (bad arguments, say): what it printed
		// is in the job's output; its exit status is the job's.
		code, _ := self.Do(ctx, api.OpWait, api.NodeRequest{Job: j.id(), Pods: []string{specs[0].Name}})
		return fmt.Errorf("%s: %w (exit status %d)", launcher.Command(), res.Err, code.ExitCode)
	}
	// The ranks start at once on all their nodes.
	var wg sync.WaitGroup
	errs := make([]error, len(res.Launches))
	for i, l := range res.Launches {
		spec := specs[1+l.ID]
		spec.Argv = l.Argv
		j.mu.Lock()
		j.rec.Pods[1+l.ID].Argv = l.Argv
		j.mu.Unlock()
		wg.Add(1)
		go func(i int, spec api.PodSpec) {
			defer wg.Done()
			nc, err := a.conn(spec.Node, j.owner())
			if err == nil {
				_, err = nc.Do(ctx, api.OpStart, api.NodeRequest{Job: j.id(), Coordinator: a.node, Spec: &spec})
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
		nc, err := a.conn(main.Node, j.owner())
		if err != nil {
			a.log.Error("watching the main pod", "job", j.id(), "err", err)
			return
		}
		resp, err := nc.Do(context.Background(), api.OpWait, api.NodeRequest{Job: j.id(), Pods: []string{main.Name}})
		if err == nil {
			code = resp.ExitCode
			break
		}
		if errors.Is(err, api.ErrNotFound) {
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
		a.recoverJob(j, gen, fmt.Sprintf("the job's main process (%s on %s) ended with status %d", main.Name, main.Node, code), main.Node, false)
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
		resp, err := a.onNodes(context.Background(), j, api.OpPods, func(_ string, pods []string) api.NodeRequest {
			return api.NodeRequest{Job: j.id(), Pods: pods}
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
	a.event(j, api.Event{Kind: api.EventExited, Message: fmt.Sprintf("the job ended with status %d", code)})
	a.log.Info("job ended", "job", j.id(), "exit", code)
	a.dropSlurmCheckpoints(j)
}

// teardown removes all of the job's pods, on every node, and then appends
// the frame that ends the current run, after the last byte of the pods'
// output.
func (a *Agent) teardown(j *job, final api.Frame) {
	j.mu.Lock()
	j.ending = true
	j.mu.Unlock()
	resp, err := a.onNodes(context.Background(), j, api.OpDestroy, func(_ string, pods []string) api.NodeRequest {
		return api.NodeRequest{Job: j.id(), Pods: pods}
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
	j.out.Append(final)
}

// jobSink takes the output of the job's pods on this node: into the job's
// output log, or, while mpiexec is starting, mpiexec's stdout into the
// launch gate (which needs to see its end, nil, too).
func (a *Agent) jobSink(j *job) node.OutputSink {
	return func(stream string, data []byte) {
		j.mu.Lock()
		gate := j.gate
		j.mu.Unlock()
		if gate != nil && stream == "stdout" {
			gate.Write(data)
			return
		}
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
		data = d.Feed(data)
		if n, ok := d.Decided(); ok {
			a.event(j, api.Event{Kind: api.EventOutput, Message: fmt.Sprintf("the restored run repeated %d lines of output the failed run had printed after the checkpoint; they are not shown twice", n)})
		}
		if len(data) == 0 {
			return
		}
	}
	j.out.Append(api.Frame{Stream: stream, Data: data})
}

// boundOutput bounds the job's output log (output.max_log_bytes); the job's
// event log says when the bound is reached.
func (a *Agent) boundOutput(j *job) {
	j.out.SetLimit(a.cfg.Output.MaxLogBytes, func(limit int64) {
		a.event(j, api.Event{Kind: api.EventOutputLimit, Message: fmt.Sprintf(
			"the job's output log reached its bound of %d bytes (output.max_log_bytes in cruzd.toml): what the job prints from now on is discarded; it runs on", limit)})
	})
}

// endDedup settles the rollback filter, if any, and emits what it held.
func (a *Agent) endDedup(j *job) {
	j.mu.Lock()
	d := j.dedup
	j.dedup = nil
	j.mu.Unlock()
	if d != nil {
		if rest := d.Flush(); len(rest) > 0 {
			j.out.Append(api.Frame{Stream: "stdout", Data: rest})
		}
	}
}

// Signal forwards sig to the job's main process (mpiexec, which passes it on
// to the ranks, or a plain job's command). A pod's PID 1 ignores signals it
// has no handler for, unlike an ordinary process, so a signal whose default
// action ends a process ends it with SIGKILL when PID 1 does not handle it.
func (a *Agent) Signal(c caller, ref string, sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return api.Errorf(api.ErrInvalid, "signal %d is not a valid signal number", sig)
	}
	j, err := a.lookup(c, ref)
	if err != nil {
		return err
	}
	main, ok := j.mainPod()
	if !ok || !j.hasPods() {
		return api.Errorf(api.ErrConflict, "job %s is %s: it has no process to signal", j.id(), j.state())
	}
	nc, err := a.conn(main.Node, j.owner())
	if err != nil {
		return err
	}
	if node.TerminatesByDefault(sig) {
		j.mu.Lock()
		j.signalled = true
		j.mu.Unlock()
	}
	a.log.Info("signal", "job", j.id(), "signal", sig.String(), "by", c.UID)
	_, err = nc.Do(context.Background(), api.OpSignal, api.NodeRequest{Job: j.id(), Pods: []string{main.Name}, Signal: int(sig)})
	return err
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
	if checkpoints {
		// Refused before anything is torn down or forgotten.
		if err := a.store.CheckOwner(j.id(), j.storeOwner()); err != nil {
			return fmt.Errorf("delete checkpoints of job %s: %w", j.id(), ownerErr(err))
		}
	}
	if j.hasPods() {
		a.teardown(j, api.Frame{Error: fmt.Sprintf("job removed by uid %d (cruz rm)", c.UID)})
	}
	a.mu.Lock()
	delete(a.jobs, j.id())
	a.mu.Unlock()
	a.metrics.JobEnded(j.id())
	j.out.Close()
	if err := os.RemoveAll(a.jobDir(j.id())); err != nil {
		return fmt.Errorf("remove job directory: %w", err)
	}
	if checkpoints {
		j.storeGone.Store(true)
		if err := a.store.DeleteJob(j.id(), j.storeOwner()); err != nil {
			return fmt.Errorf("delete checkpoints of job %s: %w", j.id(), ownerErr(err))
		}
	}
	a.log.Info("job removed", "job", j.id(), "by", c.UID, "checkpoints", checkpoints)
	return nil
}

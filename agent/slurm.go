package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/proc"
	"github.com/cruz-hpc/cruz/internal/store"
)

// A Slurm step run with srun --cruz is one Cruz job, id slurm-JOB-STEP. Its
// first task (on the step's first node) asks this agent to start it, or,
// when Slurm requeued the job, to resume it from the step's last
// checkpoint; the agent of that node coordinates it. The SPANK plugin and
// the task side are in slurm-spank/ and launcher/slurmtask.go.

// slurmOutputLog is the name of a Slurm step's output log in its directory
// of the store.
const slurmOutputLog = "output.log"

// outputPath is where a job's output log is: in its run directory, or, for
// a Slurm step, in its directory of the shared store, so that a requeue that
// resumes it on another first node (when its coordinator's node failed,
// say) still has the output to replay.
func (a *Agent) outputPath(rec jobRecord) (string, error) {
	if rec.Request.Slurm == nil {
		return filepath.Join(a.jobDir(rec.ID), "output"), nil
	}
	p, err := a.store.JobFile(rec.ID, store.Owner{UID: rec.UID, GID: rec.GID}, slurmOutputLog)
	if errors.Is(err, store.ErrOwner) {
		return "", ownerErr(err)
	}
	if err != nil {
		return "", api.Errorf(api.ErrConflict, "the checkpoint store %s cannot take the Slurm step's files (%v): the store (store.dir in cruzd.toml) must be writable by the agents; run without --cruz until it is", a.store.Root(), err)
	}
	return p, nil
}

// slurmJobID is the Cruz job id of a Slurm step.
func slurmJobID(job, step uint32) string { return fmt.Sprintf("slurm-%d-%d", job, step) }

// slurmJobPrefix starts the ids of every step of Slurm job job.
func slurmJobPrefix(job uint32) string { return fmt.Sprintf("slurm-%d-", job) }

// validateSlurm checks the Slurm side of a step's run request and makes the
// request say where its pods go.
func (a *Agent) validateSlurm(req *api.RunRequest) error {
	s := req.Slurm
	if s.JobID == 0 {
		return api.Errorf(api.ErrInvalid, "Slurm job id 0 is not valid")
	}
	if s.Restarts < 0 {
		return api.Errorf(api.ErrInvalid, "Slurm restart count %d is not valid", s.Restarts)
	}
	if req.NP < 1 || len(s.RankNodes) != req.NP {
		return api.Errorf(api.ErrInvalid, "the step has %d tasks but %d task nodes were given", req.NP, len(s.RankNodes))
	}
	if req.Plain || len(req.Nodes) > 0 || req.Spares > 0 {
		return api.Errorf(api.ErrInvalid, "a Slurm step's job runs where Slurm placed its tasks: no --plain, --nodes or --spares")
	}
	var nodes []string
	for _, n := range s.RankNodes {
		if !a.isNode(n) {
			return api.Errorf(api.ErrInvalid, "Slurm node %q has no cruz agent in this cluster (cluster.peers lists %s): every Slurm node must run cruzd under its Slurm node name", n, strings.Join(a.nodes(), ", "))
		}
		if !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	if nodes[0] != a.node {
		return api.Errorf(api.ErrInvalid, "the step's first task runs on %s, not on this agent's node %s: its first task must ask the agent of its own node", nodes[0], a.node)
	}
	if req.NP == 1 {
		// One task: the program runs as it is, in one pod, like cruz run.
		req.Plain = true
		return nil
	}
	req.Nodes = nodes
	return nil
}

// RunSlurm starts the job of a Slurm step, or resumes it from its last
// complete checkpoint if Slurm requeued the job (Restarts > 0) and the step
// ran the same program before. It returns the job and the offset of its
// output log to stream from, and the frames to send before that (the
// output of the step's earlier runs, up to the checkpoint).
func (a *Agent) RunSlurm(ctx context.Context, c caller, req api.RunRequest) (*job, int64, int64, error) {
	if req.Slurm == nil {
		return nil, 0, 0, api.Errorf(api.ErrInvalid, "no Slurm step given")
	}
	if err := a.validateSlurm(&req); err != nil {
		return nil, 0, 0, err
	}
	s := req.Slurm
	id := slurmJobID(s.JobID, s.StepID)
	step := fmt.Sprintf("%d.%d", s.JobID, s.StepID)
	j, err := a.lookupID(c, id)
	adopted := false
	if errors.Is(err, api.ErrNotFound) {
		j, err = a.adopt(c, id, err)
		adopted = err == nil
	}
	if errors.Is(err, api.ErrForbidden) {
		// Slurm's job ids start over when its state is reset: another
		// user's job of the same id left this one's record or checkpoints.
		return nil, 0, 0, api.Errorf(api.ErrConflict, "cruz job %s (of an earlier Slurm job %d) belongs to another user: ask an administrator to remove it (as root: cruz rm --checkpoints %s)", id, s.JobID, id)
	}
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return nil, 0, 0, err
	}
	if j != nil {
		if j.state().HoldsPods() {
			return nil, 0, 0, api.Errorf(api.ErrConflict, "Slurm step %s runs already as cruz job %s (%s): one srun --cruz per step", step, id, j.state())
		}
		others := a.peerJobs(ctx, c, id)
		if node := runningOn(others); node != "" {
			return nil, 0, 0, api.Errorf(api.ErrConflict, "Slurm step %s runs already as cruz job %s on node %s", step, id, node)
		}
		j.mu.Lock()
		prev := j.rec.Request
		j.mu.Unlock()
		same := prev.Slurm != nil && prev.NP == req.NP && slices.Equal(prev.Argv, req.Argv)
		// A step that had ended by itself before the requeue runs again
		// from its start, as Slurm reruns the whole batch script.
		finished := j.state() == api.StateExited || (adopted && slices.ContainsFunc(others, func(o peerJob) bool {
			return o.job.State == api.StateExited // where it ran before the requeue
		}))
		if s.Restarts > 0 && same && !finished {
			if m, _, _, lerr := a.store.Latest(id); lerr == nil && m != nil {
				return a.resumeSlurm(ctx, c, j, req)
			}
		}
		// A step of an earlier Slurm job with the same id (Slurm's ids
		// start over when its state is reset), or a requeued step without
		// a checkpoint or with another program: its state is of no use.
		why := "the Slurm job was not requeued"
		if s.Restarts > 0 && finished {
			why = "the step had ended before the requeue"
		} else if s.Restarts > 0 && !same {
			why = "the step runs another program than before"
		} else if s.Restarts > 0 {
			why = "the step has no complete checkpoint yet"
		}
		a.log.Info("Slurm step starts afresh: removing its earlier cruz job", "job", id, "why", why)
		if err := a.Remove(c, id, true); err != nil && !errors.Is(err, api.ErrNotFound) {
			return nil, 0, 0, fmt.Errorf("remove the earlier cruz job %s of Slurm step %s (%s): %w", id, step, why, err)
		}
	}
	j, err = a.run(ctx, c, req, id)
	return j, 0, 0, err
}

// dropSlurmCheckpoints deletes the checkpoints of a Slurm step that ended
// by itself: nothing resumes from them (a requeue runs such a step again
// from its start, as Slurm reruns the batch script), and nobody would
// delete them otherwise.
func (a *Agent) dropSlurmCheckpoints(j *job) {
	j.mu.Lock()
	slurm := j.rec.Request.Slurm != nil
	j.mu.Unlock()
	if !slurm {
		return
	}
	j.storeGone.Store(true)
	if err := a.store.DeleteJob(j.id(), j.storeOwner()); err != nil {
		a.log.Warn("deleting the checkpoints of an ended Slurm step", "job", j.id(), "err", err)
		return
	}
	a.event(j, api.Event{Kind: api.EventPruned, Message: "the Slurm step ended by itself: its checkpoints are deleted (a requeue would run it from its start)"})
}

// resumeSlurm restores a requeued step's job on the step's new nodes, its
// ranks where Slurm put their tasks, from its newest complete checkpoint.
func (a *Agent) resumeSlurm(ctx context.Context, c caller, j *job, req api.RunRequest) (*job, int64, int64, error) {
	rankNodes := req.Slurm.RankNodes
	place := func(pods []api.PodSpec) error {
		for i := range pods {
			switch {
			case pods[i].Role != api.RoleRank:
				pods[i].Node = a.node
			case pods[i].Rank >= 0 && pods[i].Rank < len(rankNodes):
				pods[i].Node = rankNodes[pods[i].Rank]
			default:
				return api.Errorf(api.ErrConflict, "pod %s is rank %d, but the step has %d tasks", pods[i].Name, pods[i].Rank, len(rankNodes))
			}
		}
		return nil
	}
	var replayTo int64
	prepare := func(j *job, m *store.Manifest, start int64) {
		// Slurm truncates a requeued job's output files. The output of the
		// step's earlier runs goes to the new run's first, all of it (also
		// what was on its way out of the pods when the checkpoint was
		// taken), streamed from the log; what the restored run prints
		// again of what the cancelled run printed after the checkpoint is
		// not shown twice, as after a rollback. So the step's output reads
		// as one run's.
		replayTo = start
		if appended, stdout := a.outputAppended(j, start, req.Slurm.OutputFileBytes); appended {
			// Slurm appended to the output file, which holds the
			// earlier output already.
			replayTo = 0
			a.log.Info("Slurm kept the requeued job's output file: the step's earlier output is not replayed", "job", j.id(),
				"file_bytes", *req.Slurm.OutputFileBytes, "earlier_stdout_bytes", stdout)
		}
		d, err := joblog.DedupSince(j.out.Path(), m.OutputOffset)
		if err != nil {
			a.log.Warn("reading the output the cancelled run printed after the checkpoint: the resumed run's repetition of it is shown", "job", j.id(), "err", err)
		}
		j.mu.Lock()
		j.dedup = d
		j.rec.Request.Slurm = req.Slurm
		j.rec.Request.Env, j.rec.Request.Interval, j.rec.Request.Restart = req.Env, req.Interval, req.Restart
		j.mu.Unlock()
	}
	if err := a.checkStore(req.Store); err != nil {
		return nil, 0, 0, err
	}
	rj, from, err := a.restart(ctx, c, j, "", place, prepare)
	if err != nil {
		// The step's other tasks wait for this run of it: it is over.
		a.setState(j, api.StateFailed, "resume from the last checkpoint failed: "+err.Error())
		return nil, 0, 0, fmt.Errorf("resume Slurm step %d.%d from its last checkpoint: %w", req.Slurm.JobID, req.Slurm.StepID, err)
	}
	return rj, from, replayTo, nil
}

// outputAppended tells whether a requeued step's output file, fileBytes
// long when the step started, holds the step's earlier output already: at
// least as many bytes as the stdout in its log before offset to (which it
// returns). Slurm truncates the file at a requeue unless the job appends
// (--open-mode=append, JobFileAppend=1), and does not tell the job which;
// truncated, the file holds only what the batch script printed before
// this srun. Unknown size: not appended (the replay is what Slurm's
// default needs).
func (a *Agent) outputAppended(j *job, to int64, fileBytes *int64) (bool, int64) {
	if fileBytes == nil {
		return false, 0
	}
	var stdout int64
	err := joblog.EachOutputFrame(j.out.Path(), to, func(f api.Frame) error {
		if f.Stream == "stdout" {
			stdout += int64(len(f.Data))
		}
		return nil
	})
	if err != nil {
		a.log.Warn("reading a requeued step's earlier output", "job", j.id(), "err", err)
		return false, 0
	}
	return stdout > 0 && *fileBytes >= stdout, stdout
}

// checkStore refuses a store other than the agent's own: checkpoints hold
// process memory, so they go only where the agent keeps them safe (a
// root-owned store, store.dir in cruzd.toml).
func (a *Agent) checkStore(dir string) error {
	if dir == "" || filepath.Clean(dir) == a.store.Root() {
		return nil
	}
	return api.Errorf(api.ErrInvalid, "checkpoint store %s: this cluster's agents keep checkpoints in %s (store.dir in cruzd.toml) and take no other: drop --cruz-store, or give --cruz-store=%s", dir, a.store.Root(), a.store.Root())
}

// SlurmEnd ends what runs for Slurm job req.JobID: the jobs of its steps
// that this agent coordinates lose their pods on every node (they keep
// their checkpoints, for a requeue) and become cancelled; pods of its steps
// on this node whose coordinator is elsewhere are ended through that
// coordinator, and removed here if it does not answer.
func (a *Agent) SlurmEnd(ctx context.Context, c caller, req api.SlurmEndRequest) (api.SlurmEndResult, error) {
	res := api.SlurmEndResult{Jobs: []string{}, Pods: []string{}}
	if req.JobID == 0 {
		return res, api.Errorf(api.ErrInvalid, "Slurm job id 0 is not valid")
	}
	prefix := slurmJobPrefix(req.JobID)
	matches := func(id string) bool {
		if req.StepID != nil {
			return id == slurmJobID(req.JobID, *req.StepID)
		}
		return strings.HasPrefix(id, prefix)
	}
	reason := req.Reason
	if reason == "" {
		reason = "Slurm ended the job"
	}
	for _, j := range a.jobList() {
		if !matches(j.id()) {
			continue
		}
		if c.UID != 0 && j.owner().UID != c.UID {
			return res, api.Errorf(api.ErrForbidden, "job %s belongs to uid %d: you (uid %d) can end only your own jobs", j.id(), j.owner().UID, c.UID)
		}
		if a.cancelJob(j, c, reason) {
			res.Jobs = append(res.Jobs, j.id())
		}
	}
	// Pods here of steps coordinated elsewhere (the epilog of a node that
	// is not the step's first).
	for _, s := range a.local.Sets(matches) {
		if c.UID != 0 && s.UID != c.UID {
			return res, api.Errorf(api.ErrForbidden, "the pods of job %s belong to uid %d: you (uid %d) can end only your own jobs", s.Job, s.UID, c.UID)
		}
		if s.Coordinator != "" && s.Coordinator != a.node {
			if nc, err := a.conn(s.Coordinator, c); err == nil {
				cctx, cancel := context.WithTimeout(ctx, nodeTimeout)
				err = nc.Call(cctx, http.MethodPost, "/v1/slurm/end", req, nil)
				cancel()
				if err != nil {
					a.log.Warn("asking a Slurm step's coordinator to end it", "job", s.Job, "coordinator", s.Coordinator, "err", err)
				}
			}
		}
		if len(s.Pods) == 0 {
			continue
		}
		if _, err := a.local.Do(ctx, rootCaller, api.OpDestroy, api.NodeRequest{Job: s.Job}); err != nil {
			return res, fmt.Errorf("remove the pods of job %s: %w", s.Job, err)
		}
		for name := range s.Pods {
			res.Pods = append(res.Pods, name)
		}
	}
	slices.Sort(res.Pods)
	if len(res.Jobs)+len(res.Pods) > 0 {
		a.log.Info("ended a Slurm job's pods", "slurm_job", req.JobID, "jobs", res.Jobs, "pods", res.Pods, "reason", reason, "by", c.UID)
	}
	return res, nil
}

// cancelJob removes the pods of a job this agent coordinates, on every
// node, and marks it cancelled; false if it had none.
func (a *Agent) cancelJob(j *job, c caller, reason string) bool {
	j.stopSupervisor()
	j.op.Lock()
	defer j.op.Unlock()
	if !j.hasPods() {
		return false
	}
	a.teardown(j, api.Frame{Error: reason})
	a.setState(j, api.StateCancelled, reason)
	a.event(j, api.Event{Kind: api.EventCancelled, Message: fmt.Sprintf("%s (by uid %d); its checkpoints are kept: a requeue resumes it from the last one", reason, c.UID)})
	return true
}

// lookupID finds a job by its exact id.
func (a *Agent) lookupID(c caller, id string) (*job, error) {
	a.mu.Lock()
	j, ok := a.jobs[id]
	a.mu.Unlock()
	if !ok {
		return nil, api.Errorf(api.ErrNotFound, "job %q does not exist on this node", id)
	}
	if c.UID != 0 && j.owner().UID != c.UID {
		return nil, api.Errorf(api.ErrForbidden, "job %s belongs to uid %d: you (uid %d) can act only on your own jobs", id, j.owner().UID, c.UID)
	}
	return j, nil
}

// lookupSlurmLocked finds the job of a Slurm job id ("1234": its step that
// holds pods, else its newest step) or step ("1234.2") among the caller's
// jobs. a.mu is held.
func (a *Agent) lookupSlurmLocked(c caller, ref string) (*job, bool) {
	jobPart, stepPart, hasStep := strings.Cut(ref, ".")
	jobID, err := strconv.ParseUint(jobPart, 10, 32)
	if err != nil || jobID == 0 {
		return nil, false
	}
	if hasStep {
		step, err := strconv.ParseUint(stepPart, 10, 32)
		if err != nil {
			return nil, false
		}
		j, ok := a.jobs[slurmJobID(uint32(jobID), uint32(step))]
		return j, ok
	}
	var best *job
	var bestRunning bool
	var bestTime time.Time
	for id, j := range a.jobs {
		if !strings.HasPrefix(id, slurmJobPrefix(uint32(jobID))) {
			continue
		}
		j.mu.Lock()
		uid, running, created := j.rec.UID, j.rec.State.HoldsPods(), j.rec.Created
		j.mu.Unlock()
		if c.UID != 0 && uid != c.UID {
			continue
		}
		if best == nil || (running && !bestRunning) || (running == bestRunning && created.After(bestTime)) {
			best, bestRunning, bestTime = j, running, created
		}
	}
	return best, best != nil
}

func (a *Agent) handleRunSlurm(w http.ResponseWriter, r *http.Request, c caller) error {
	if fromPeer(r.Context()) {
		return api.Errorf(api.ErrForbidden, "a Slurm step starts through the agent of its first node's unix socket")
	}
	var req api.RunRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := a.checkSlurmTask(peerPID(r.Context()), c, req); err != nil {
		return err
	}
	if err := a.checkSlurmStep(r.Context(), c, req); err != nil {
		return err
	}
	j, from, replayTo, err := a.RunSlurm(r.Context(), c, req)
	if j == nil {
		return err
	}
	a.streamWith(w, r, j, replayTo, from)
	return nil
}

// checkSlurmTask makes sure that the process asking to run a Slurm step's
// job (the step's first task, pid) runs in that very step, as Slurm's
// slurmstepd above it says: the step's id in the request comes from the
// task's environment, which its user may set to anything, and the id gives
// the step's cruz job, its store directory and its checkpoints.
func (a *Agent) checkSlurmTask(pid int, c caller, req api.RunRequest) error {
	if req.Slurm == nil {
		return nil // RunSlurm says what is wrong
	}
	want := fmt.Sprintf("%d.%d", req.Slurm.JobID, req.Slurm.StepID)
	got, err := proc.SlurmStepOf(pid)
	if err == nil && got == want {
		return nil
	}
	why := fmt.Sprintf("it runs in Slurm step %s", got)
	if err != nil {
		why = err.Error()
	}
	return api.Errorf(api.ErrForbidden, "refused to run Slurm step %s for uid %d: the calling process (pid %d) is not a task of that step (%s); srun --cruz starts a step's job, SLURM_JOB_ID and SLURM_STEP_ID set by hand are not trusted", want, c.UID, pid, why)
}

// checkSlurmStep makes sure that the step's owner and nodes in the request,
// which the first task read from its environment, are those slurmctld gives
// the step: a user's task may set SLURM_STEP_NODELIST and friends to
// anything, and the nodes say where the step's pods go, which would
// otherwise put them on nodes the user was never allocated. (Slurm's
// record has no per-node task counts: the ranks are spread over the step's
// own nodes however the request says.)
func (a *Agent) checkSlurmStep(ctx context.Context, c caller, req api.RunRequest) error {
	if req.Slurm == nil {
		return nil
	}
	id := fmt.Sprintf("%d.%d", req.Slurm.JobID, req.Slurm.StepID)
	refuse := func(format string, args ...any) error {
		return api.Errorf(api.ErrForbidden, "refused to run Slurm step %s for uid %d: %s", id, c.UID, fmt.Sprintf(format, args...))
	}
	st, err := a.showStep(ctx, id)
	if err != nil {
		return refuse("cannot ask slurmctld about the step (%v): its owner and nodes are checked with scontrol show step; check that scontrol works on node %s (agent.slurm_conf in cruzd.toml names slurm.conf)", err, a.node)
	}
	if st.UID != c.UID {
		return refuse("Slurm says the step belongs to uid %d", st.UID)
	}
	var asked []string
	for _, n := range req.Slurm.RankNodes {
		if !slices.Contains(asked, n) {
			asked = append(asked, n)
		}
	}
	want := slices.Clone(st.Nodes)
	slices.Sort(want)
	got := slices.Clone(asked)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return refuse("its tasks' environment places them on nodes %s, but Slurm (scontrol show step %s) runs the step on %s; SLURM_STEP_NODELIST and SLURM_STEP_TASKS_PER_NODE set by hand are not trusted", strings.Join(asked, ","), id, strings.Join(st.Nodes, ","))
	}
	if st.Tasks != req.NP {
		return refuse("the request has %d tasks, but Slurm's step has %d; SLURM_STEP_NUM_TASKS set by hand is not trusted", req.NP, st.Tasks)
	}
	return nil
}

func (a *Agent) handleSlurmEnd(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.SlurmEndRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	res, err := a.SlurmEnd(context.WithoutCancel(r.Context()), c, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

package agent

// The policy engine on a job's coordinator: periodic checkpoints (fixed or
// Young/Daly intervals, package policy), retention, failure detection
// (heartbeats to the job's nodes, pods that die, mpiexec ending with an
// error) and automatic recovery: the whole job rolled back to its last
// complete checkpoint on its healthy nodes plus spares, within a restart
// budget. Every decision goes to the job's event log (cruz events).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/policy"
)

// jobPolicy is what a job's record keeps of its policy (the cluster's,
// with the job's own choices).
type jobPolicy struct {
	Mode     policy.Mode   `json:"mode"`
	Interval time.Duration `json:"interval"`
	Keep     int           `json:"keep"`
	Restart  string        `json:"restart"` // auto or never
}

func (p jobPolicy) String() string {
	var every string
	switch p.Mode {
	case policy.ModeOff:
		every = "no periodic checkpoints"
	case policy.ModeAuto:
		every = "checkpoint at the Young/Daly interval"
	default:
		every = "checkpoint every " + p.Interval.String()
	}
	return fmt.Sprintf("%s, keep %d, restart %s", every, p.Keep, p.Restart)
}

// resolvePolicy applies a run request's choices to the cluster's policy.
func (a *Agent) resolvePolicy(req api.RunRequest) (jobPolicy, error) {
	cp := a.cfg.PolicyValues()
	p := jobPolicy{Mode: cp.Mode, Interval: cp.Interval, Keep: cp.Keep, Restart: a.cfg.Policy.Restart}
	switch req.Interval {
	case "":
	case "off":
		p.Mode = policy.ModeOff
	case "auto":
		p.Mode = policy.ModeAuto
	default:
		d, err := time.ParseDuration(req.Interval)
		if err != nil || d < time.Second {
			return p, api.Errorf(api.ErrInvalid, "--interval %q is not a duration of at least 1s (e.g. 30s, 10m), \"auto\" or \"off\"", req.Interval)
		}
		p.Mode, p.Interval = policy.ModeFixed, d
	}
	if req.Keep < 0 {
		return p, api.Errorf(api.ErrInvalid, "--keep %d: keep at least 1 checkpoint", req.Keep)
	}
	if req.Keep > 0 {
		p.Keep = req.Keep
	}
	switch req.Restart {
	case "":
	case "auto", "never":
		p.Restart = req.Restart
	default:
		return p, api.Errorf(api.ErrInvalid, "--restart %q is not \"auto\" or \"never\"", req.Restart)
	}
	return p, nil
}

// policyConfig is the policy package's view of the job's policy.
func (a *Agent) policyConfig(j *job) policy.Config {
	j.mu.Lock()
	rec := j.rec
	j.mu.Unlock()
	return a.policyValuesFor(rec)
}

func (a *Agent) policyValuesFor(rec jobRecord) policy.Config {
	c := a.cfg.PolicyValues()
	p := rec.Policy
	nodes := map[string]bool{}
	for _, s := range rec.Pods {
		nodes[s.Node] = true
	}
	if p.Keep == 0 { // a record of an older agent
		return c
	}
	c.Mode, c.Interval, c.Keep = p.Mode, p.Interval, p.Keep
	// The job fails when any of its nodes does.
	if len(nodes) > 1 {
		c.MTBF /= time.Duration(len(nodes))
	}
	return c
}

// supervisor is the policy engine's state for one job.
type supervisor struct {
	sched    *policy.Scheduler
	restarts policy.Restarts
	// cancel ends the periodic checkpoint under way, if any: a recovery
	// does not wait for it to time out on a node that is gone.
	cancel context.CancelFunc
	// stretched is the wait after a checkpoint that the overhead cap
	// imposed when the job's events last said so; 0 when on the interval.
	stretched time.Duration
}

func (a *Agent) supervisorOf(j *job) *supervisor {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sup == nil {
		j.sup = &supervisor{}
	}
	return j.sup
}

// supervise runs while run gen of the job lasts: it takes the periodic
// checkpoints and watches the job's nodes and pods.
func (a *Agent) supervise(j *job, gen int) {
	sup := a.supervisorOf(j)
	cfg := a.policyConfig(j)
	j.mu.Lock()
	// Each run (a start, a restart, a rollback) starts its period afresh;
	// only the restart budget carries over from run to run.
	sup.sched = policy.NewScheduler(cfg, time.Now())
	j.mu.Unlock()
	hb := a.cfg.Policy.Heartbeat.Duration
	go a.watchNodes(j, gen, hb)
	for {
		time.Sleep(hb)
		if !j.current(gen) {
			return
		}
		j.mu.Lock()
		due := sup.sched.Due(time.Now())
		j.mu.Unlock()
		if due && j.op.TryLock() {
			if j.current(gen) && j.state() == api.StateRunning {
				a.periodicCheckpoint(j, sup)
			}
			j.op.Unlock()
		}
	}
}

// watchNodes sends the heartbeats of run gen of the job and starts its
// recovery when it has failed.
func (a *Agent) watchNodes(j *job, gen int, hb time.Duration) {
	timeout := a.cfg.Policy.HeartbeatTimeout.Duration
	lastSeen := map[string]time.Time{}
	start := time.Now()
	for {
		time.Sleep(hb)
		if !j.current(gen) {
			return
		}
		if reason, node, silent := a.heartbeat(j, gen, hb, lastSeen, start, timeout); reason != "" {
			a.recoverJob(j, gen, reason, node, silent)
			return
		}
	}
}

// heartbeat asks every node of the job for its pods; it returns why the job
// has failed ("" if it has not) and the node at fault.
func (a *Agent) heartbeat(j *job, gen int, hb time.Duration, lastSeen map[string]time.Time, start time.Time, timeout time.Duration) (reason, at string, silent bool) {
	// A node gets one heartbeat period to answer, so that a silent one is
	// noticed about heartbeat_timeout after its last answer.
	ctx, cancel := context.WithTimeout(context.Background(), hb)
	defer cancel()
	groups := j.byNode()
	type answer struct {
		node string
		resp api.NodeResponse
		err  error
	}
	answers := make(chan answer, len(groups))
	for node, pods := range groups {
		go func(node string, pods []string) {
			nc, err := a.conn(node, j.owner())
			var resp api.NodeResponse
			if err == nil {
				resp, err = nc.Do(ctx, api.OpPods, api.NodeRequest{Job: j.id(), Pods: pods})
			}
			answers <- answer{node, resp, err}
		}(node, pods)
	}
	now := time.Now()
	for range groups {
		ans := <-answers
		if ans.err == nil {
			lastSeen[ans.node] = now
			for _, p := range ans.resp.Pods {
				if p.Exited && p.Code != 0 && p.Role != api.RoleRank && reason == "" {
					continue // the main pod's end is watchMain's to judge
				}
				if p.Exited && p.Code != 0 && reason == "" {
					reason, at = fmt.Sprintf("pod %s on node %s ended with status %d", p.Name, ans.node, p.Code), ans.node
				}
			}
			continue
		}
		if errors.Is(ans.err, api.ErrNotFound) && reason == "" {
			reason, at = fmt.Sprintf("node %s no longer has the job's pods", ans.node), ans.node
			continue
		}
		seen, ok := lastSeen[ans.node]
		if !ok {
			seen = start
		}
		if now.Sub(seen) > timeout && reason == "" {
			reason, at, silent = fmt.Sprintf("node %s has not answered for %s: %v", ans.node, now.Sub(seen).Round(time.Second), firstLine(ans.err.Error())), ans.node, true
		}
	}
	if reason != "" && !j.current(gen) {
		return "", "", false
	}
	return reason, at, silent
}

// periodicCheckpoint takes a checkpoint for the policy; caller holds j.op.
func (a *Agent) periodicCheckpoint(j *job, sup *supervisor) {
	t0 := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	j.mu.Lock()
	sup.cancel = cancel
	j.mu.Unlock()
	m, err := a.checkpointLocked(ctx, j, false)
	cancel()
	j.mu.Lock()
	sup.cancel = nil
	if err != nil {
		sup.sched.Failed(time.Now(), time.Since(t0))
		failures := sup.sched.Failures()
		next, _ := sup.sched.Next()
		j.mu.Unlock()
		a.event(j, api.Event{Kind: api.EventCheckpointFailed, Message: fmt.Sprintf("periodic checkpoint failed (%d in a row), retrying at %s: %v",
			failures, next.UTC().Format(time.TimeOnly), firstLine(err.Error()))})
		return
	}
	// The job is held from the block until its traffic flows again, after
	// the dumps (the commit follows while it runs).
	held := time.Duration(m.Phases["held"]) * time.Millisecond
	sup.sched.Succeeded(time.Now(), held)
	interval := sup.sched.Interval()
	wait, stretched := sup.sched.Stretch()
	if !stretched {
		wait = interval
	}
	var say string
	switch {
	case stretched && (sup.stretched == 0 || wait > sup.stretched*5/4 || wait < sup.stretched*3/4):
		say = fmt.Sprintf("the next checkpoint waits %s, not the policy's %s: checkpoints held the job %s the last time, and policy.max_overhead keeps their holds within %g %% of its time",
			wait.Round(100*time.Millisecond), interval, held.Round(time.Millisecond), sup.sched.Config().MaxOverhead*100)
		sup.stretched = wait
	case !stretched && sup.stretched != 0:
		say = fmt.Sprintf("checkpoints are back to the policy's interval of %s (the last held the job %s)", interval, held.Round(time.Millisecond))
		sup.stretched = 0
	}
	j.mu.Unlock()
	a.event(j, api.Event{Kind: api.EventCheckpoint, Checkpoint: m.ID, Millis: time.Since(t0).Milliseconds(),
		Message: fmt.Sprintf("periodic checkpoint %s: %s in %d ms (traffic held %d ms); next in %s", m.ID, humanSize(m.Bytes), time.Since(t0).Milliseconds(), held.Milliseconds(), wait.Round(100*time.Millisecond)) + warningsNote(m)})
	if say != "" {
		a.event(j, api.Event{Kind: api.EventStretched, Message: say})
	}
	a.prune(j)
}

// prune deletes the checkpoints the job's retention policy no longer keeps.
// Caller holds j.op, so no restore of this job reads them meanwhile.
func (a *Agent) prune(j *job) {
	list, _, err := a.store.List(j.id())
	if err != nil {
		return
	}
	cfg := a.policyConfig(j)
	var cks []policy.Checkpoint
	for _, m := range list {
		cks = append(cks, policy.Checkpoint{ID: m.ID, Created: m.Created, Bytes: m.Bytes})
	}
	gone := policy.Prune(cks, cfg.Keep, cfg.MaxBytes, nil)
	var deleted []string
	for _, id := range gone {
		if err := a.store.Delete(j.id(), id, j.storeOwner()); err != nil {
			a.log.Warn("deleting an old checkpoint", "job", j.id(), "checkpoint", id, "err", err)
			continue
		}
		deleted = append(deleted, id)
	}
	if len(deleted) > 0 {
		a.event(j, api.Event{Kind: api.EventPruned, Message: fmt.Sprintf("deleted %s (keeping the last %d)", strings.Join(deleted, ", "), cfg.Keep)})
	}
}

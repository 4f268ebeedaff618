package agent

// The policy engine on a job's coordinator: periodic checkpoints (fixed or
// Young/Daly intervals, package policy), retention, failure detection
// (heartbeats to the job's nodes, pods that die, mpiexec ending with an
// error) and automatic recovery: the whole job rolled back to its last
// complete checkpoint on its healthy nodes plus spares, within a restart
// budget. Every decision goes to the job's event log (cruz events).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
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
			return p, errorf(errBadRequest, "--interval %q is not a duration of at least 1s (e.g. 30s, 10m), \"auto\" or \"off\"", req.Interval)
		}
		p.Mode, p.Interval = policy.ModeFixed, d
	}
	if req.Keep < 0 {
		return p, errorf(errBadRequest, "--keep %d: keep at least 1 checkpoint", req.Keep)
	}
	if req.Keep > 0 {
		p.Keep = req.Keep
	}
	switch req.Restart {
	case "":
	case "auto", "never":
		p.Restart = req.Restart
	default:
		return p, errorf(errBadRequest, "--restart %q is not \"auto\" or \"never\"", req.Restart)
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
		if reason, node := a.heartbeat(j, gen, hb, lastSeen, start, timeout); reason != "" {
			a.recoverJob(j, gen, reason, node)
			return
		}
	}
}

// current tells whether run gen of the job is still the live one.
// stopSupervisor ends the policy engine's work on the job's current run
// (a periodic checkpoint it waits for, say) before the run is ended.
func (j *job) stopSupervisor() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sup != nil && j.sup.cancel != nil {
		j.sup.cancel()
	}
}

func (j *job) current(gen int) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.gen == gen && j.live && !j.ending
}

// heartbeat asks every node of the job for its pods; it returns why the job
// has failed ("" if it has not) and the node at fault.
func (a *Agent) heartbeat(j *job, gen int, hb time.Duration, lastSeen map[string]time.Time, start time.Time, timeout time.Duration) (string, string) {
	// A node gets one heartbeat period to answer, so that a silent one is
	// noticed about heartbeat_timeout after its last answer.
	ctx, cancel := context.WithTimeout(context.Background(), hb)
	defer cancel()
	groups := j.byNode()
	type answer struct {
		node string
		resp nodeResp
		err  error
	}
	answers := make(chan answer, len(groups))
	for node, pods := range groups {
		go func(node string, pods []string) {
			nc, err := a.client(node, j.owner())
			var resp nodeResp
			if err == nil {
				resp, err = nc.do(ctx, opPods, nodeReq{Job: j.id(), Pods: pods})
			}
			answers <- answer{node, resp, err}
		}(node, pods)
	}
	now := time.Now()
	var reason, at string
	for range groups {
		ans := <-answers
		if ans.err == nil {
			lastSeen[ans.node] = now
			for _, p := range ans.resp.Pods {
				if p.Exited && p.Code != 0 && p.Role != "rank" && reason == "" {
					continue // the main pod's end is watchMain's to judge
				}
				if p.Exited && p.Code != 0 && reason == "" {
					reason, at = fmt.Sprintf("pod %s on node %s ended with status %d", p.Name, ans.node, p.Code), ans.node
				}
			}
			continue
		}
		if isStatus(ans.err, 404) && reason == "" {
			reason, at = fmt.Sprintf("node %s no longer has the job's pods", ans.node), ans.node
			continue
		}
		seen, ok := lastSeen[ans.node]
		if !ok {
			seen = start
		}
		if now.Sub(seen) > timeout && reason == "" {
			reason, at = fmt.Sprintf("node %s has not answered for %s: %v", ans.node, now.Sub(seen).Round(time.Second), firstLine(ans.err.Error())), ans.node
		}
	}
	if reason != "" && !j.current(gen) {
		return "", ""
	}
	return reason, at
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
		sup.sched.Failed(time.Now())
		failures := sup.sched.Failures()
		next, _ := sup.sched.Next()
		j.mu.Unlock()
		a.event(j, api.Event{Kind: "checkpoint_failed", Message: fmt.Sprintf("periodic checkpoint failed (%d in a row), retrying at %s: %v",
			failures, next.UTC().Format(time.TimeOnly), firstLine(err.Error()))})
		return
	}
	held := time.Duration(m.Phases["block"]+m.Phases["dump"]+m.Phases["commit"]) * time.Millisecond
	sup.sched.Succeeded(time.Now(), held)
	interval := sup.sched.Interval()
	j.mu.Unlock()
	a.event(j, api.Event{Kind: "checkpoint", Checkpoint: m.ID, Millis: time.Since(t0).Milliseconds(),
		Message: fmt.Sprintf("periodic checkpoint %s: %s in %d ms (traffic held %d ms); next in %s", m.ID, humanSize(m.Bytes), time.Since(t0).Milliseconds(), held.Milliseconds(), interval.Round(time.Second))})
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
		if err := a.store.Delete(j.id(), id); err != nil {
			a.log.Warn("deleting an old checkpoint", "job", j.id(), "checkpoint", id, "err", err)
			continue
		}
		deleted = append(deleted, id)
	}
	if len(deleted) > 0 {
		a.event(j, api.Event{Kind: "pruned", Message: fmt.Sprintf("deleted %s (keeping the last %d)", strings.Join(deleted, ", "), cfg.Keep)})
	}
}

// recoverJob rolls a failed run back to the job's last complete checkpoint,
// on its healthy nodes plus spares, if its policy and restart budget allow.
func (a *Agent) recoverJob(j *job, gen int, reason, badNode string) {
	j.stopSupervisor()
	j.op.Lock()
	defer j.op.Unlock()
	if !j.current(gen) {
		return
	}
	a.event(j, api.Event{Kind: "failure", Node: badNode, Message: reason})
	a.log.Warn("job failed", "job", j.id(), "reason", reason)
	t0 := time.Now()
	j.mu.Lock()
	restart := j.rec.Policy.Restart
	j.mu.Unlock()
	sup := a.supervisorOf(j)
	j.mu.Lock()
	endCode := j.endCode
	j.endCode = nil
	j.mu.Unlock()
	giveUp := func(why string) {
		final := api.Frame{Error: "the job failed: " + reason + "; " + why}
		if endCode != nil {
			// The program's own status, for its caller (srun, a script).
			final.Exit = &api.ExitInfo{Code: *endCode}
			j.mu.Lock()
			j.rec.ExitCode = endCode
			j.mu.Unlock()
		}
		a.teardown(j, final)
		a.setState(j, api.StateFailed, reason+"; "+why)
		a.event(j, api.Event{Kind: "gave_up", Message: why})
	}
	if restart != "auto" {
		giveUp("its restart policy is never (cruz restart " + j.id() + " restores it by hand)")
		return
	}
	cfg := a.policyConfig(j)
	j.mu.Lock()
	delay, ok, why := sup.restarts.Allow(cfg, time.Now())
	j.mu.Unlock()
	if !ok {
		giveUp(why)
		return
	}
	// What is left of the run goes, on the nodes that answer.
	healthy := a.liveNodes(2 * time.Second)
	a.dropRun(j, healthy)
	a.rollback(j, reason, healthy, delay, t0, giveUp)
}

// rollback restores a job whose run is gone from its newest complete
// checkpoint, after delay; caller holds j.op. giveUp ends the job when it
// cannot.
func (a *Agent) rollback(j *job, reason string, healthy map[string]bool, delay time.Duration, t0 time.Time, giveUp func(string)) {
	sup := a.supervisorOf(j)
	cfg := a.policyConfig(j)
	a.setState(j, api.StateRestoring, "recovering: "+reason)
	a.event(j, api.Event{Kind: "restarting", Message: fmt.Sprintf("rolling back in %s (automatic restart %d of at most %d in %s)",
		delay, sup.restarts.Count(cfg, time.Now())+1, cfg.RestartBudget, cfg.RestartWindow)})
	time.Sleep(delay)
	j.mu.Lock()
	sup.restarts.Record(time.Now())
	j.mu.Unlock()

	m, _, skipped, err := a.store.Latest(j.id())
	for _, s := range skipped {
		a.event(j, api.Event{Kind: "checkpoint_skipped", Message: "skipping checkpoint: " + s})
		j.out.append(api.Frame{Stream: "stderr", Data: []byte("cruz: skipping checkpoint: " + s + "\n")})
	}
	if err != nil || m == nil {
		if err == nil {
			err = errors.New("no checkpoint")
		}
		giveUp(fmt.Sprintf("there is no complete checkpoint to roll back to (%v)", err))
		return
	}
	var saved jobRecord
	if err := json.Unmarshal(m.Spec, &saved); err != nil || saved.ID != j.id() {
		giveUp("checkpoint " + m.ID + " has no usable job record")
		return
	}
	// Pods go back to where they ran (a migration since the checkpoint
	// stays), except from nodes that failed.
	j.mu.Lock()
	for i := range saved.Pods {
		for _, cur := range j.rec.Pods {
			if cur.Name == saved.Pods[i].Name && cur.Node != "" {
				saved.Pods[i].Node = cur.Node
			}
		}
	}
	j.mu.Unlock()
	moved, err := a.replace(j, saved.Pods, healthy)
	if err != nil {
		giveUp(err.Error())
		return
	}
	a.endDedup(j)
	failed := stdoutSince(j.out.path, m.OutputOffset)
	d := newLineDedup(failed)
	j.mu.Lock()
	j.rec.Pods, j.rec.ExitCode = saved.Pods, nil
	j.live = true
	j.gen++
	newGen := j.gen
	j.dedup = d
	j.mu.Unlock()
	if err := a.restorePods(context.Background(), j, m, newGen); err != nil {
		a.dropRun(j, healthy)
		giveUp(fmt.Sprintf("the restore from %s failed: %v", m.ID, firstLine(err.Error())))
		return
	}
	a.setState(j, api.StateRunning, "")
	msg := fmt.Sprintf("restored from %s in %s", m.ID, time.Since(t0).Round(time.Millisecond))
	if len(moved) > 0 {
		msg += "; moved " + strings.Join(moved, ", ")
	}
	a.event(j, api.Event{Kind: "recovered", Checkpoint: m.ID, Millis: time.Since(t0).Milliseconds(), Message: msg})
}

// stdoutSince returns the stdout in the output log at path from offset on.
func stdoutSince(path string, offset int64) []byte {
	var out []byte
	for _, fr := range logFrames(path, offset, -1) {
		if fr.Stream == "stdout" {
			out = append(out, fr.Data...)
		}
	}
	return out
}

// logFrames reads the frames of the output log at path between offsets from
// and to (to < 0: to its end); nothing if there is no log.
func logFrames(path string, from, to int64) []api.Frame {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		return nil
	}
	var r io.Reader = f
	if to >= 0 {
		r = io.LimitReader(f, max(to-from, 0))
	}
	var out []api.Frame
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var fr api.Frame
		if json.Unmarshal(sc.Bytes(), &fr) == nil {
			out = append(out, fr)
		}
	}
	return out
}

// recoverLost rolls back, by policy, a job that this agent coordinated
// when it died (reconcile found it running and marked it lost): its pods on
// other nodes are removed first, then it is restored from its newest
// complete checkpoint like after any other failure.
func (a *Agent) recoverLost(j *job) {
	j.op.Lock()
	defer j.op.Unlock()
	reason := "its coordinator (the agent of " + a.node + ") died while it ran"
	a.event(j, api.Event{Kind: "failure", Node: a.node, Message: reason})
	t0 := time.Now()
	giveUp := func(why string) {
		j.out.append(api.Frame{Error: "the job failed: " + reason + "; " + why})
		a.setState(j, api.StateFailed, reason+"; "+why)
		a.event(j, api.Event{Kind: "gave_up", Message: why})
	}
	healthy := a.liveNodes(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := a.onNodesWhere(ctx, j, func(n string) bool { return healthy[n] }, opDestroy, func(_ string, pods []string) nodeReq {
		return nodeReq{Job: j.id(), Pods: pods}
	})
	cancel()
	if err != nil {
		a.log.Warn("removing the pods of a lost job", "job", j.id(), "err", err)
	}
	a.cleanHalfWritten(j.id())
	cfg := a.policyConfig(j)
	sup := a.supervisorOf(j)
	j.mu.Lock()
	delay, ok, why := sup.restarts.Allow(cfg, time.Now())
	j.rec.OutputStart = j.out.offset()
	j.mu.Unlock()
	if !ok {
		giveUp(why)
		return
	}
	a.rollback(j, reason, healthy, delay, t0, giveUp)
}

// liveNodes returns the nodes whose agents answer within timeout.
func (a *Agent) liveNodes(timeout time.Duration) map[string]bool {
	var mu sync.Mutex
	live := map[string]bool{a.node: true}
	var wg sync.WaitGroup
	for _, n := range a.nodes()[1:] {
		wg.Add(1)
		go func(n string) {
			defer wg.Done()
			nc, err := a.client(n, rootCaller)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if _, err := nc.remote.Version(ctx); err == nil {
				mu.Lock()
				live[n] = true
				mu.Unlock()
			}
		}(n)
	}
	wg.Wait()
	return live
}

// dropRun removes the pods of the failed run on the nodes that answer,
// without ending the job's output: its client stays attached through the
// recovery.
func (a *Agent) dropRun(j *job, healthy map[string]bool) {
	j.mu.Lock()
	j.ending = true
	j.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := a.onNodesWhere(ctx, j, func(node string) bool { return healthy[node] }, opDestroy, func(node string, pods []string) nodeReq {
		return nodeReq{Job: j.id(), Pods: pods}
	})
	if err != nil {
		a.log.Warn("removing the failed run's pods", "job", j.id(), "err", err)
	}
	for node, r := range resp {
		a.unfollow(j, node, r.OutputEnd)
	}
	a.stopFollowers(j)
	j.mu.Lock()
	j.live, j.ending = false, false
	j.mu.Unlock()
}

// replace places the pods of a rollback: each stays on its node if that
// node is healthy; the pods of a failed node go to one spare, or, without
// spares, to the healthy nodes holding the fewest of the job's pods. It
// returns what moved, e.g. "node2 -> node4".
func (a *Agent) replace(j *job, pods []podSpec, healthy map[string]bool) ([]string, error) {
	j.mu.Lock()
	spares := append([]string(nil), j.rec.Spares...)
	j.mu.Unlock()
	load := map[string]int{}
	for _, p := range pods {
		if healthy[p.Node] {
			load[p.Node]++
		}
	}
	target := map[string]string{} // failed node -> replacement
	var moved []string
	for i := range pods {
		from := nodeOr(pods[i].Node, a.node)
		if healthy[from] {
			pods[i].Node = from
			continue
		}
		to, ok := target[from]
		if !ok {
			for len(spares) > 0 && !healthy[spares[0]] {
				spares = spares[1:]
			}
			if len(spares) > 0 {
				to, spares = spares[0], spares[1:]
			} else {
				var cands []string
				for n := range healthy {
					cands = append(cands, n)
				}
				if len(cands) == 0 {
					return nil, fmt.Errorf("no healthy node is left to restore pod %s on", pods[i].Name)
				}
				sort.Strings(cands)
				sort.SliceStable(cands, func(x, y int) bool { return load[cands[x]] < load[cands[y]] })
				to = cands[0]
			}
			target[from] = to
			moved = append(moved, from+" -> "+to)
		}
		pods[i].Node = to
		load[to]++
	}
	if len(target) > 0 {
		used := map[string]bool{}
		for _, to := range target {
			used[to] = true
		}
		var left []string
		for _, s := range spares {
			if !used[s] {
				left = append(left, s)
			}
		}
		j.mu.Lock()
		j.rec.Spares = left
		j.mu.Unlock()
	}
	return moved, nil
}

// eventsPath is the job's event log: one JSON event per line.
func (a *Agent) eventsPath(id string) string { return filepath.Join(a.jobDir(id), "events.jsonl") }

// event appends e to the job's event log and to the agent's log.
func (a *Agent) event(j *job, e api.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	a.eventsMu.Lock()
	defer a.eventsMu.Unlock()
	f, err := os.OpenFile(a.eventsPath(j.id()), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		a.log.Warn("writing the job's event log", "job", j.id(), "err", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
	a.log.Info("event", "job", j.id(), "kind", e.Kind, "msg", e.Message)
}

// Events returns a job's event log.
func (a *Agent) Events(c caller, ref string) (api.EventList, error) {
	j, err := a.lookup(c, ref)
	if err != nil {
		return api.EventList{}, err
	}
	out := api.EventList{Events: []api.Event{}}
	f, err := os.Open(a.eventsPath(j.id()))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e api.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out.Events = append(out.Events, e)
		}
	}
	return out, sc.Err()
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// restartsAfter tells whether the end of the job's main process with code
// is a failure to recover from: a plain command killed by a signal, or
// mpiexec ending with an error (a rank, proxy or connection lost), unless
// its own user signalled it.
func (j *job) failedEnd(code int) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if code == 0 || j.signalled || j.rec.Policy.Restart != "auto" {
		return false
	}
	if j.rec.Request.Plain {
		return code >= 128 || code < 0
	}
	return true
}

// cleanHalfWritten removes the half-written checkpoints of a job whose
// coordinator died during a checkpoint. The agent cleaned them as it
// started, but the other nodes' CRIUs may still have been writing their
// pods' images into them then (their dumps end once the pods are gone), so
// that the removal failed half-way: it is tried again for a few seconds.
func (a *Agent) cleanHalfWritten(id string) {
	for try := 0; try < 10; try++ {
		n, err := a.store.CleanTemp(id)
		if err == nil {
			if n > 0 {
				a.log.Info("removed half-written checkpoints", "job", id, "count", n)
			}
			return
		}
		a.log.Info("half-written checkpoints still being written: trying again", "job", id, "err", err)
		time.Sleep(500 * time.Millisecond)
	}
	a.log.Warn("could not remove half-written checkpoints (cruzd removes them when it restarts)", "job", id)
}

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/metrics"
)

// Automatic recovery: a failed run rolled back to the job's newest complete
// checkpoint on its healthy nodes plus spares, within a restart budget.

// recoverJob rolls a failed run back to the job's last complete checkpoint,
// on its healthy nodes plus spares, if its policy and restart budget allow.
func (a *Agent) recoverJob(j *job, gen int, reason, badNode string, silent bool) {
	j.stopSupervisor()
	j.op.Lock()
	defer j.op.Unlock()
	if !j.current(gen) {
		return
	}
	a.event(j, api.Event{Kind: api.EventFailure, Node: badNode, Message: reason})
	a.metrics.FailureDetected(j.id())
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
		a.event(j, api.Event{Kind: api.EventGaveUp, Message: why})
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
	// What is left of the run goes, on the nodes that answer. A node that
	// has just been silent for the heartbeat timeout is not asked again.
	skip := ""
	if silent {
		skip = badNode
	}
	healthy := a.liveNodes(2*time.Second, skip)
	a.dropRun(j, healthy)
	a.rollback(j, reason, healthy, delay, t0, giveUp)
}

// rollback restores a job whose run is gone from its newest complete
// checkpoint, after delay; caller holds j.op. giveUp ends the job when it
// cannot.
func (a *Agent) rollback(j *job, reason string, healthy map[string]bool, delay time.Duration, t0 time.Time, endJob func(string)) {
	giveUp := func(why string) {
		a.metrics.Restored(j.id(), metrics.Rollback, metrics.Failed, 0)
		endJob(why)
	}
	sup := a.supervisorOf(j)
	cfg := a.policyConfig(j)
	a.setState(j, api.StateRestoring, "recovering: "+reason)
	a.event(j, api.Event{Kind: api.EventRestarting, Message: fmt.Sprintf("rolling back in %s (automatic restart %d of at most %d in %s)",
		delay, sup.restarts.Count(cfg, time.Now())+1, cfg.RestartBudget, cfg.RestartWindow)})
	time.Sleep(delay)
	j.mu.Lock()
	sup.restarts.Record(time.Now())
	j.mu.Unlock()

	m, _, skipped, err := a.store.Latest(j.id())
	for _, s := range skipped {
		a.event(j, api.Event{Kind: api.EventCheckpointSkipped, Message: "skipping checkpoint: " + s})
		j.out.Append(api.Frame{Stream: "stderr", Data: []byte("cruz: skipping checkpoint: " + s + "\n")})
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
	d, err := joblog.DedupSince(j.out.Path(), m.OutputOffset)
	if err != nil {
		a.log.Warn("reading the output the failed run printed after the checkpoint: the restored run's repetition of it is shown", "job", j.id(), "err", err)
	}
	j.mu.Lock()
	j.rec.Pods, j.rec.ExitCode = saved.Pods, nil
	j.live = true
	j.gen++
	newGen := j.gen
	j.dedup = d
	j.mu.Unlock()
	if err := a.restorePods(context.Background(), j, m, newGen); err != nil {
		if errors.Is(err, api.ErrForbidden) {
			// No one asked for a rollback: the refusal is the owner's.
			o := j.owner()
			a.log.Warn("refused", "uid", o.UID, "user", o.User, "what", "rollback of job "+j.id()+" to "+m.ID, "why", err.Error())
		}
		a.dropRun(j, healthy)
		giveUp(fmt.Sprintf("the restore from %s failed: %v", m.ID, firstLine(err.Error())))
		return
	}
	a.setState(j, api.StateRunning, "")
	a.metrics.Restored(j.id(), metrics.Rollback, metrics.OK, time.Since(t0))
	msg := fmt.Sprintf("restored from %s in %s", m.ID, time.Since(t0).Round(time.Millisecond))
	if len(moved) > 0 {
		msg += "; moved " + strings.Join(moved, ", ")
	}
	a.event(j, api.Event{Kind: api.EventRecovered, Checkpoint: m.ID, Millis: time.Since(t0).Milliseconds(), Message: msg})
}

// recoverLost rolls back, by policy, a job that this agent coordinated
// when it died (reconcile found it running and marked it lost): its pods on
// other nodes are removed first, then it is restored from its newest
// complete checkpoint like after any other failure.
func (a *Agent) recoverLost(j *job) {
	j.op.Lock()
	defer j.op.Unlock()
	reason := "its coordinator (the agent of " + a.node + ") died while it ran"
	a.event(j, api.Event{Kind: api.EventFailure, Node: a.node, Message: reason})
	a.metrics.FailureDetected(j.id())
	t0 := time.Now()
	giveUp := func(why string) {
		j.out.Append(api.Frame{Error: "the job failed: " + reason + "; " + why})
		a.setState(j, api.StateFailed, reason+"; "+why)
		a.event(j, api.Event{Kind: api.EventGaveUp, Message: why})
	}
	healthy := a.liveNodes(5*time.Second, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := a.onNodesWhere(ctx, j, func(n string) bool { return healthy[n] }, api.OpDestroy, func(_ string, pods []string) api.NodeRequest {
		return api.NodeRequest{Job: j.id(), Pods: pods}
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
	j.rec.OutputStart = j.out.Offset()
	j.mu.Unlock()
	if !ok {
		giveUp(why)
		return
	}
	a.rollback(j, reason, healthy, delay, t0, giveUp)
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
	resp, err := a.onNodesWhere(ctx, j, func(node string) bool { return healthy[node] }, api.OpDestroy, func(node string, pods []string) api.NodeRequest {
		return api.NodeRequest{Job: j.id(), Pods: pods}
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
// spares, to the healthy nodes holding the fewest of the job's pods. A
// Slurm step's pods stay on the step's nodes: the others are not Slurm's
// to give it (they may run other jobs, or be down in Slurm's eyes). It
// returns what moved, e.g. "node2 -> node4".
func (a *Agent) replace(j *job, pods []api.PodSpec, healthy map[string]bool) ([]string, error) {
	j.mu.Lock()
	spares := append([]string(nil), j.rec.Spares...)
	var step []string
	if s := j.rec.Request.Slurm; s != nil {
		step = s.RankNodes
	}
	j.mu.Unlock()
	if step != nil {
		allowed := map[string]bool{}
		for _, n := range step {
			if healthy[n] {
				allowed[n] = true
			}
		}
		healthy = allowed
	}
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
				if len(cands) == 0 && step != nil {
					return nil, fmt.Errorf("no node of the Slurm step (%s) is left healthy to restore pod %s on", stepNodes(step), pods[i].Name)
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

// stepNodes names a Slurm step's nodes, each once, sorted.
func stepNodes(rankNodes []string) string {
	n := slices.Clone(rankNodes)
	slices.Sort(n)
	return strings.Join(slices.Compact(n), ",")
}

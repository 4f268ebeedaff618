package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/store"
)

// The Cruz protocol on the coordinator: block every pod's traffic on every
// node, dump every pod on every node at once, commit the checkpoint to the
// store, then let the traffic flow again (or end the run, for --stop).

// Checkpoint takes a consistent checkpoint of all of a job's pods (the Cruz
// protocol on one node): block every pod's traffic, dump every pod, commit
// the checkpoint atomically, then unblock (or, with stop, remove the pods).
// Any failure abandons the checkpoint, leaves the previous one as the latest
// and lets the job run on.
//
// wait > 0 waits up to that long for an operation under way on the job
// (a periodic checkpoint, most likely) instead of failing at once.
func (a *Agent) Checkpoint(ctx context.Context, c caller, ref string, stop bool, wait time.Duration) (*store.Manifest, error) {
	j, err := a.lookup(c, ref)
	if err != nil {
		return nil, err
	}
	if !lockWithin(&j.op, wait) {
		return nil, api.Errorf(api.ErrConflict, "job %s is busy with another operation (a checkpoint, start or restart): try again when it is done", j.id())
	}
	defer j.op.Unlock()
	if st := j.state(); st != api.StateRunning {
		return nil, api.Errorf(api.ErrConflict, "job %s is %s, not running: only a running job can be checkpointed", j.id(), st)
	}
	m, err := a.checkpointLocked(ctx, j, stop)
	if err != nil {
		a.event(j, api.Event{Kind: api.EventCheckpointFailed, Message: fmt.Sprintf("checkpoint by uid %d failed: %v", c.UID, firstLine(err.Error()))})
		return nil, err
	}
	kind, what := api.EventCheckpoint, "checkpoint"
	if stop {
		kind, what = api.EventStopped, "stopped at checkpoint"
	}
	a.event(j, api.Event{Kind: kind, Checkpoint: m.ID, Message: fmt.Sprintf("%s %s by uid %d: %s", what, m.ID, c.UID, humanSize(m.Bytes)) + warningsNote(m)})
	return m, nil
}

func (a *Agent) checkpointLocked(ctx context.Context, j *job, stop bool) (_ *store.Manifest, err error) {
	// Refused before anything is held (and before t0: the block phase is
	// the time traffic is held).
	if err := a.roomFor(j); err != nil {
		a.metrics.CheckpointFailed(j.id())
		return nil, err
	}
	t0 := time.Now()
	j.mu.Lock()
	specs := append([]api.PodSpec(nil), j.rec.Pods...)
	j.mu.Unlock()
	prog := newProgress(ctx, "checkpoint", j.id(), len(specs))
	prog.phase("block")
	phases := map[string]int64{}
	outAtBlock := j.out.Offset()
	pend, err := a.store.Begin(j.id(), store.Owner{UID: j.rec.UID, GID: j.rec.GID})
	if err != nil {
		return nil, fmt.Errorf("start checkpoint: %w", ownerErr(err))
	}
	groups := j.byNode()
	resumed := false // traffic flows again (before the commit, unless stop)
	log := a.log.With("job", j.id(), "checkpoint", pend.ID(), "stop", stop)
	log.Info("checkpoint started", "pods", len(specs), "nodes", len(groups))
	defer func() {
		if err == nil {
			return
		}
		_ = pend.Abort()
		a.metrics.CheckpointFailed(j.id())
		if ctx.Err() != nil {
			// A recovery cancelled it: it removes the run's pods itself,
			// and must not wait here for a node that is gone.
			log.Warn("checkpoint cancelled", "err", err)
			return
		}
		if resumed {
			log.Warn("checkpoint failed after the job resumed; it runs on, its previous checkpoint the latest", "err", err)
			return
		}
		// Undo on every node: stopped pods go on, traffic flows again. A
		// node that does not answer soon is likely gone.
		actx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, rerr := a.onNodes(actx, j, api.OpResume, func(_ string, pods []string) api.NodeRequest {
			return api.NodeRequest{Job: j.id(), Pods: pods, Continue: true}
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
	// The store's directories are made before any traffic is held: on a
	// shared file system that takes a round trip per pod, which the job
	// should not wait for (and the cap on held time should not count).
	tb := time.Now()
	phases["prepare"] = tb.Sub(t0).Milliseconds()
	// 1. Hold every pod's traffic, on every node: first what the pods send,
	// then, once what was in flight has arrived, what reaches them (see
	// api.NodeRequest.OutputOnly).
	for _, outputOnly := range []bool{true, false} {
		if _, err := a.onNodes(ctx, j, api.OpBlock, func(_ string, pods []string) api.NodeRequest {
			return api.NodeRequest{Job: j.id(), Pods: pods, OutputOnly: outputOnly}
		}); err != nil {
			return nil, fmt.Errorf("block traffic: %w", err)
		}
	}
	t1 := time.Now()
	phases["block"] = t1.Sub(tb).Milliseconds()
	// 2. Dump every pod, on every node at once. A node that does not answer
	// within the CRIU timeout (and a margin) fails the checkpoint.
	dctx, cancel := context.WithTimeout(ctx, a.dumpDeadline())
	defer cancel()
	prog.phase("dump")
	stopPoll := prog.pollBytes(pend.Bytes)
	dumps, err := a.onNodes(prog.watchNodes(dctx), j, api.OpDump, func(_ string, pods []string) api.NodeRequest {
		return api.NodeRequest{Job: j.id(), Pods: pods, Images: pend.ID(), Stop: stop}
	})
	stopPoll()
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	t2 := time.Now()
	phases["dump"] = t2.Sub(t1).Milliseconds()
	byPod := map[string]api.PodDump{}
	for _, r := range dumps {
		for _, d := range r.Dumps {
			byPod[d.Pod] = d
		}
	}
	images := make([]store.PodImage, len(specs))
	var fileWarnings []string
	for i, sp := range specs {
		d, ok := byPod[sp.Name]
		if !ok {
			return nil, fmt.Errorf("node %s did not report the dump of pod %s", sp.Node, sp.Name)
		}
		fileWarnings = append(fileWarnings, d.Warnings...)
		images[i] = store.PodImage{Name: sp.Name, Role: string(sp.Role), Rank: sp.Rank,
			IP: sp.Addr.Addr().String(), MAC: sp.MAC().String(),
			Hostname: sp.Hostname, Node: nodeOr(sp.Node, a.node), DumpMillis: d.DumpMS, Extra: d.Pipes}
	}
	// 3. Resume at once, unless the job stops here: the images hold the
	// consistent cut, so the job need not wait for them to be hashed,
	// synced and signed. A commit that fails then leaves the job running
	// and the previous checkpoint the latest.
	if !stop {
		prog.phase("resume")
		// What reaches the pods first, everywhere; then what they send
		// (see api.NodeRequest.InputOnly).
		for _, inputOnly := range []bool{true, false} {
			if _, err := a.onNodes(context.Background(), j, api.OpResume, func(_ string, pods []string) api.NodeRequest {
				return api.NodeRequest{Job: j.id(), Pods: pods, InputOnly: inputOnly}
			}); err != nil {
				log.Error("resuming the job after its dump", "err", err)
			}
		}
		resumed = true
		phases["resume"] = time.Since(t2).Milliseconds()
		phases["held"] = phases["block"] + phases["dump"] + phases["resume"]
	}
	// 4. Commit: the checkpoint becomes visible, complete, or not at all;
	// not at all if its images took the owner past the quota (measured
	// here, not while the job is held).
	if err := a.roomAfterDump(j, pend); err != nil {
		return nil, err
	}
	prog.phase("commit")
	spec, err := j.spec()
	if err != nil {
		return nil, err
	}
	m := &store.Manifest{JobName: j.rec.Name, Created: t0.UTC(), Stopped: stop, Pods: images, Phases: phases, Spec: spec, OutputOffset: outAtBlock, Warnings: fileWarnings}
	warnings, err := pend.Commit(m)
	if err != nil {
		return nil, fmt.Errorf("commit checkpoint: %w", err)
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	j.mu.Lock()
	j.rec.LastCheckpoint = m.ID
	j.mu.Unlock()
	prog.update(func(p *api.Progress) { p.Phase, p.Bytes = "done", m.Bytes })
	// 5. End the job's run here, or save its state.
	if stop {
		a.teardown(j, api.Frame{Stopped: &api.StoppedInfo{Checkpoint: m.ID}})
		a.setState(j, api.StateStopped, "stopped at checkpoint "+m.ID)
	} else if err := a.persist(j); err != nil {
		log.Error("saving job state", "err", err)
	}
	a.metrics.CheckpointCommitted(j.id(), checkpointMetrics(m.Bytes, m.Phases, time.Since(t0)))
	log.Info("checkpoint committed", "bytes", m.Bytes, "phases_ms", m.Phases, "total_ms", time.Since(t0).Milliseconds())
	return m, nil
}

// warningsNote adds what a checkpoint could not keep whole to its event.
func warningsNote(m *store.Manifest) string {
	var s string
	for _, w := range m.Warnings {
		s += "; warning: " + w
	}
	return s
}

func nodeOr(node, def string) string {
	if node == "" {
		return def
	}
	return node
}

// dumpDeadline is how long the coordinator waits for a node's dumps: CRIU's
// own timeout and a margin for the node to answer. A node that takes longer
// fails the checkpoint.
func (a *Agent) dumpDeadline() time.Duration { return a.cfg.CRIU.Timeout.Duration + a.dumpGrace }

// lockWithin takes mu, waiting up to wait for it (not at all if wait <= 0).
func lockWithin(mu *sync.Mutex, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for !mu.TryLock() {
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

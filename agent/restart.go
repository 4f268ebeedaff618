package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/metrics"
	"github.com/cruz-hpc/cruz/internal/store"
)

// Restoring a whole job from one of its checkpoints, on the nodes where it
// ran or on others, every pod with its address and MAC, the traffic held
// until the last pod is back.

// Restart restores a job that is not running from one of its checkpoints
// (the latest good one if id is empty), every pod with its address and MAC,
// and lets the pods' traffic flow only once all of them are restored.
func (a *Agent) Restart(ctx context.Context, c caller, ref, id string, nodes []string) (*job, int64, error) {
	if err := a.checkNodes(nodes); err != nil {
		return nil, 0, err
	}
	j, err := a.lookup(c, ref)
	if errors.Is(err, api.ErrNotFound) {
		j, err = a.adopt(c, ref, err)
	}
	if err != nil {
		return nil, 0, err
	}
	return a.restart(ctx, c, j, id, func(pods []api.PodSpec) error { return a.place(pods, nodes) }, nil)
}

// restart restores job j from checkpoint id (latest good one if empty),
// its pods placed by place. prepare, if set, runs once the checkpoint is
// chosen, before any pod is restored.
func (a *Agent) restart(ctx context.Context, c caller, j *job, id string, place func([]api.PodSpec) error, prepare func(j *job, m *store.Manifest, start int64)) (*job, int64, error) {
	var err error
	if !j.op.TryLock() {
		return nil, 0, api.Errorf(api.ErrConflict, "job %s is busy with another operation: try again when it is done", j.id())
	}
	defer j.op.Unlock()
	prev := j.state()
	if prev.HoldsPods() {
		return nil, 0, api.Errorf(api.ErrConflict, "job %s is %s: stop it first with `cruz checkpoint --stop %s`", j.id(), prev, j.id())
	}
	if err := a.store.CheckOwner(j.id(), j.storeOwner()); err != nil {
		return nil, 0, ownerErr(err)
	}
	var m *store.Manifest
	var skipped []string
	if id == "" {
		m, _, skipped, err = a.store.Latest(j.id())
		for _, s := range skipped {
			a.log.Warn("skipping checkpoint", "job", j.id(), "reason", s)
		}
		if err == nil && m == nil {
			err = api.Errorf(api.ErrNotFound, "job %s has no complete checkpoint to restart from", j.id())
		}
	} else {
		m, _, err = a.store.Load(j.id(), id)
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidID) {
			return nil, 0, api.Errorf(api.ErrNotFound, "%w", err)
		}
		if errors.Is(err, store.ErrCorrupt) {
			return nil, 0, api.Errorf(api.ErrConflict, "%w", err)
		}
		return nil, 0, err
	}
	var saved jobRecord
	if err := json.Unmarshal(m.Spec, &saved); err != nil || saved.ID != j.id() || m.Owner.UID != j.rec.UID {
		return nil, 0, api.Errorf(api.ErrConflict, "checkpoint %s does not belong to job %s", m.ID, j.id())
	}
	if node := a.peersHolding(ctx, c, j.id()); node != "" {
		return nil, 0, api.Errorf(api.ErrConflict, "job %s runs on node %s, its coordinator: stop it there first (cruz --node %s checkpoint --stop %s)", j.id(), node, node, j.id())
	}
	if err := place(saved.Pods); err != nil {
		return nil, 0, err
	}
	allocMu.Lock()
	used := a.usedAddrs(j.id())
	for _, p := range saved.Pods {
		if other, taken := used[p.Addr.Addr()]; taken {
			allocMu.Unlock()
			return nil, 0, api.Errorf(api.ErrConflict, "address %s of pod %s is in use by job %s: remove that job (cruz rm %s) or wait for it to end", p.Addr.Addr(), p.Name, other, other)
		}
	}
	start := j.out.Offset()
	// The restart's client is streamed from start: what it must hear about
	// the checkpoints skipped on the way goes after it.
	for _, s := range skipped {
		j.out.Append(api.Frame{Stream: "stderr", Data: []byte("cruz: skipping checkpoint: " + s + "\n")})
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
		j.rec.OutputStart = j.out.Offset()
		j.mu.Unlock()
		a.setState(j, prev, "restart from "+m.ID+" failed: "+err.Error())
		a.metrics.Restored(j.id(), metrics.Restart, metrics.Failed, 0)
		if !errors.Is(err, api.ErrForbidden) {
			// A refusal is logged once, with the caller (logRefusal).
			log.Warn("restart failed", "err", err)
		}
		return nil, 0, err
	}
	a.setState(j, api.StateRunning, "")
	a.metrics.Restored(j.id(), metrics.Restart, metrics.OK, time.Since(t0))
	a.event(j, api.Event{Kind: api.EventRestarted, Checkpoint: m.ID, Millis: time.Since(t0).Milliseconds(),
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
		return nil, api.Errorf(api.ErrForbidden, "job %s belongs to uid %d: you (uid %d) can act only on your own jobs", id, m.Owner.UID, c.UID)
	}
	var rec jobRecord
	if err := json.Unmarshal(m.Spec, &rec); err != nil || rec.ID != id {
		return nil, api.Errorf(api.ErrConflict, "checkpoint %s of job %s has no usable job record", m.ID, id)
	}
	rec.State, rec.Message, rec.OutputStart, rec.ExitCode = api.StateLost, "known from its checkpoints only", 0, nil
	if err := os.MkdirAll(a.jobDir(id), 0o700); err != nil {
		return nil, fmt.Errorf("create job directory: %w", err)
	}
	outPath, err := a.outputPath(rec)
	if err != nil {
		return nil, err
	}
	out, err := joblog.Open(outPath, rec.UID)
	if err != nil {
		return nil, err
	}
	j := &job{rec: rec, out: out}
	a.boundOutput(j)
	a.mu.Lock()
	if existing, ok := a.jobs[id]; ok {
		a.mu.Unlock()
		out.Close()
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
func (a *Agent) place(pods []api.PodSpec, nodes []string) error {
	if len(nodes) == 0 {
		for i := range pods {
			if pods[i].Node == "" {
				pods[i].Node = a.node
			}
			if !a.isNode(pods[i].Node) {
				return api.Errorf(api.ErrConflict, "pod %s was on node %s, which this cluster does not have: choose nodes with --nodes", pods[i].Name, pods[i].Node)
			}
		}
		return nil
	}
	var ranks []int
	for i := range pods {
		if pods[i].Role == api.RoleRank {
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
	byName := map[string]api.PodSpec{}
	for _, sp := range j.rec.Pods {
		byName[sp.Name] = sp
	}
	j.mu.Unlock()
	for _, img := range m.Pods {
		if _, ok := byName[img.Name]; !ok {
			return fmt.Errorf("checkpoint %s has pod %s that its job spec lacks", m.ID, img.Name)
		}
	}
	prog := newProgress(ctx, "restart", j.id(), len(m.Pods))
	prog.update(func(p *api.Progress) { p.Phase, p.Bytes = "restore", m.Bytes })
	if _, err := a.onNodes(prog.watchNodes(ctx), j, api.OpRestore, func(node string, pods []string) api.NodeRequest {
		req := api.NodeRequest{Job: j.id(), Coordinator: a.node, Images: m.ID}
		for _, name := range pods {
			req.Restore = append(req.Restore, api.RestorePod{Spec: byName[name], Pipes: pipes[name]})
		}
		return req
	}); err != nil {
		return err
	}
	for node := range j.byNode() {
		a.follow(j, node)
	}
	// Every pod is back: let the traffic flow, then watch the job.
	prog.phase("release")
	if _, err := a.onNodes(ctx, j, api.OpRelease, func(_ string, pods []string) api.NodeRequest {
		return api.NodeRequest{Job: j.id(), Pods: pods}
	}); err != nil {
		return err
	}
	prog.phase("done")
	go a.watchMain(j, gen)
	go a.supervise(j, gen)
	return a.persist(j)
}

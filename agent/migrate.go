package agent

// Live migration of one pod (cruz migrate) and draining a node (cruz drain):
// the pod's traffic is held and it is dumped, left stopped, into a transfer
// directory of the shared store; it is restored on the target node with its
// traffic held; only then is the old pod removed and the new one released
// and announced on the LAN. The job's other pods run on all along: what they
// send meanwhile is dropped and retransmitted by TCP to the pod's new place.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/metrics"
	"github.com/cruz-hpc/cruz/internal/store"
)

// Migrate moves one pod of a running job to another node.
func (a *Agent) Migrate(ctx context.Context, c caller, ref string, req api.MigrateRequest) (api.Migration, error) {
	j, err := a.lookup(c, ref)
	if err != nil {
		return api.Migration{}, err
	}
	name := req.Pod
	if req.Rank != nil {
		if req.Pod != "" {
			return api.Migration{}, api.Errorf(api.ErrInvalid, "give either --rank or --pod, not both")
		}
		if name = j.rankPod(*req.Rank); name == "" {
			return api.Migration{}, api.Errorf(api.ErrNotFound, "job %s has no rank %d (it has %d ranks: cruz status %s lists its pods)", j.id(), *req.Rank, j.np(), j.id())
		}
	}
	if name == "" {
		return api.Migration{}, api.Errorf(api.ErrInvalid, "say which pod to move: --rank R (or --pod NAME)")
	}
	if req.To == "" {
		return api.Migration{}, api.Errorf(api.ErrInvalid, "say where to move it: --to NODE (one of %v)", a.nodes())
	}
	if !j.op.TryLock() {
		return api.Migration{}, api.Errorf(api.ErrConflict, "job %s is busy with another operation (a checkpoint, start or migration): try again when it is done", j.id())
	}
	defer j.op.Unlock()
	if st := j.state(); st != api.StateRunning {
		return api.Migration{}, api.Errorf(api.ErrConflict, "job %s is %s, not running: only a running job's pods can be migrated (a stopped job restarts anywhere with cruz restart --nodes)", j.id(), st)
	}
	return a.migrateLocked(ctx, j, name, req.To)
}

func (a *Agent) migrateLocked(ctx context.Context, j *job, name, to string) (_ api.Migration, err error) {
	j.mu.Lock()
	idx := -1
	for i, p := range j.rec.Pods {
		if p.Name == name {
			idx = i
		}
	}
	var spec api.PodSpec
	if idx >= 0 {
		spec = j.rec.Pods[idx]
	}
	j.mu.Unlock()
	if idx < 0 {
		return api.Migration{}, api.Errorf(api.ErrNotFound, "job %s has no pod %s (cruz status %s lists its pods)", j.id(), name, j.id())
	}
	from := nodeOr(spec.Node, a.node)
	if from == to {
		return api.Migration{}, api.Errorf(api.ErrInvalid, "pod %s is already on node %s", name, to)
	}
	owner := j.owner()
	source, err := a.conn(from, owner)
	if err != nil {
		return api.Migration{}, err
	}
	target, err := a.conn(to, owner)
	if err != nil {
		return api.Migration{}, err
	}
	xfer, err := a.store.BeginTransfer(j.id(), store.Owner{UID: j.rec.UID, GID: j.rec.GID})
	if err != nil {
		return api.Migration{}, fmt.Errorf("start the transfer: %w", ownerErr(err))
	}
	defer xfer.Abort()
	dir, err := xfer.PodDir(name)
	if err != nil {
		return api.Migration{}, err
	}
	log := a.log.With("job", j.id(), "pod", name, "from", from, "to", to)
	log.Info("migration started")
	pods := []string{name}
	resumed := false
	defer func() {
		if err != nil && !resumed {
			if _, rerr := source.Do(context.Background(), api.OpResume, api.NodeRequest{Job: j.id(), Pods: pods, Continue: true}); rerr != nil {
				log.Error("resuming the pod on its node after the failed migration", "err", rerr)
			}
			log.Warn("migration failed; the pod runs on where it was", "err", err)
		}
	}()
	t0 := time.Now()
	defer func() {
		if err != nil {
			a.metrics.Migrated(j.id(), metrics.Failed, 0)
		}
	}()
	prog := newProgress(ctx, "migrate", j.id(), 1)
	// One update names the pod and its phase: the client prints every
	// update, and a first line with a pod but no phase read "migrate: "
	// with nothing after it.
	prog.update(func(p *api.Progress) { p.Pod, p.Phase = name, "block" })
	if _, err := source.Do(ctx, api.OpBlock, api.NodeRequest{Job: j.id(), Pods: pods}); err != nil {
		return api.Migration{}, fmt.Errorf("block the pod's traffic: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, a.dumpDeadline())
	defer cancel()
	prog.phase("dump")
	stopPoll := prog.pollBytes(xfer.Bytes)
	dump, err := source.Do(dctx, api.OpDump, api.NodeRequest{Job: j.id(), Pods: pods, Images: xfer.ID(), Stop: true})
	stopPoll()
	if err != nil {
		return api.Migration{}, fmt.Errorf("dump: %w", err)
	}
	if len(dump.Dumps) != 1 {
		return api.Migration{}, fmt.Errorf("node %s reported %d dumps for one pod", from, len(dump.Dumps))
	}
	t1 := time.Now()
	moved := spec
	moved.Node = to
	prog.update(func(p *api.Progress) { p.Phase, p.PodsDone, p.Bytes = "restore", 0, dirBytes(dir) })
	if _, err := target.Do(dctx, api.OpRestore, api.NodeRequest{Job: j.id(), Coordinator: a.node, Images: xfer.ID(),
		Restore: []api.RestorePod{{Spec: moved, Pipes: dump.Dumps[0].Pipes}}}); err != nil {
		return api.Migration{}, fmt.Errorf("restore on node %s: %w", to, err)
	}
	t2 := time.Now()
	// From here on the pod lives on the target: the old one goes.
	resumed = true
	j.mu.Lock()
	j.rec.Pods[idx].Node = to
	isMain := spec.Role != api.RoleRank
	if isMain {
		j.gen++ // the watcher of the old main pod must ignore its end
	}
	gen := j.gen
	j.mu.Unlock()
	if err := a.persist(j); err != nil {
		log.Error("saving job state", "err", err)
	}
	if resp, err := source.Do(context.Background(), api.OpDestroy, api.NodeRequest{Job: j.id(), Pods: pods}); err != nil {
		log.Error("removing the old pod", "err", err)
	} else if resp.Empty {
		a.unfollow(j, from, resp.OutputEnd)
	}
	a.follow(j, to)
	prog.phase("release")
	if _, err := target.Do(context.Background(), api.OpRelease, api.NodeRequest{Job: j.id(), Pods: pods}); err != nil {
		log.Error("releasing the migrated pod", "err", err)
	}
	t3 := time.Now()
	if isMain {
		go a.watchMain(j, gen)
	}
	m := api.Migration{Job: j.id(), Pod: name, Ranks: spec.RankList(), From: from, To: to, DowntimeMS: t3.Sub(t0).Milliseconds(),
		DumpMS: t1.Sub(t0).Milliseconds(), RestoreMS: t2.Sub(t1).Milliseconds(), Bytes: dirBytes(dir)}
	prog.phase("done")
	a.metrics.Migrated(j.id(), metrics.OK, t3.Sub(t0))
	log.Info("migration done", "downtime_ms", m.DowntimeMS, "dump_ms", m.DumpMS, "restore_ms", m.RestoreMS, "bytes", m.Bytes)
	a.event(j, api.Event{Kind: api.EventMigrated, Node: to, Millis: m.DowntimeMS,
		Message: fmt.Sprintf("%s%s moved from %s to %s: downtime %d ms", name, ranksNote(m.Ranks), from, to, m.DowntimeMS)})
	return m, nil
}

func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Drain moves every pod off node: those of the jobs this agent coordinates,
// and (unless req.OnlyHere) those of the jobs the other agents coordinate.
// Only root may drain a node.
func (a *Agent) Drain(ctx context.Context, c caller, req api.DrainRequest) (api.DrainResult, error) {
	if c.UID != 0 {
		return api.DrainResult{}, api.Errorf(api.ErrForbidden, "only root may drain a node")
	}
	if err := a.checkNodes([]string{req.Node}); err != nil {
		return api.DrainResult{}, err
	}
	var targets []string
	for _, n := range a.nodes() {
		if n != req.Node {
			targets = append(targets, n)
		}
	}
	if len(targets) == 0 {
		return api.DrainResult{}, api.Errorf(api.ErrConflict, "node %s is the only node: there is nowhere to move its pods", req.Node)
	}
	res := api.DrainResult{Node: req.Node, Migrations: []api.Migration{}}
	for _, j := range a.jobList() {
		j.op.Lock()
		if j.state() == api.StateRunning {
			for _, name := range j.byNode()[req.Node] {
				to := a.leastLoaded(j, targets)
				m, err := a.migrateLocked(ctx, j, name, to)
				if err != nil {
					res.Errors = append(res.Errors, fmt.Sprintf("job %s pod %s: %v", j.id(), name, err))
					continue
				}
				res.Migrations = append(res.Migrations, m)
			}
		}
		j.op.Unlock()
	}
	if req.OnlyHere {
		return res, nil
	}
	for _, node := range a.nodes()[1:] {
		nc, err := a.conn(node, c)
		if err != nil {
			continue
		}
		var sub api.DrainResult
		if err := nc.Call(ctx, http.MethodPost, "/v1/drain", api.DrainRequest{Node: req.Node, OnlyHere: true}, &sub); err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("node %s: %v", node, err))
			continue
		}
		res.Migrations = append(res.Migrations, sub.Migrations...)
		res.Errors = append(res.Errors, sub.Errors...)
	}
	if len(res.Errors) > 0 {
		return res, errors.New("some pods could not be moved")
	}
	return res, nil
}

// leastLoaded picks the node of targets holding the fewest of the job's
// pods (the first by name on a tie).
func (a *Agent) leastLoaded(j *job, targets []string) string {
	groups := j.byNode()
	best := append([]string(nil), targets...)
	sort.SliceStable(best, func(i, k int) bool { return len(groups[best[i]]) < len(groups[best[k]]) })
	return best[0]
}

func (a *Agent) handleMigrate(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.MigrateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Progress {
		return a.progressStream(w, r, func(ctx context.Context) (api.Frame, error) {
			m, err := a.Migrate(ctx, c, r.PathValue("job"), req)
			return api.Frame{Migration: &m}, err
		})
	}
	m, err := a.Migrate(context.WithoutCancel(r.Context()), c, r.PathValue("job"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (a *Agent) handleDrain(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.DrainRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	drain := func(ctx context.Context) (api.DrainResult, error) {
		res, err := a.Drain(ctx, c, req)
		if err != nil && len(res.Errors) > 0 {
			return res, api.Errorf(api.ErrConflict, "node %s is not drained: %d pods moved, but: %s", req.Node, len(res.Migrations), strings.Join(res.Errors, "; "))
		}
		return res, err
	}
	if req.Progress {
		return a.progressStream(w, r, func(ctx context.Context) (api.Frame, error) {
			res, err := drain(ctx)
			return api.Frame{Drain: &res}, err
		})
	}
	res, err := drain(context.WithoutCancel(r.Context()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// rankPod names the pod of the job that holds rank r ("" if none does).
func (j *job) rankPod(r int) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, p := range j.rec.Pods {
		if p.HoldsRank(r) {
			return p.Name
		}
	}
	return ""
}

// np is the job's number of ranks.
func (j *job) np() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rec.Request.NP
}

// ranksNote says which ranks a pod of several ranks holds: " (ranks 2-3)";
// nothing for a pod of one rank.
func ranksNote(ranks []int) string {
	if len(ranks) < 2 {
		return ""
	}
	return fmt.Sprintf(" (ranks %d-%d)", ranks[0], ranks[len(ranks)-1])
}

package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
)

// What an agent does at start with what the previous one left: its pod
// sets (internal/node takes back or removes them) and its jobs.

// reconcile has this node take back the live pods of jobs that other nodes
// coordinate and remove every other pod and leftover (internal/node), then
// loads the job records a previous agent left: the jobs that ran are lost
// (rolled back by themselves if their policy says so), and half-written
// checkpoints of its own jobs are removed.
func (a *Agent) reconcile(ctx context.Context) error {
	// This node's pods first: those of jobs other nodes coordinate are
	// taken back, every other one is removed.
	a.local.Reconcile()
	entries, err := os.ReadDir(filepath.Join(a.cfg.Agent.RunDir, "jobs"))
	if err != nil {
		return err
	}
	var remote, autoRecover []*job
	for _, e := range entries {
		dir := filepath.Join(a.cfg.Agent.RunDir, "jobs", e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "job.json"))
		if err != nil {
			a.log.Warn("removing job directory without a readable record", "dir", dir, "err", err)
			_ = os.RemoveAll(dir)
			continue
		}
		var rec jobRecord
		if err := json.Unmarshal(b, &rec); err != nil || rec.ID != e.Name() {
			a.log.Warn("removing job directory with a bad record", "dir", dir, "err", err)
			_ = os.RemoveAll(dir)
			continue
		}
		outPath, err := a.outputPath(rec)
		if err != nil {
			return err
		}
		out, err := joblog.Open(outPath, rec.UID)
		if err != nil {
			return err
		}
		j := &job{rec: rec, out: out}
		a.boundOutput(j)
		if rec.State.HoldsPods() {
			// A checkpoint or migration this agent had under way died
			// with it. (Only such jobs: a job this node once ran may be
			// checkpointed by another coordinator right now.)
			if n, err := a.store.CleanTemp(rec.ID); err != nil {
				a.log.Warn("cleaning half-written checkpoints", "job", rec.ID, "err", err)
			} else if n > 0 {
				a.log.Info("removed half-written checkpoints", "job", rec.ID, "count", n)
			}
			j.rec.State, j.rec.Message = api.StateLost, "the agent restarted while the job ran; restart it from its latest checkpoint"
			if rec.Policy.Restart == "auto" {
				j.rec.Message = "the agent restarted while the job ran; rolling it back to its latest checkpoint (cruz events " + rec.ID + ")"
				j.out.Append(api.Frame{Error: "the cruz agent coordinating the job restarted; the job is rolled back to its latest checkpoint: follow it with cruz attach " + rec.ID})
				autoRecover = append(autoRecover, j)
			} else {
				j.out.Append(api.Frame{Error: "the cruz agent restarted while the job ran; restart it from its latest checkpoint with: cruz restart " + rec.ID})
			}
			if err := a.persist(j); err != nil {
				return err
			}
			for _, p := range rec.Pods {
				if p.Node != "" && p.Node != a.node && rec.Policy.Restart != "auto" {
					remote = append(remote, j)
					break
				}
			}
		}
		a.jobs[rec.ID] = j
	}
	if n, err := a.store.CleanDeleted(); err != nil {
		a.log.Warn("finishing interrupted deletions in the store", "err", err)
	} else if n > 0 {
		a.log.Info("finished interrupted deletions in the store", "count", n)
	}
	// The pods the lost jobs had on other nodes go too, once those nodes
	// answer (in the background: they may be starting as well).
	for _, j := range remote {
		go a.removeRemotePods(j)
	}
	// Jobs whose policy says so are rolled back by themselves (their
	// pods elsewhere are removed first, in the same step).
	for _, j := range autoRecover {
		go a.recoverLost(j)
	}
	return nil
}

// removeRemotePods asks the other nodes to remove a lost job's pods, for up
// to a minute.
func (a *Agent) removeRemotePods(j *job) {
	for try := 0; try < 60; try++ {
		j.op.Lock()
		if j.hasPods() {
			j.op.Unlock()
			return // restarted meanwhile
		}
		_, err := a.onNodes(context.Background(), j, api.OpDestroy, func(node string, pods []string) api.NodeRequest {
			if node == a.node {
				return api.NodeRequest{Job: j.id()}
			}
			return api.NodeRequest{Job: j.id(), Pods: pods}
		})
		j.op.Unlock()
		if err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	a.log.Warn("could not remove the pods of a lost job on other nodes", "job", j.id())
}

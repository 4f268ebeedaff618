package node

// When an agent dies (a crash, a kill -9) the pods it held keep running. A
// new agent on the node takes back the pods of jobs that another node
// coordinates: the coordinator still runs them, and it retries what it asks
// of this node until the node answers again. The pods of jobs this node
// coordinated are removed instead (the job is lost with its coordinator).

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/pod"
)

// Reconcile loads the pod sets a previous agent left: it takes back the
// live pods of jobs that other nodes coordinate, kills every other pod
// still on the node, and deletes every veth on the pod bridge that no pod
// taken back explains.
func (n *Node) Reconcile() {
	keep := map[string]bool{}
	sets, _ := os.ReadDir(n.setsDir())
	for _, e := range sets {
		dir := filepath.Join(n.setsDir(), e.Name())
		var rec setRecord
		if b, err := os.ReadFile(filepath.Join(dir, "set.json")); err == nil && json.Unmarshal(b, &rec) == nil {
			if rec.Coordinator != "" && rec.Coordinator != n.cfg.Name && rec.Job == e.Name() {
				if pods := n.readopt(dir, rec); pods != nil {
					for _, p := range pods {
						keep[p] = true
					}
					continue
				}
			}
			// The pods' network namespaces die with their last process.
			for p, ino := range rec.Netns {
				n.killLeftPod(rec, p, ino)
			}
		}
		_ = os.RemoveAll(dir)
	}
	n.cfg.Host.RemoveLeftovers(keep)
}

// killLeftPod kills pod name of a set a previous agent left, if its PID 1
// (rec.Inits) still runs in its netns; a record that names processes that
// are gone, or others by now, kills nothing.
func (n *Node) killLeftPod(rec setRecord, name string, ino uint64) {
	id := rec.Inits[name]
	if err := pod.KillLeftPod(id, ino); err != nil {
		n.log.Info("nothing to remove of a pod that ran when the previous agent ended", "job", rec.Job, "pod", name, "pid", id.PID, "netns", ino, "why", err)
		return
	}
	n.log.Warn("removed a pod that ran when the previous agent ended", "job", rec.Job, "pod", name, "pid", id.PID, "coordinator", rec.Coordinator)
}

// readopt takes back the live pods of a set left by a previous agent and
// returns their names; nil if nothing was taken back.
func (n *Node) readopt(dir string, rec setRecord) []string {
	s := &podSet{job: rec.Job, uid: rec.UID, gid: rec.GID, coordinator: rec.Coordinator, dir: dir, pods: map[string]*pod.Pod{}}
	out, err := joblog.Open(filepath.Join(dir, "output"), rec.UID)
	if err != nil {
		n.log.Warn("cannot take back a pod set", "job", rec.Job, "err", err)
		return nil
	}
	n.boundLog(out, rec.Job)
	s.out = out
	s.sink = nodeLogSink(out)
	var names []string
	for name, ino := range rec.Netns {
		spec, ok := rec.Specs[name]
		if !ok {
			n.killLeftPod(rec, name, ino)
			continue
		}
		p, err := pod.Adopt(spec, ino, rec.Inits[name], s.sink)
		if err != nil {
			n.log.Warn("cannot take back a pod", "job", rec.Job, "pod", name, "err", err)
			n.killLeftPod(rec, name, ino)
			continue
		}
		// A checkpoint or migration may have been cut short with the old
		// agent: the pod runs on. Its traffic stays held (or is held now)
		// until its coordinator confirms that it still counts on this pod
		// here: it may have restored the job elsewhere meanwhile, and two
		// pods with one address must never both talk.
		p.ResumeStopped()
		if err := n.cfg.Host.Block(context.Background(), p); err != nil {
			n.log.Warn("holding the traffic of a pod taken back", "pod", name, "err", err)
		}
		s.pods[name] = p
		names = append(names, name)
		n.log.Info("took back a pod of a job coordinated by another node", "job", rec.Job, "pod", name, "pid", p.PID, "coordinator", rec.Coordinator)
	}
	if len(s.pods) == 0 {
		out.Close()
		return nil
	}
	n.mu.Lock()
	n.sets[rec.Job] = s
	n.mu.Unlock()
	n.persist(s)
	go n.confirmAdopted(s)
	return names
}

// confirmAdopted asks the job's coordinator whether it still counts on the
// pods taken back here: those it does get their traffic back, the others
// (the job ended, or was restored elsewhere while this node's agent was
// away) are removed. An unreachable coordinator is asked again for a
// minute; after that the pods are removed: held pods help no one.
func (n *Node) confirmAdopted(s *podSet) {
	if n.cfg.Peers == nil {
		return
	}
	for try := 0; try < 60; try++ {
		// The agent asks for itself (as root): the set's record keeps the
		// owner's uid, not the whole identity a request for the user carries.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := n.cfg.Peers.Job(ctx, s.coordinator, s.job)
		cancel()
		if err != nil && !errors.Is(err, api.ErrNotFound) {
			time.Sleep(time.Second)
			continue
		}
		here := map[string]bool{}
		if err == nil && info.State.HoldsPods() {
			for _, p := range info.Pods {
				if p.Node == n.cfg.Name {
					here[p.Name] = true
				}
			}
		}
		pods, _ := s.list(nil, n.cfg.Name)
		var gone []string
		for _, p := range pods {
			if !here[p.Spec.Name] {
				gone = append(gone, p.Spec.Name)
			}
		}
		if len(gone) > 0 {
			n.log.Info("removing pods taken back that their coordinator no longer runs here", "job", s.job, "pods", gone)
			_, _ = n.Do(context.Background(), rootIdentity, api.OpDestroy, api.NodeRequest{Job: s.job, Pods: gone})
		}
		for _, p := range pods {
			if here[p.Spec.Name] {
				if err := n.cfg.Host.Unblock(context.Background(), p); err != nil {
					n.log.Warn("releasing a pod taken back", "pod", p.Spec.Name, "err", err)
				}
			}
		}
		return
	}
	n.log.Warn("the coordinator of pods taken back does not answer; removing them", "job", s.job, "coordinator", s.coordinator)
	_, _ = n.Do(context.Background(), rootIdentity, api.OpDestroy, api.NodeRequest{Job: s.job})
}

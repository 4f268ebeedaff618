package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/pod"
	"github.com/cruz-hpc/cruz/internal/store"
)

// podSet is one job's pods on this node.
type podSet struct {
	job         string
	uid, gid    uint32
	coordinator string
	dir         string // run_dir/sets/<job>
	sink        pod.Sink
	out         *joblog.Log // nil when this node coordinates (sink is the job's log)

	// op serialises dumps with what undoes them: a resume that comes
	// while a dump still runs (the coordinator gave up on it) waits for it.
	op   sync.Mutex
	mu   sync.Mutex
	pods map[string]*pod.Pod
	// saving serialises writes of set.json.
	saving sync.Mutex
}

// setRecord is set.json: what an agent that restarts must know of a set.
type setRecord struct {
	Job         string              `json:"job"`
	UID         uint32              `json:"uid"`
	GID         uint32              `json:"gid"`
	Coordinator string              `json:"coordinator"`
	Netns       map[string]uint64   `json:"netns"`
	Specs       map[string]pod.Spec `json:"specs"`
	// Inits names each pod's PID 1 with its start time: the netns inode
	// alone may name another namespace by the time an agent reads this.
	Inits map[string]pod.InitID `json:"inits"`
}

// list returns the named pods of the set (all of them, by name, if names is
// empty).
func (s *podSet) list(names []string, node string) ([]*pod.Pod, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(names) == 0 {
		out := make([]*pod.Pod, 0, len(s.pods))
		for _, p := range s.pods {
			out = append(out, p)
		}
		sort.Slice(out, func(i, k int) bool { return out[i].Spec.Name < out[k].Spec.Name })
		return out, nil
	}
	out := make([]*pod.Pod, 0, len(names))
	for _, name := range names {
		p, ok := s.pods[name]
		if !ok {
			return nil, api.Errorf(api.ErrNotFound, "pod %s of job %s is not on node %s", name, s.job, node)
		}
		out = append(out, p)
	}
	return out, nil
}

// only keeps the pods named in names (all if names is empty).
func only(pods []*pod.Pod, names []string) []*pod.Pod {
	if len(names) == 0 {
		return pods
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []*pod.Pod
	for _, p := range pods {
		if want[p.Spec.Name] {
			out = append(out, p)
		}
	}
	return out
}

// nodeLogSink appends what pods print to the node's own output log of a job
// coordinated elsewhere, which its coordinator follows.
func nodeLogSink(out *joblog.Log) pod.Sink {
	return func(stream string, data []byte) {
		if data != nil {
			out.Append(api.Frame{Stream: stream, Data: data})
		}
	}
}

// setFor returns the job's set, creating it for the caller if needed.
func (n *Node) setFor(c api.Identity, job, coordinator string) (*podSet, error) {
	if err := store.ValidateJobID(job); err != nil {
		return nil, api.Errorf(api.ErrInvalid, "%w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.sets[job]; ok {
		if c.UID != 0 && s.uid != c.UID {
			return nil, api.Errorf(api.ErrForbidden, "the pods of job %s on node %s belong to uid %d, not %d", job, n.cfg.Name, s.uid, c.UID)
		}
		return s, nil
	}
	s := &podSet{job: job, uid: c.UID, gid: c.GID, coordinator: coordinator, dir: filepath.Join(n.setsDir(), job),
		pods: map[string]*pod.Pod{}}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pod set directory: %w", err)
	}
	if sink, owner, ok := n.localSink(job, coordinator); ok {
		s.uid, s.gid = owner.UID, owner.GID
		s.sink = sink
	} else {
		out, err := joblog.Open(filepath.Join(s.dir, "output"), s.uid)
		if err != nil {
			return nil, err
		}
		n.boundLog(out, job)
		s.out = out
		s.sink = nodeLogSink(out)
	}
	n.sets[job] = s
	return s, nil
}

func (n *Node) localSink(job, coordinator string) (pod.Sink, api.Identity, bool) {
	if coordinator != n.cfg.Name || n.cfg.Local == nil {
		return nil, api.Identity{}, false
	}
	return n.cfg.Local.OutputSink(job)
}

// setOf returns the job's set if the caller may act on it.
func (n *Node) setOf(c api.Identity, job string) (*podSet, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.sets[job]
	if !ok {
		return nil, n.notHere(job)
	}
	if c.UID != 0 && s.uid != c.UID {
		return nil, api.Errorf(api.ErrForbidden, "the pods of job %s on node %s belong to uid %d: you (uid %d) can act only on your own jobs", job, n.cfg.Name, s.uid, c.UID)
	}
	return s, nil
}

// OutputLog is the node's output log of a job coordinated elsewhere, which
// the job's coordinator follows.
func (n *Node) OutputLog(c api.Identity, job string) (*joblog.Log, error) {
	s, err := n.setOf(c, job)
	if err != nil {
		return nil, err
	}
	if s.out == nil {
		return nil, api.Errorf(api.ErrConflict, "job %s is coordinated by this node: attach to it instead", s.job)
	}
	return s.out, nil
}

// persist saves the set's record, or removes the set when it is empty.
func (n *Node) persist(s *podSet) {
	s.saving.Lock()
	defer s.saving.Unlock()
	s.mu.Lock()
	rec := setRecord{Job: s.job, UID: s.uid, GID: s.gid, Coordinator: s.coordinator, Netns: map[string]uint64{}, Specs: map[string]pod.Spec{}, Inits: map[string]pod.InitID{}}
	for name, p := range s.pods {
		rec.Netns[name] = p.NetnsInode()
		rec.Specs[name] = p.Spec
		rec.Inits[name] = p.InitID()
	}
	empty := len(s.pods) == 0
	s.mu.Unlock()
	if empty {
		n.mu.Lock()
		if n.sets[s.job] == s {
			delete(n.sets, s.job)
		}
		n.mu.Unlock()
		if s.out != nil {
			s.out.Close()
		}
		_ = os.RemoveAll(s.dir)
		return
	}
	b, _ := json.Marshal(rec)
	tmp := filepath.Join(s.dir, ".set.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		if err := os.Rename(tmp, filepath.Join(s.dir, "set.json")); err != nil {
			n.log.Error("saving pod set", "job", s.job, "err", err)
		}
	}
}

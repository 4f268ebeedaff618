// Package node owns the node side of the Cruz protocol: the pods this node
// holds for every job, whatever agent coordinates it (one pod set per job),
// and the node operations a coordinator asks of them (start, block, dump,
// resume, destroy, restore, release, wait, signal, pods). It acts on a pod
// only for the pod's owner or root, and finds checkpoint directories itself:
// a request never names a path. It tells coordinators about its pods only
// by answering node operations (and through their output logs); it never
// calls a coordinator but to ask whether pods it took back from a dead agent
// are still wanted. It does not know jobs, policies or HTTP: the agent maps
// its errors (internal/api kinds) to the wire.
package node

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/pod"
	"github.com/cruz-hpc/cruz/internal/store"
)

// PodHost makes, dumps and removes pods, and holds or releases their
// traffic. *pod.Host (with the functions of package pod) is the real one.
type PodHost interface {
	Start(ctx context.Context, spec pod.Spec, sink pod.Sink) (*pod.Pod, error)
	Restore(ctx context.Context, spec pod.Spec, imagesDir, workDir string, pipes map[string]string, sink pod.Sink, timeout time.Duration) (*pod.Pod, error)
	Dump(ctx context.Context, p *pod.Pod, o pod.DumpOptions) (time.Duration, error)
	Destroy(p *pod.Pod)
	Block(ctx context.Context, p *pod.Pod) error
	// BlockOutput holds only what the pod sends (see api.NodeRequest).
	BlockOutput(ctx context.Context, p *pod.Pod) error
	Unblock(ctx context.Context, p *pod.Pod) error
	// UnblockInput lets only what reaches the pod through (see
	// api.NodeRequest.InputOnly).
	UnblockInput(ctx context.Context, p *pod.Pod) error
	// Release lets a restored pod's traffic flow, announces its address on
	// the LAN and pushes the data its TCP sockets hold.
	Release(ctx context.Context, p *pod.Pod) error
	// RemoveLeftovers deletes the host ends of pod links that no pod in
	// keep (by name) explains: what pods of a dead agent left.
	RemoveLeftovers(keep map[string]bool)
}

// OutputSink receives what a pod prints (pod.Sink).
type OutputSink = pod.Sink

// Local is what the node needs of the coordinator on its own machine.
type Local interface {
	// OutputSink is where the output of the job's pods goes when this
	// node's agent coordinates the job (its output log), with the job's
	// owner; ok is false for a job coordinated elsewhere.
	OutputSink(job string) (sink OutputSink, owner api.Identity, ok bool)
}

// Coordinators asks other agents about jobs they coordinate.
type Coordinators interface {
	// Job asks the agent of node about job, as root.
	Job(ctx context.Context, node, job string) (api.Job, error)
}

// Config is what a Node is made of.
type Config struct {
	Name        string       // this node
	RunDir      string       // the agent's run directory: pod sets live in RunDir/sets
	Subnet      netip.Prefix // the pods' subnet
	CRIUTimeout time.Duration
	Store       *store.Store
	Host        PodHost
	Local       Local
	Peers       Coordinators
	Log         *slog.Logger
	// MaxLogBytes bounds the output logs of pods of jobs coordinated
	// elsewhere (output.max_log_bytes); 0: none.
	MaxLogBytes int64
	// SlurmCgroups are the cgroups under one of which Slurm makes its
	// steps' cgroups on this node (agent.slurm_cgroups, with the node's
	// name for %n); empty: pods never join a step's.
	SlurmCgroups []string
}

// Node is this node's pods and the operations on them.
type Node struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	sets map[string]*podSet // by job
	// createMu serialises the address check of new pods with their
	// registration, so that two pods never get one address on this node.
	createMu sync.Mutex
}

// New makes the node's side of the agent. Reconcile takes back what a
// previous agent left.
func New(cfg Config) *Node {
	return &Node{cfg: cfg, log: cfg.Log, sets: map[string]*podSet{}}
}

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Name }

func (n *Node) setsDir() string { return filepath.Join(n.cfg.RunDir, "sets") }

// Jobs lists the jobs that have pods on this node.
func (n *Node) Jobs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.sets))
	for id := range n.sets {
		out = append(out, id)
	}
	return out
}

// Coordinator is the node that coordinates job's pods here ("" if none).
func (n *Node) Coordinator(job string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.sets[job]; ok {
		return s.coordinator
	}
	return ""
}

// Shutdown removes every pod of the node (the agent was told to stop:
// nothing of a job outlives it).
func (n *Node) Shutdown(ctx context.Context) {
	for _, id := range n.Jobs() {
		n.log.Info("removing pods at agent shutdown", "job", id)
		_, _ = n.Do(ctx, rootIdentity, api.OpDestroy, api.NodeRequest{Job: id})
	}
}

var rootIdentity = api.Identity{User: "root"}

func (n *Node) notHere(job string) error {
	return api.Errorf(api.ErrNotFound, "job %s has no pods on node %s", job, n.cfg.Name)
}

// SetInfo is what the node tells of one job's pods on it.
type SetInfo struct {
	Job         string
	UID         uint32
	Coordinator string
	Pods        map[string]int // name -> PID 1
}

// Sets describes the pod sets of the jobs for which match is true.
func (n *Node) Sets(match func(job string) bool) []SetInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []SetInfo
	for id, s := range n.sets {
		if !match(id) {
			continue
		}
		info := SetInfo{Job: id, UID: s.uid, Coordinator: s.coordinator, Pods: map[string]int{}}
		s.mu.Lock()
		for name, p := range s.pods {
			info.Pods[name] = p.PID
		}
		s.mu.Unlock()
		out = append(out, info)
	}
	return out
}

// boundLog bounds the output log of a pod set of a job coordinated
// elsewhere, as the coordinator bounds the job's own.
func (n *Node) boundLog(out *joblog.Log, job string) {
	out.SetLimit(n.cfg.MaxLogBytes, func(limit int64) {
		n.log.Warn("a job's output reached the bound of its log on this node: further output of its pods here is discarded", "job", job, "max_log_bytes", limit)
	})
}

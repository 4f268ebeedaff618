package api

import (
	"net"
	"net/netip"
)

// The node-operation protocol: what a job's coordinator sends a node that
// holds some of the job's pods (POST /v1/node/{op}, signed with the cluster
// key for the job's owner), and what the node answers. The coordinator's own
// node gets the same requests by a direct call.

// PodSpec is what a pod is made from; it is also what a checkpoint keeps of
// it (inside the job's record).
type PodSpec struct {
	Name     string  `json:"name"`
	Hostname string  `json:"hostname"`
	Role     PodRole `json:"role"`
	Rank     int     `json:"rank"`
	// Ranks is how many consecutive ranks, from Rank on, a rank pod holds
	// (cruz run --ranks-per-pod); 0 (records of older agents) is one.
	Ranks  int          `json:"ranks,omitempty"`
	Addr   netip.Prefix `json:"addr"`
	Argv   []string     `json:"argv,omitempty"`
	Env    []string     `json:"env,omitempty"`
	Dir    string       `json:"dir,omitempty"`
	UID    uint32       `json:"uid"`
	GID    uint32       `json:"gid"`
	Groups []uint32     `json:"groups,omitempty"`
	// Node is the node the pod is placed on ("" in records of older
	// agents: the coordinator's node).
	Node string `json:"node,omitempty"`
	// PrivateDev gives the pod its own /dev/shm (a tmpfs) and /dev/pts (a
	// new devpts instance, with /dev/ptmx), which CRIU saves and restores
	// with the pod: Open MPI keeps its session files and ranks' terminals
	// there.
	PrivateDev bool `json:"private_dev,omitempty"`
	// Cgroups are the cgroups (controller: path) of the Slurm step the pod
	// belongs to on its node, which its processes join. The node that runs
	// the pod sets them; whatever a request or record carries is replaced.
	Cgroups map[string]string `json:"cgroups,omitempty"`
}

// RankCount is how many ranks a rank pod holds.
func (s PodSpec) RankCount() int {
	if s.Role != RoleRank {
		return 0
	}
	if s.Ranks < 1 {
		return 1
	}
	return s.Ranks
}

// HoldsRank says whether the pod runs rank r.
func (s PodSpec) HoldsRank(r int) bool {
	return s.Role == RoleRank && r >= s.Rank && r < s.Rank+s.RankCount()
}

// RankList lists the ranks the pod holds.
func (s PodSpec) RankList() []int {
	out := make([]int, s.RankCount())
	for i := range out {
		out[i] = s.Rank + i
	}
	return out
}

// MAC is the pod's MAC, derived from its IPv4 address: locally
// administered, unicast, and the same wherever the pod is restored, so the
// address pair moves with the rank.
func (s PodSpec) MAC() net.HardwareAddr { return PodMAC(s.Addr.Addr()) }

// PodMAC is the MAC of the pod with address ip (02:c2 and the address).
func PodMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0xc2, b[0], b[1], b[2], b[3]}
}

// NodeRequest is one node operation on a job's pods on a node.
type NodeRequest struct {
	Job         string `json:"job"`
	Coordinator string `json:"coordinator,omitempty"`
	// Pods names the pods concerned; empty means all of the job's pods on
	// the node (block, resume, destroy, release).
	Pods []string `json:"pods,omitempty"`
	// Spec is the pod to start (start).
	Spec *PodSpec `json:"spec,omitempty"`
	// Images is the checkpoint or transfer id dumped into (dump) or restored
	// from (restore).
	Images string `json:"images,omitempty"`
	// Stop leaves the dumped pods stopped (dump): for a checkpoint that ends
	// the job, or a migration.
	Stop bool `json:"stop,omitempty"`
	// Continue (resume) also sends SIGCONT to the pods' processes: after a
	// dump that failed or left them stopped, not after one that kept them
	// running (a signal during the next dump would make it fail).
	Continue bool `json:"continue,omitempty"`
	// OutputOnly (block) holds only what the pods send. A checkpoint holds
	// every pod's output first and only then its input: the segments in
	// flight between two pods when their traffic is held then arrive,
	// instead of being dropped at the receiver, where only the sender's
	// backed-off retransmission timer (up to a second, see internal/pod)
	// would bring them after the release. What a pod sent into the held
	// output stays unsent in its socket and is pushed on release.
	OutputOnly bool `json:"output_only,omitempty"`
	// InputOnly (resume) lets only what reaches the pods through. A
	// checkpoint's resume opens every pod's input first and only then its
	// output (pushing what its sockets hold): a pod released early would
	// otherwise send into a peer still held, and wait for a retransmission
	// timer (200 ms or more) before its message got through.
	InputOnly bool `json:"input_only,omitempty"`
	// Restore lists the pods to restore, each with its spec and stdio keys.
	Restore []RestorePod `json:"restore,omitempty"`
	Signal  int          `json:"signal,omitempty"`
}

// RestorePod is one pod to restore: its spec and the dump-time identities
// of the pipes it wrote its output to.
type RestorePod struct {
	Spec  PodSpec           `json:"spec"`
	Pipes map[string]string `json:"pipes,omitempty"`
}

// NodeResponse answers a node operation.
type NodeResponse struct {
	Dumps []PodDump `json:"dumps,omitempty"`
	// OutputEnd is where the node's output log of the job ended once the
	// destroyed pods' output was all written (destroy).
	OutputEnd int64 `json:"output_end,omitempty"`
	// ExitCode of the pod waited for (wait).
	ExitCode int         `json:"exit_code"`
	Pods     []PodStatus `json:"pods,omitempty"`
	// Empty: the job has no pods left on the node (destroy).
	Empty bool `json:"empty,omitempty"`
}

// PodDump is what a node reports of one pod's dump.
type PodDump struct {
	Pod    string            `json:"pod"`
	DumpMS int64             `json:"dump_ms"`
	Pipes  map[string]string `json:"pipes,omitempty"`
	// Warnings: what the dump could not keep whole (a file the pod writes
	// over store.max_file_bytes), for the checkpoint's event.
	Warnings []string `json:"warnings,omitempty"`
}

// PodStatus is one pod's state on its node (pods).
type PodStatus struct {
	Name   string  `json:"name"`
	Role   PodRole `json:"role"`
	PID    int     `json:"pid"`
	Exited bool    `json:"exited,omitempty"`
	Code   int     `json:"code,omitempty"`
}

// NodeFrame is a frame of a node's output log of a job with the offset it
// ends at (GET /v1/node/jobs/{job}/output).
type NodeFrame struct {
	Frame
	End int64 `json:"end"`
}

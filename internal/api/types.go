// Package api holds the types of cruzd's HTTP API (JSON over a unix socket)
// and a client for it. The agent identifies callers by the socket's peer
// credentials, so requests carry no user names; on its optional TCP API,
// requests carry the identity they act for, signed with the cluster key
// (see SignRequest).
package api

import "time"

// DefaultSocket is where cruzd listens unless configured otherwise.
const DefaultSocket = "/run/cruz/cruzd.sock"

// RunRequest starts a job.
type RunRequest struct {
	Name string   `json:"name,omitempty"`
	NP   int      `json:"np"`
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
	// Plain runs argv as is, in one pod, without MPI.
	Plain bool `json:"plain,omitempty"`
	// MPI is the MPI that starts the ranks: "mpich" or "openmpi"; empty:
	// mpich (clients before Open MPI support). cruz run finds it from the
	// program (--mpi auto).
	MPI string `json:"mpi,omitempty"`
	// Nodes to spread the ranks over (block distribution); empty: every
	// node of the cluster. mpiexec's pod runs on the agent's own node.
	Nodes []string `json:"nodes,omitempty"`
	// RanksPerPod puts up to that many consecutive ranks of a node in one
	// pod, where MPI may use shared memory between them; the pod is
	// checkpointed, restored and migrated as a whole. 0 or 1: a pod per rank.
	RanksPerPod int `json:"ranks_per_pod,omitempty"`
	// Interval of periodic checkpoints: a duration ("30s", "10m"), "auto"
	// (Young/Daly) or "off"; empty: the cluster's policy.
	Interval string `json:"interval,omitempty"`
	// Keep the last Keep complete checkpoints (0: the cluster's policy).
	Keep int `json:"keep,omitempty"`
	// Spares are nodes held back, of Nodes (or the cluster), to replace
	// nodes that fail: the last Spares of them.
	Spares int `json:"spares,omitempty"`
	// Restart after a failure: "auto" or "never"; empty: the cluster's policy.
	Restart string `json:"restart,omitempty"`
	// Slurm is the Slurm job step the job runs as (srun --cruz): the job
	// takes the id slurm-JOB-STEP and its ranks go where Slurm put the
	// step's tasks. A requeued job resumes from its last checkpoint.
	Slurm *SlurmStep `json:"slurm,omitempty"`
	// Store is the checkpoint store the job asks for (srun --cruz-store);
	// empty: the agent's. Only the agent's own store is accepted.
	Store string `json:"store,omitempty"`
}

// SlurmStep says which Slurm job step a job runs as, and where.
type SlurmStep struct {
	JobID  uint32 `json:"job_id"`
	StepID uint32 `json:"step_id"`
	// Restarts is SLURM_RESTART_COUNT: how often Slurm requeued the job.
	// A job that was requeued resumes from its step's last checkpoint;
	// one that was not starts afresh.
	Restarts int `json:"restarts"`
	// RankNodes is the node of each rank (task), as Slurm placed them.
	RankNodes []string `json:"rank_nodes"`
	// OutputFileBytes is the size of the Slurm job's output file when a
	// requeued step started (nil: unknown). If it holds at least the
	// step's earlier stdout, Slurm appended to the file (--open-mode=append,
	// JobFileAppend=1) and the earlier output is not replayed.
	OutputFileBytes *int64 `json:"output_file_bytes,omitempty"`
}

// SlurmEndRequest asks the agent to end what runs for a Slurm job (scancel,
// requeue, time limit, the epilog): its jobs coordinated here lose their
// pods on every node but keep their checkpoints, and its pods on this node
// are removed.
type SlurmEndRequest struct {
	JobID uint32 `json:"job_id"`
	// StepID, if set, limits it to that step.
	StepID *uint32 `json:"step_id,omitempty"`
	Reason string  `json:"reason"`
}

// SlurmEndResult says what was ended.
type SlurmEndResult struct {
	Jobs []string `json:"jobs"` // jobs coordinated here whose pods were removed
	Pods []string `json:"pods"` // pods removed on this node
}

// CheckpointRequest asks for a checkpoint of a running job.
type CheckpointRequest struct {
	// Stop ends the job with this checkpoint (for restart or migration).
	Stop bool `json:"stop,omitempty"`
	// WaitSeconds, if > 0, waits up to that long for an operation under
	// way on the job (a periodic checkpoint) to end, instead of failing at
	// once (the time-limit warning's checkpoint must not be lost to one).
	WaitSeconds int `json:"wait_s,omitempty"`
	// Progress asks for the answer as a stream of progress frames and
	// the checkpoint's frame last (see Progress).
	Progress bool `json:"progress,omitempty"`
}

// RestartRequest restores a job from a checkpoint ("" = latest good one).
type RestartRequest struct {
	Checkpoint string `json:"checkpoint,omitempty"`
	// Nodes to restore the pods on: mpiexec's pod on the first, the ranks
	// spread over all of them in blocks. Empty: where the checkpoint was taken.
	Nodes []string `json:"nodes,omitempty"`
	// Progress: progress frames of the restore come before the job's
	// frames (see Progress).
	Progress bool `json:"progress,omitempty"`
}

// MigrateRequest moves one pod of a running job to another node, live.
type MigrateRequest struct {
	// Rank selects the rank's pod; Pod names a pod instead (e.g. the
	// mpiexec pod, JOB-mpiexec).
	Rank *int   `json:"rank,omitempty"`
	Pod  string `json:"pod,omitempty"`
	To   string `json:"to"`
	// Progress: answer with a progress stream (see CheckpointRequest).
	Progress bool `json:"progress,omitempty"`
}

// Migration reports a finished migration.
type Migration struct {
	Job string `json:"job"`
	Pod string `json:"pod"`
	// Ranks are the ranks the pod holds, which all moved with it.
	Ranks []int  `json:"ranks,omitempty"`
	From  string `json:"from"`
	To    string `json:"to"`
	// DowntimeMS is how long the pod's traffic was held: from the block
	// before its dump to the release after its restore.
	DowntimeMS int64 `json:"downtime_ms"`
	DumpMS     int64 `json:"dump_ms"`
	RestoreMS  int64 `json:"restore_ms"`
	Bytes      int64 `json:"bytes"`
}

// DrainRequest moves every pod off a node.
type DrainRequest struct {
	Node string `json:"node"`
	// OnlyHere: move only the pods of the jobs this agent coordinates (an
	// agent asks each other agent this way).
	OnlyHere bool `json:"only_here,omitempty"`
	// Progress: answer with a progress stream (see CheckpointRequest).
	Progress bool `json:"progress,omitempty"`
}

// DrainResult lists the migrations a drain made.
type DrainResult struct {
	Node       string      `json:"node"`
	Migrations []Migration `json:"migrations"`
	Errors     []string    `json:"errors,omitempty"`
}

// SignalRequest forwards a signal to the job (to mpiexec for MPI jobs).
type SignalRequest struct {
	Signal int `json:"signal"`
}

// Pod describes one pod of a job.
type Pod struct {
	Name string  `json:"name"`
	Role PodRole `json:"role"`
	Rank int     `json:"rank"`
	// Ranks is how many ranks the pod holds, from Rank on (0: one).
	Ranks    int    `json:"ranks,omitempty"`
	Hostname string `json:"hostname"`
	IP       string `json:"ip"`
	MAC      string `json:"mac"`
	PID      int    `json:"pid,omitempty"`
	Node     string `json:"node,omitempty"`
}

// Job is what the agent tells about a job.
type Job struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	User           string    `json:"user"`
	UID            uint32    `json:"uid"`
	State          JobState  `json:"state"`
	Message        string    `json:"message,omitempty"`
	NP             int       `json:"np"`
	Argv           []string  `json:"argv"`
	ExitCode       *int      `json:"exit_code,omitempty"`
	Created        time.Time `json:"created"`
	Updated        time.Time `json:"updated"`
	Pods           []Pod     `json:"pods"`
	Checkpoints    int       `json:"checkpoints"`
	LastCheckpoint string    `json:"last_checkpoint,omitempty"`
	// Policy in words, e.g. "checkpoint every 30s, keep 3, restart auto".
	Policy string `json:"policy,omitempty"`
	// Spares are the nodes held back to replace failed ones.
	Spares []string `json:"spares,omitempty"`
	// Restarts counts automatic restarts after failures.
	Restarts int `json:"restarts"`
	// RestartPolicy is the job's restart policy: auto or never.
	RestartPolicy string `json:"restart_policy,omitempty"`
	// Slurm is the Slurm job step the job runs as, if any.
	Slurm *SlurmInfo `json:"slurm,omitempty"`
}

// SlurmInfo is the Slurm side of a job run by srun --cruz.
type SlurmInfo struct {
	JobID    uint32 `json:"job_id"`
	StepID   uint32 `json:"step_id"`
	Restarts int    `json:"restarts"`
}

// Event is one entry of a job's event log: what happened to it and what
// the agent decided, in order.
type Event struct {
	Time       time.Time `json:"time"`
	Kind       EventKind `json:"kind"`
	Message    string    `json:"message"`
	Checkpoint string    `json:"checkpoint,omitempty"`
	Node       string    `json:"node,omitempty"`
	Millis     int64     `json:"ms,omitempty"` // how long it took, where that applies
}

// EventList answers GET /v1/jobs/{job}/events.
type EventList struct {
	Events []Event `json:"events"`
	// FromStore: no agent knows the job (removed, or its coordinator's
	// node gone), and the events are those the store kept.
	FromStore bool `json:"from_store,omitempty"`
}

// JobList answers GET /v1/jobs.
type JobList struct {
	Jobs []Job `json:"jobs"`
}

// Checkpoint describes one complete checkpoint.
type Checkpoint struct {
	ID      string           `json:"id"`
	Job     string           `json:"job"`
	Created time.Time        `json:"created"`
	Stopped bool             `json:"stopped"`
	Bytes   int64            `json:"bytes"`
	Pods    []CheckpointPod  `json:"pods"`
	Phases  map[string]int64 `json:"phases_ms"`
	Dir     string           `json:"dir"`
}

// CheckpointPod is one pod's share of a checkpoint.
type CheckpointPod struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	DumpMS int64  `json:"dump_ms"`
}

// CheckpointList answers GET /v1/jobs/{id}/checkpoints. Problems lists
// checkpoints that were skipped because they failed verification.
type CheckpointList struct {
	Checkpoints []Checkpoint `json:"checkpoints"`
	Problems    []string     `json:"problems,omitempty"`
	// FromStore: no agent knows the job; the list is the store's.
	FromStore bool `json:"from_store,omitempty"`
}

// Frame is one line of an attached job's stream (newline-delimited JSON).
// The first frame of a run or restart names the job; the last one is Exit,
// Stopped or Error.
type Frame struct {
	Job     *Job         `json:"job,omitempty"`
	Stream  string       `json:"stream,omitempty"` // stdout or stderr
	Data    []byte       `json:"data,omitempty"`
	Exit    *ExitInfo    `json:"exit,omitempty"`
	Stopped *StoppedInfo `json:"stopped,omitempty"`
	Error   string       `json:"error,omitempty"`
	// A progress stream's frames (Progress): how far the operation has
	// come, then its result, or Error.
	Progress   *Progress    `json:"progress,omitempty"`
	Checkpoint *Checkpoint  `json:"checkpoint,omitempty"`
	Migration  *Migration   `json:"migration,omitempty"`
	Drain      *DrainResult `json:"drain,omitempty"`
}

// ExitInfo ends the stream of a job that finished.
type ExitInfo struct {
	Code int `json:"code"`
}

// StoppedInfo ends the stream of a job stopped by a checkpoint.
type StoppedInfo struct {
	Checkpoint string `json:"checkpoint"`
}

// Terminal tells whether f ends a stream.
func (f *Frame) Terminal() bool { return f.Exit != nil || f.Stopped != nil || f.Error != "" }

// ErrorBody is the body of every non-2xx answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// Version answers GET /v1/version.
type Version struct {
	Agent string `json:"agent"`
	CRIU  string `json:"criu"`
	// CRIUSource is the agent's CRIU and where it comes from, e.g.
	// "/usr/lib/cruz/criu, bundled with cruz 4.2.1-1 (Debian testing)" or
	// "criu, PATH".
	CRIUSource string `json:"criu_source,omitempty"`
	Node       string `json:"node"`
	// MPIs are the MPIs whose launchers the agent found, e.g.
	// "mpich (/usr/bin/mpiexec.hydra)".
	MPIs []string `json:"mpis,omitempty"`
}

// QueueJob is one job as `cruz status --all` lists it (GET /v1/queue):
// what every user may see of any job (like squeue), and its name and
// command only for its owner, root, or everyone if the admin allows it
// (status.show_commands in the agents' config).
type QueueJob struct {
	ID          string    `json:"id"`
	User        string    `json:"user"`
	UID         uint32    `json:"uid"`
	State       JobState  `json:"state"`
	Nodes       []string  `json:"nodes"`
	Coordinator string    `json:"coordinator"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	// Name and Argv are empty for other users' jobs unless the admin
	// allows them to be shown.
	Name string   `json:"name,omitempty"`
	Argv []string `json:"argv,omitempty"`
}

// Queue answers GET /v1/queue: the jobs of every node of the cluster that
// answered, and the nodes that did not.
type Queue struct {
	Jobs        []QueueJob  `json:"jobs"`
	Unreachable []NodeError `json:"unreachable,omitempty"`
}

// NodeError is a node that could not be asked, and why.
type NodeError struct {
	Node  string `json:"node"`
	Error string `json:"error"`
}

// StoreUsage is what the checkpoint store holds (cruz df): the caller's
// use (every user's for root), by job.
type StoreUsage struct {
	Dir string `json:"dir"`
	// Used is every user's bytes together: 0 for others than root.
	Used  int64       `json:"used,omitempty"`
	Free  int64       `json:"free"`
	Users []UserUsage `json:"users"`
}

// UserUsage is one user's share of the checkpoint store.
type UserUsage struct {
	User  string     `json:"user"`
	UID   uint32     `json:"uid"`
	Bytes int64      `json:"bytes"`
	Quota int64      `json:"quota"` // 0: none
	Jobs  []JobUsage `json:"jobs"`
}

// JobUsage is one job's bytes in the checkpoint store.
type JobUsage struct {
	Job         string `json:"job"`
	Bytes       int64  `json:"bytes"`
	Checkpoints int    `json:"checkpoints"`
}

// Progress is how far a long operation (checkpoint, migrate, drain) has
// come, streamed to a client that asked for it ("progress": true) as
// {"progress": ...} frames before the frame with the result.
type Progress struct {
	Op        string `json:"op"` // checkpoint, migrate, drain
	Job       string `json:"job,omitempty"`
	Pod       string `json:"pod,omitempty"` // migrate, drain: the pod that moves
	Phase     string `json:"phase"`         // e.g. block, dump, resume, commit, done
	Pods      int    `json:"pods"`          // pods the phase acts on
	PodsDone  int    `json:"pods_done"`
	Bytes     int64  `json:"bytes"` // image bytes written so far
	ElapsedMS int64  `json:"elapsed_ms"`
}

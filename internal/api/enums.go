package api

// The protocol's typed words: job states, pod roles, event kinds and node
// operations. Their string values are what goes on the wire and into
// records, so they never change meaning.

// JobState is where a job is in its life.
type JobState string

// Job states.
const (
	StateStarting  JobState = "starting"
	StateRunning   JobState = "running"
	StateRestoring JobState = "restoring"
	StateStopped   JobState = "stopped"   // stopped at a checkpoint; cruz restart resumes it
	StateExited    JobState = "exited"    // PID 1 of the job ended; ExitCode says how
	StateFailed    JobState = "failed"    // could not start or restore
	StateLost      JobState = "lost"      // the agent restarted under it; restart from a checkpoint
	StateCancelled JobState = "cancelled" // Slurm ended it (scancel, requeue, time limit); a requeue resumes it
)

// HoldsPods tells whether a job in this state has (or had, when its agent
// died) pods on its nodes.
func (s JobState) HoldsPods() bool {
	return s == StateStarting || s == StateRunning || s == StateRestoring
}

// HoldsAddrs tells whether a job in this state keeps its pods' addresses:
// a stopped, lost or cancelled job may be restored into them.
func (s JobState) HoldsAddrs() bool {
	return s.HoldsPods() || s == StateStopped || s == StateLost || s == StateCancelled
}

// PodRole is what a pod runs for its job.
type PodRole string

// Pod roles.
const (
	RoleMpiexec PodRole = "mpiexec" // the MPI launcher; its end is the job's end
	RoleRank    PodRole = "rank"    // one MPI rank (its process manager's proxy as PID 1)
	RoleMain    PodRole = "main"    // the only pod of a plain job
)

// IsMain tells whether a pod of this role ends the job when its PID 1 ends.
func (r PodRole) IsMain() bool { return r != RoleRank }

// EventKind says what an entry of a job's event log is about.
type EventKind string

// Event kinds, in the order a job meets them. EventKinds describes each;
// docs/user-guide.md lists them (a test checks that the two agree).
const (
	EventStarted           EventKind = "started"
	EventCheckpoint        EventKind = "checkpoint"
	EventCheckpointFailed  EventKind = "checkpoint_failed"
	EventCheckpointSkipped EventKind = "checkpoint_skipped"
	EventStretched         EventKind = "stretched"
	EventPruned            EventKind = "pruned"
	EventMigrated          EventKind = "migrated"
	EventFailure           EventKind = "failure"
	EventRestarting        EventKind = "restarting"
	EventRecovered         EventKind = "recovered"
	EventOutput            EventKind = "output"
	EventOutputLimit       EventKind = "output_limit"
	EventGaveUp            EventKind = "gave_up"
	EventStopped           EventKind = "stopped"
	EventRestarted         EventKind = "restarted"
	EventCancelled         EventKind = "cancelled"
	EventExited            EventKind = "exited"
	EventEventsLimit       EventKind = "events_limit"
)

// EventKinds lists every event kind with what it means, for the docs.
var EventKinds = []struct {
	Kind EventKind
	Says string
}{
	{EventStarted, "the job started: where its ranks run and its policy"},
	{EventCheckpoint, "a checkpoint was committed: its size and how long traffic was held"},
	{EventCheckpointFailed, "a checkpoint failed and was abandoned; the job ran on (and when it is tried again)"},
	{EventCheckpointSkipped, "a checkpoint failed verification and a restore skipped it"},
	{EventStretched, "the checkpoints are spaced out more than the policy's interval (or back to it), so that their holds stay within policy.max_overhead of the job's time"},
	{EventPruned, "old checkpoints were deleted by the retention policy"},
	{EventMigrated, "a pod moved to another node: its downtime"},
	{EventFailure, "a failure was detected: what failed, and where"},
	{EventRestarting, "the job is being rolled back to its last checkpoint"},
	{EventRecovered, "the rollback is done: from which checkpoint, where pods moved, how long it took"},
	{EventOutput, "lines the restored run printed again were not shown twice"},
	{EventOutputLimit, "the job's output log reached its bound (output.max_log_bytes): further output is discarded"},
	{EventGaveUp, "the job stopped trying to recover, and why"},
	{EventStopped, "the job was stopped at a checkpoint (cruz checkpoint --stop)"},
	{EventRestarted, "the job was restored from a checkpoint (cruz restart, a Slurm requeue)"},
	{EventCancelled, "Slurm ended the job's step (scancel, requeue, time limit)"},
	{EventExited, "the job's main process ended: its status"},
	{EventEventsLimit, "the job's event log in the store reached its bound (1 MiB): later events are not kept there (the agent's log has them)"},
}

// NodeOp is an operation a job's coordinator asks of a node that holds some
// of the job's pods (POST /v1/node/{op}).
type NodeOp string

// Node operations.
const (
	OpStart   NodeOp = "start"   // start a new pod
	OpBlock   NodeOp = "block"   // hold the pods' traffic
	OpDump    NodeOp = "dump"    // dump the pods with CRIU into a pending checkpoint or transfer
	OpResume  NodeOp = "resume"  // let held pods go on (after a checkpoint, or one abandoned)
	OpDestroy NodeOp = "destroy" // kill and remove pods
	OpRestore NodeOp = "restore" // restore pods from images, their traffic held
	OpRelease NodeOp = "release" // let restored pods' traffic flow and announce them
	OpWait    NodeOp = "wait"    // wait for a pod's PID 1 to end
	OpSignal  NodeOp = "signal"  // signal a pod's PID 1
	OpPods    NodeOp = "pods"    // the pods' states (the coordinator's heartbeat)
)

// NodeOps lists every node operation.
var NodeOps = []NodeOp{OpStart, OpBlock, OpDump, OpResume, OpDestroy, OpRestore, OpRelease, OpWait, OpSignal, OpPods}

// Valid tells whether op is a node operation.
func (op NodeOp) Valid() bool {
	for _, o := range NodeOps {
		if o == op {
			return true
		}
	}
	return false
}

package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/mpi"
)

// jobRecord is what the agent remembers of a job (job.json in its run
// directory) and what a checkpoint keeps of it (the manifest's spec).
type jobRecord struct {
	ID       string         `json:"id"`
	Name     string         `json:"name"`
	User     string         `json:"user"`
	UID      uint32         `json:"uid"`
	GID      uint32         `json:"gid"`
	Groups   []uint32       `json:"groups,omitempty"`
	Request  api.RunRequest `json:"request"`
	State    api.JobState   `json:"state"`
	Message  string         `json:"message,omitempty"`
	ExitCode *int           `json:"exit_code,omitempty"`
	Pods     []api.PodSpec  `json:"pods"`
	Created  time.Time      `json:"created"`
	Updated  time.Time      `json:"updated"`
	// LastCheckpoint is the newest checkpoint this agent committed.
	LastCheckpoint string `json:"last_checkpoint,omitempty"`
	// OutputStart is where the current run's frames start in the output
	// log: a restart's client is streamed from there.
	OutputStart int64 `json:"output_start"`
	// Policy is the job's checkpoint and recovery policy.
	Policy jobPolicy `json:"policy"`
	// Spares are nodes held back to replace nodes that fail.
	Spares []string `json:"spares,omitempty"`
}

// job is a job known to this agent.
type job struct {
	// op serialises operations that change the job's pods: start,
	// checkpoint, restart, removal. A checkpoint request that finds it
	// taken is refused rather than queued.
	op sync.Mutex
	// mu guards the fields below.
	mu  sync.Mutex
	rec jobRecord
	out *joblog.Log
	// live: the job's pods exist (on whatever nodes rec.Pods names).
	live bool
	// gen counts the job's runs and moves of its main pod, so that a
	// watcher of a main pod that is gone ignores its end.
	gen int
	// ending is set while the agent itself stops the pods (stop-checkpoint,
	// removal), so that the exit of PID 1 is not reported as the job's end.
	ending bool
	// followers copy the output of the job's pods on other nodes.
	followers map[string]*follower
	// sup is the policy engine's state of the job (supervise.go).
	sup *supervisor
	// saving serialises writes of job.json.
	saving sync.Mutex
	// dedup filters the stdout of a run restored by an automatic rollback.
	dedup *joblog.LineDedup
	// signalled: the job's user sent it a signal that ends processes, so
	// its end is not a failure to recover from.
	signalled bool
	// storeGone: the job's directory in the store was deleted with its
	// checkpoints (cruz rm --checkpoints, a Slurm step that ended), so its
	// events are no longer appended there: an append would make it again.
	storeGone atomic.Bool
	// gate reads hydra's proxy launch lines from mpiexec's stdout while
	// the job starts.
	gate *mpi.LaunchGate
	// overQuota is what the job's last checkpoint attempt wrote when it
	// was abandoned for the quota: the next one is judged by it (quota.go).
	overQuota int64
	// endCode is the status the main process ended with, for the recovery
	// of that failure: if the job gives up, its status is that one.
	endCode *int
}

func (j *job) id() string { return j.rec.ID }

func (j *job) hasPods() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.live
}

func (j *job) state() api.JobState {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rec.State
}

// mainPod is the pod whose PID 1's exit ends the job: mpiexec, or the only
// pod of a plain job.
func (j *job) mainPod() (api.PodSpec, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, p := range j.rec.Pods {
		if p.Role != api.RoleRank {
			return p, true
		}
	}
	return api.PodSpec{}, false
}

func (a *Agent) setState(j *job, state api.JobState, msg string) {
	j.mu.Lock()
	j.rec.State, j.rec.Message, j.rec.Updated = state, msg, time.Now().UTC()
	j.mu.Unlock()
	if err := a.persist(j); err != nil {
		a.log.Error("saving job state", "job", j.id(), "err", err)
	}
	a.trackJob(j, state)
}

var jobNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$`)

// maxPodsPerJob bounds a job's pods on one node.
const maxPodsPerJob = 256

func validateRun(req *api.RunRequest) error {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return api.Errorf(api.ErrInvalid, "no command given: cruz run [--np N] -- COMMAND ARGS...")
	}
	if req.Plain && req.NP == 0 {
		req.NP = 1
	}
	if req.NP < 1 || req.NP > maxPodsPerJob {
		return api.Errorf(api.ErrInvalid, "--np %d is out of range: give a number of ranks from 1 to %d", req.NP, maxPodsPerJob)
	}
	if req.Plain && req.NP != 1 {
		return api.Errorf(api.ErrInvalid, "a plain (non-MPI) job runs in one pod: drop --np or --plain")
	}
	if req.RanksPerPod < 0 || req.RanksPerPod > maxPodsPerJob {
		return api.Errorf(api.ErrInvalid, "--ranks-per-pod %d is out of range: give how many ranks of a node may share a pod, from 1 to %d", req.RanksPerPod, maxPodsPerJob)
	}
	if req.Plain && req.RanksPerPod > 1 {
		return api.Errorf(api.ErrInvalid, "--ranks-per-pod is for MPI jobs: a plain (non-MPI) job runs in one pod")
	}
	if req.Plain && len(req.Nodes) > 0 {
		return api.Errorf(api.ErrInvalid, "a plain (non-MPI) job runs in one pod on the agent's node: drop --nodes")
	}
	if req.Name == "" {
		req.Name = filepath.Base(req.Argv[0])
		if !jobNameRE.MatchString(req.Name) {
			req.Name = "job"
		}
	}
	if !jobNameRE.MatchString(req.Name) {
		return api.Errorf(api.ErrInvalid, "job name %q is not valid: use 1 to 40 letters, digits, '.', '_' or '-', starting with a letter or digit", req.Name)
	}
	if !filepath.IsAbs(req.Dir) {
		return api.Errorf(api.ErrInvalid, "working directory %q must be an absolute path", req.Dir)
	}
	for _, kv := range req.Env {
		if !strings.Contains(kv, "=") || strings.HasPrefix(kv, "=") || strings.ContainsRune(kv, 0) {
			return api.Errorf(api.ErrInvalid, "environment entry %q is not KEY=VALUE", kv)
		}
	}
	return nil
}

func newJobID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// spec is what a checkpoint keeps of the job, to restart it.
func (j *job) spec() (json.RawMessage, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return json.Marshal(j.rec)
}

// current tells whether run gen of the job is still the live one.
// stopSupervisor ends the policy engine's work on the job's current run
// (a periodic checkpoint it waits for, say) before the run is ended.
func (j *job) stopSupervisor() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sup != nil && j.sup.cancel != nil {
		j.sup.cancel()
	}
}

func (j *job) current(gen int) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.gen == gen && j.live && !j.ending
}

// restartsAfter tells whether the end of the job's main process with code
// is a failure to recover from: a plain command killed by a signal, or
// mpiexec ending with an error (a rank, proxy or connection lost), unless
// its own user signalled it.
func (j *job) failedEnd(code int) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if code == 0 || j.signalled || j.rec.Policy.Restart != "auto" {
		return false
	}
	if j.rec.Request.Plain {
		return code >= 128 || code < 0
	}
	return true
}

// lookup finds a job by id or, failing that, by name among the caller's jobs,
// and checks that the caller may act on it.
func (a *Agent) lookup(c caller, ref string) (*job, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	j, ok := a.jobs[ref]
	if !ok {
		var matches []*job
		for _, cand := range a.jobs {
			if cand.rec.Name == ref && (c.UID == 0 || cand.rec.UID == c.UID) {
				matches = append(matches, cand)
			}
		}
		if len(matches) == 0 {
			if sj, ok := a.lookupSlurmLocked(c, ref); ok {
				matches = append(matches, sj)
			}
		}
		switch len(matches) {
		case 0:
			return nil, api.Errorf(api.ErrNotFound, "job %q does not exist on this node (cruz status lists your jobs)", ref)
		case 1:
			j = matches[0]
		default:
			ids := make([]string, len(matches))
			for i, m := range matches {
				ids[i] = m.rec.ID
			}
			sort.Strings(ids)
			return nil, api.Errorf(api.ErrInvalid, "job name %q matches several jobs (%v): use the job id", ref, ids)
		}
	}
	if c.UID != 0 && j.rec.UID != c.UID {
		return nil, api.Errorf(api.ErrForbidden, "job %s belongs to user %s: you (uid %d) can act only on your own jobs", j.rec.ID, j.rec.User, c.UID)
	}
	return j, nil
}

func (a *Agent) jobList() []*job {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*job, 0, len(a.jobs))
	for _, j := range a.jobs {
		out = append(out, j)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].rec.Created.Before(out[k].rec.Created) })
	return out
}

// persist writes the job's record atomically.
func (a *Agent) persist(j *job) error {
	j.saving.Lock()
	defer j.saving.Unlock()
	j.mu.Lock()
	b, err := json.MarshalIndent(j.rec, "", "  ")
	id := j.rec.ID
	j.mu.Unlock()
	if err != nil {
		return err
	}
	dir := a.jobDir(id)
	tmp := filepath.Join(dir, ".job.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save job %s: %w", id, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "job.json")); err != nil {
		return fmt.Errorf("save job %s: %w", id, err)
	}
	return nil
}

package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/mpi"
	"github.com/cruz-hpc/cruz/internal/slurm"
)

// TaskArgv0Env is set by the SPANK plugin in each task of an srun --cruz
// step: slurmstepd then execs cruz in place of the task's program, whose
// path this variable holds (its arguments are cruz's).
const TaskArgv0Env = "CRUZ_TASK_ARGV0"

// slurmStep is what a task of an srun --cruz step knows from its
// environment.
type slurmStep struct {
	jobID, stepID uint32
	procID        int
	ntasks        int
	restarts      int
	rankNodes     []string // node of each task, in Slurm's block order
	interval      string
	restart       string // auto or never ("" : the cluster's policy)
	store         string
	ranksPerPod   int // srun --cruz-ranks-per-pod (0: a pod per task)
}

// readSlurmStep reads a task's Slurm step from its environment.
func readSlurmStep(getenv func(string) string) (slurmStep, error) {
	var s slurmStep
	num := func(key string, dst *int, required bool) error {
		v := getenv(key)
		if v == "" {
			if required {
				return fmt.Errorf("%s is not set: cruz runs this way only as a task of srun --cruz", key)
			}
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%s=%q is not a number", key, v)
		}
		*dst = n
		return nil
	}
	var job, step int
	for _, e := range []struct {
		key string
		dst *int
		req bool
	}{
		{"SLURM_JOB_ID", &job, true}, {"SLURM_STEP_ID", &step, true}, {"SLURM_PROCID", &s.procID, true},
		{"SLURM_STEP_NUM_TASKS", &s.ntasks, true}, {"SLURM_RESTART_COUNT", &s.restarts, false},
	} {
		if err := num(e.key, e.dst, e.req); err != nil {
			return s, err
		}
	}
	if job <= 0 || job > 1<<32-1 || step > 1<<32-1 {
		return s, fmt.Errorf("SLURM_JOB_ID=%d SLURM_STEP_ID=%d are out of range", job, step)
	}
	s.jobID, s.stepID = uint32(job), uint32(step)
	nodes, err := ExpandHostlist(getenv("SLURM_STEP_NODELIST"))
	if err != nil {
		return s, fmt.Errorf("SLURM_STEP_NODELIST: %w", err)
	}
	counts, err := ParseTasksPerNode(getenv("SLURM_STEP_TASKS_PER_NODE"))
	if err != nil {
		return s, fmt.Errorf("SLURM_STEP_TASKS_PER_NODE: %w", err)
	}
	if len(counts) != len(nodes) {
		return s, fmt.Errorf("SLURM_STEP_TASKS_PER_NODE gives %d counts for %d nodes (%s)", len(counts), len(nodes), strings.Join(nodes, ","))
	}
	for i, n := range counts {
		for k := 0; k < n; k++ {
			s.rankNodes = append(s.rankNodes, nodes[i])
		}
	}
	if len(s.rankNodes) != s.ntasks {
		return s, fmt.Errorf("SLURM_STEP_TASKS_PER_NODE places %d tasks, SLURM_STEP_NUM_TASKS says %d", len(s.rankNodes), s.ntasks)
	}
	s.interval, s.restart, s.store = getenv("CRUZ_INTERVAL"), getenv("CRUZ_RESTART"), getenv("CRUZ_STORE")
	if v := getenv("CRUZ_RANKS_PER_POD"); v != "" { // srun --cruz-ranks-per-pod
		if s.ranksPerPod, err = strconv.Atoi(v); err != nil || s.ranksPerPod < 1 {
			return s, fmt.Errorf("CRUZ_RANKS_PER_POD=%q (--cruz-ranks-per-pod) is not a number of 1 or more", v)
		}
	}
	return s, nil
}

func (s slurmStep) jobRef() string { return fmt.Sprintf("slurm-%d-%d", s.jobID, s.stepID) }
func (s slurmStep) name() string   { return fmt.Sprintf("%d.%d", s.jobID, s.stepID) }

// SlurmTask runs one task of an srun --cruz step in place of its program
// (argv). The step's first task asks its node's agent to run the program
// as a Cruz job of one pod per task, on the step's nodes, or to resume it
// from its last checkpoint if Slurm requeued the job; it streams the job's
// output to where Slurm sends the task's and exits with the job's status.
// The other tasks wait for the job to end and exit with its status too, so
// that the step ends when the job does. scancel (SIGTERM) ends the job's
// pods on every node; the time-limit warning (sbatch/srun --signal=USR1@T)
// checkpoints the job, and with --cruz-restart=auto stops it there and
// requeues the Slurm job, which then resumes from that checkpoint.
func SlurmTask(ctx context.Context, argv []string, stdout, stderr io.Writer) int {
	failf := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "cruz: srun --cruz: "+format+"\n", a...)
		return 1
	}
	step, err := readSlurmStep(os.Getenv)
	if err != nil {
		return failf("%v", err)
	}
	sock := envOr("CRUZ_SOCKET", api.DefaultSocket)
	c := api.NewClient(sock)
	if step.procID != 0 {
		return waitForStep(ctx, c, step, stderr)
	}
	dir, err := os.Getwd()
	if err != nil {
		return failf("find the working directory: %v", err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, TaskArgv0Env+"=") {
			env = append(env, kv)
		}
	}
	kind, err := slurmMPI(os.Getenv("CRUZ_MPI"), argv[0], env, dir)
	if err != nil {
		code := failf("Slurm step %s: %v", step.name(), err)
		endStep(ctx, step, stderr)
		return code
	}
	name := filepath.Base(argv[0])
	req := api.RunRequest{Name: name, NP: step.ntasks, Argv: argv, Env: env, Dir: dir, MPI: kind,
		Interval: step.interval, Restart: step.restart, Store: step.store, RanksPerPod: step.ranksPerPod,
		Slurm: &api.SlurmStep{JobID: step.jobID, StepID: step.stepID, Restarts: step.restarts, RankNodes: step.rankNodes}}
	if step.restarts > 0 {
		req.Slurm.OutputFileBytes = stdoutFileBytes(ctx, step.jobID)
	}
	// Signals are caught from now on: scancel or the time-limit warning may
	// come while the job starts or resumes (a large restore takes a while),
	// and are acted on once it runs, rather than kill this task (their
	// default action) and leave the job to the epilog.
	sigs := notifyForwarded()
	s, err := c.RunSlurm(ctx, req)
	if err != nil {
		signal.Stop(sigs)
		code := failf("Slurm step %s: %v", step.name(), err)
		endStep(ctx, step, stderr)
		return code
	}
	h := &stepSignals{c: c, step: step, stderr: stderr}
	code := followSignals(ctx, s, stdout, stderr, sigs, h.handle)
	return h.exitCode(ctx, code)
}

// stepSignals handles the signals the first task of a step gets.
type stepSignals struct {
	c      *api.Client
	step   slurmStep
	stderr io.Writer

	mu        sync.Mutex
	cancelled bool
	requeue   bool
	// stopping is closed once a stop at the time-limit warning has been
	// asked for and answered (nil: none asked).
	stopping chan struct{}
}

func (h *stepSignals) handle(id string, sig os.Signal) {
	ctx := context.Background()
	switch sig {
	case syscall.SIGUSR1, syscall.SIGUSR2:
		h.timeLimit(ctx, id, sig)
	default:
		// scancel, a requeue, the time limit itself, or srun's ^C: the
		// job's pods go on every node; its checkpoints stay.
		h.mu.Lock()
		h.cancelled = true
		h.mu.Unlock()
		stepID := h.step.stepID
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := h.c.SlurmEnd(cctx, api.SlurmEndRequest{JobID: h.step.jobID, StepID: &stepID,
			Reason: fmt.Sprintf("the Slurm step %s got %v (scancel, requeue or its time limit)", h.step.name(), sig)}); err != nil {
			fmt.Fprintf(h.stderr, "cruz: ending job %s: %v\n", id, err)
		}
	}
}

// timeLimitWait is how long the time-limit warning's checkpoint waits for
// one under way (periodic checkpoints take seconds; the warning comes at
// least that long before the limit, or nothing could be saved anyway).
const timeLimitWait = 120

// timeLimit checkpoints the job when Slurm warns of the time limit: with
// --cruz-restart=auto it stops the job at that checkpoint and requeues the
// Slurm job (once the stream ends: exitCode), else the job runs on.
func (h *stepSignals) timeLimit(ctx context.Context, id string, sig os.Signal) {
	// --cruz-restart, else the job's policy (the cluster's default).
	stop := h.step.restart == "auto"
	if h.step.restart == "" {
		if j, err := h.c.Job(ctx, id); err == nil {
			stop = j.RestartPolicy == "auto"
		}
	}
	fmt.Fprintf(h.stderr, "cruz: Slurm step %s got %v (time limit near): checkpointing job %s\n", h.step.name(), sig, id)
	if stop {
		// The job's stream may end (stopped) before the answer comes:
		// exitCode waits for it.
		done := make(chan struct{})
		h.mu.Lock()
		h.stopping = done
		h.mu.Unlock()
		defer close(done)
	}
	// A periodic checkpoint may be under way: wait for it rather than
	// lose the last chance to checkpoint before the limit.
	ck, err := h.c.Checkpoint(ctx, id, api.CheckpointRequest{Stop: stop, WaitSeconds: timeLimitWait})
	if err != nil {
		fmt.Fprintf(h.stderr, "cruz: checkpoint of job %s at the time-limit warning failed: %v\n", id, err)
		return
	}
	if !stop {
		fmt.Fprintf(h.stderr, "cruz: job %s checkpointed as %s; it runs on until the time limit (--cruz-restart=auto would requeue it)\n", id, ck.ID)
		return
	}
	h.mu.Lock()
	h.requeue = true
	h.mu.Unlock()
}

// exitCode is the first task's exit status once the job's stream ended:
// after a stop at the time-limit warning it requeues the Slurm job.
func (h *stepSignals) exitCode(ctx context.Context, code int) int {
	h.mu.Lock()
	stopping := h.stopping
	h.mu.Unlock()
	if stopping != nil && code == ExitStopped {
		<-stopping
	}
	h.mu.Lock()
	requeue, cancelled := h.requeue, h.cancelled
	h.mu.Unlock()
	if cancelled {
		return 128 + int(syscall.SIGTERM)
	}
	if !requeue || code != ExitStopped {
		return code
	}
	jobID := strconv.FormatUint(uint64(h.step.jobID), 10)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "scontrol", "requeue", jobID).CombinedOutput()
	if err != nil {
		fmt.Fprintf(h.stderr, "cruz: scontrol requeue %s failed: %v: %s; resume by hand with: cruz restart %s\n",
			jobID, err, strings.TrimSpace(string(out)), h.step.jobRef())
		return code
	}
	fmt.Fprintf(h.stderr, "cruz: Slurm job %s requeued: it resumes from its checkpoint when it starts again\n", jobID)
	// Slurm now ends the step (SIGTERM): wait for it rather than exit
	// with a status the requeue makes meaningless.
	time.Sleep(30 * time.Second)
	return code
}

// endStep cancels the step when its job could not start: its other tasks
// wait for a job that will never come.
func endStep(ctx context.Context, step slurmStep, stderr io.Writer) {
	if step.ntasks < 2 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, "scancel", "--quiet", step.name()).CombinedOutput(); err != nil {
		fmt.Fprintf(stderr, "cruz: scancel %s (to end the step's other tasks): %v: %s\n", step.name(), err, strings.TrimSpace(string(out)))
	}
}

// waitForStep is a task other than the first: it waits, asking the step's
// coordinator (the agent of the step's first node, through this node's
// agent), until the job of this run of the step has ended, and exits with
// its status. SIGTERM (scancel) ends it at once: the first task ends the job.
func waitForStep(ctx context.Context, c *api.Client, step slurmStep, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	// The time-limit warning is the first task's to act on.
	signal.Ignore(syscall.SIGUSR1, syscall.SIGUSR2)
	coordinator := step.rankNodes[0]
	const appearWithin = 5 * time.Minute
	// An agent that does not answer at all (not even "no such job"): the
	// step's first task could not have started the job either.
	const unreachableFor = 15 * time.Second
	started := time.Now()
	var failingSince time.Time
	seen := false
	for {
		j, err := c.JobAt(ctx, step.jobRef(), coordinator)
		var ae *api.Error
		if err != nil && !errors.As(err, &ae) || err != nil && ae.Status >= 500 {
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) > unreachableFor {
				fmt.Fprintf(stderr, "cruz: srun --cruz: task %d: no answer about job %s from %s's agent for %s: %v\n", step.procID, step.jobRef(), coordinator, unreachableFor, err)
				return 1
			}
		} else {
			failingSince = time.Time{}
		}
		// This run of the step: Slurm's restart count tells requeued runs
		// apart; a job of an earlier Slurm job with the same id (Slurm's
		// ids start over when its state is reset) is older than the step.
		current := err == nil && j.Slurm != nil && j.Slurm.Restarts == step.restarts &&
			(step.restarts > 0 || j.Created.After(started.Add(-time.Minute)))
		if ctx.Err() != nil {
			return 128 + int(syscall.SIGTERM)
		}
		if current {
			switch j.State {
			case api.StateStarting, api.StateRunning, api.StateRestoring:
				seen = true
			case api.StateExited:
				if j.ExitCode != nil {
					return *j.ExitCode
				}
				return 1
			case api.StateStopped:
				return ExitStopped
			case api.StateFailed:
				if j.ExitCode != nil {
					return *j.ExitCode
				}
				return 1
			default:
				// Cancelled or lost: before this run started, the
				// record of the one before it; after, the end.
				if seen {
					return 128 + int(syscall.SIGTERM)
				}
			}
		}
		if !seen && time.Since(started) > appearWithin {
			msg := "it did not start"
			if err != nil {
				msg = err.Error()
			}
			fmt.Fprintf(stderr, "cruz: srun --cruz: task %d gave up waiting for job %s on %s after %s: %s\n", step.procID, step.jobRef(), coordinator, appearWithin, msg)
			return 1
		}
		// Every task of a large step asks: once the job runs, less often.
		poll := time.Second
		if seen && time.Since(started) > 30*time.Second {
			poll = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return 128 + int(syscall.SIGTERM)
		case <-time.After(poll):
		}
	}
}

// ExpandHostlist expands a Slurm hostlist such as "node[1-3,5],login1" or
// "rack[1-2]-n[01-02]" into host names, in order (see slurm.ExpandHostlist).
func ExpandHostlist(list string) ([]string, error) { return slurm.ExpandHostlist(list) }

// ParseTasksPerNode expands SLURM_TASKS_PER_NODE's form, e.g. "2(x3),1",
// into one count per node: [2 2 2 1].
func ParseTasksPerNode(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty")
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		count, times := part, "1"
		if i := strings.Index(part, "(x"); i >= 0 && strings.HasSuffix(part, ")") {
			count, times = part[:i], part[i+2:len(part)-1]
		}
		n, err1 := strconv.Atoi(count)
		k, err2 := strconv.Atoi(times)
		if err1 != nil || err2 != nil || n < 0 || k < 1 || k > 65536 {
			return nil, fmt.Errorf("%q: bad entry %q", s, part)
		}
		for i := 0; i < k; i++ {
			out = append(out, n)
		}
	}
	return out, nil
}

// slurmMPI settles a step's MPI from CRUZ_MPI (auto, mpich or openmpi) and
// the program. Unlike cruz run, a program that links no MPI is no mistake
// here: srun runs one copy per task, and so does MPICH's hydra.
func slurmMPI(asked, argv0 string, env []string, dir string) (string, error) {
	k, err := mpi.ParseKind(asked)
	if err != nil {
		return "", fmt.Errorf("CRUZ_MPI: %w", err)
	}
	found, err := mpi.Choose(k, argv0, env, dir)
	if errors.Is(err, mpi.ErrNoMPI) {
		return string(mpi.MPICH), nil
	}
	if err != nil {
		return "", err
	}
	return string(found), nil
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// slurmEnv is a Slurm cluster over a virtual Cruz cluster, with the test
// user who submits jobs and a directory of theirs.
type slurmEnv struct {
	c    *vcluster
	st   cluster.State
	conf string
	n1   *agent
	u    testenv.User
	dir  string
}

// slurmSetup brings up a virtual cluster of n nodes with Slurm and the Cruz
// SPANK plugin (skipping loudly if the plugin could not be built here).
func slurmSetup(t *testing.T, n int) *slurmEnv {
	t.Helper()
	c, upOut := upSlurmCluster(t, n)
	st := c.status()
	require.NotNil(t, st.Slurm, "no Slurm in cruz cluster status; up printed:\n%s", upOut)
	if st.Slurm.Plugin == "" {
		_, err := os.Stat("/usr/include/slurm/spank.h")
		require.Error(t, err, "Slurm runs without the SPANK plugin although make build could build it: run make build")
		t.Skip("SKIP: no Cruz SPANK plugin (libslurm-dev is not installed to build it)")
	}
	u := testenv.LookupUser(t, "cruzt1")
	return &slurmEnv{c: c, st: st, conf: st.Slurm.Conf, n1: c.node(t, st, "node1"), u: u, dir: testenv.TempDirFor(t, u)}
}

// as runs a Slurm client as the test user, in their directory.
func (e *slurmEnv) as(t *testing.T, name string, args ...string) result {
	t.Helper()
	cmd := testenv.RunAs(e.u, name, args...)
	cmd.Env = append(cmd.Env, "SLURM_CONF="+e.conf)
	cmd.Dir = e.dir
	return runCommand(t, cmd, 2*time.Minute)
}

// script writes a batch script into the user's directory.
func (e *slurmEnv) script(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(e.dir, name)
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
	require.NoError(t, os.Chown(p, int(e.u.UID), int(e.u.GID)))
	return p
}

// sbatch submits a job as the test user and returns its id; its stdout and
// stderr go to DIR/out-ID and DIR/err-ID.
func (e *slurmEnv) sbatch(t *testing.T, args ...string) string {
	t.Helper()
	args = append([]string{"--parsable", "-o", filepath.Join(e.dir, "out-%j"), "-e", filepath.Join(e.dir, "err-%j")}, args...)
	r := e.as(t, "sbatch", args...)
	require.Equal(t, 0, r.Code, "sbatch %v: %s", args, r.Stderr)
	id := strings.TrimSpace(r.Stdout)
	require.Regexp(t, `^[0-9]+$`, id)
	return id
}

func (e *slurmEnv) out(t *testing.T, id string) string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "out-"+id))
	return string(b)
}

func (e *slurmEnv) errOut(t *testing.T, id string) string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "err-"+id))
	return string(b)
}

// slurmJob is what scontrol tells of a job.
type slurmJob struct {
	State    string
	Restarts int
	Exit     string
}

func (e *slurmEnv) job(t *testing.T, id string) slurmJob {
	t.Helper()
	r := slurmCmd(t, e.conf, "scontrol", "show", "job", "-o", id)
	require.Equal(t, 0, r.Code, "scontrol show job %s: %s", id, r.Stderr)
	field := func(k string) string {
		m := regexp.MustCompile(`(?:^| )` + k + `=(\S*)`).FindStringSubmatch(r.Stdout)
		if m == nil {
			return ""
		}
		return m[1]
	}
	n, _ := strconv.Atoi(field("Restarts"))
	return slurmJob{State: field("JobState"), Restarts: n, Exit: field("ExitCode")}
}

// waitJob waits until Slurm says the job has ended for good (a requeued
// job is pending again, not ended) and returns it.
func (e *slurmEnv) waitJob(t *testing.T, id string, timeout time.Duration) slurmJob {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := e.job(t, id)
		switch j.State {
		case "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE":
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("Slurm job %s still %s after %s; stdout:\n%s\nstderr:\n%s", id, j.State, timeout, e.out(t, id), e.errOut(t, id))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitOutput waits until the job's output file has s.
func (e *slurmEnv) waitOutput(t *testing.T, id, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(e.out(t, id), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in Slurm job %s's output within %s; stdout:\n%s\nstderr:\n%s", s, id, timeout, e.out(t, id), e.errOut(t, id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cruzJSON runs cruz as the user against node's agent and decodes its
// --json output.
func (e *slurmEnv) cruzJSON(t *testing.T, node *agent, v any, args ...string) {
	t.Helper()
	r := node.cruz(e.u, e.dir, args...)
	require.Equal(t, 0, r.Code, "cruz %v: %s", args, r.Stderr)
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), v), "cruz %v printed %s", args, r.Stdout)
}

// waitIdle waits until every Slurm node is idle (an ended job's nodes are
// busy until its epilog is done).
func (e *slurmEnv) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := slurmCmd(t, e.conf, "sinfo", "-h", "-o", "%T")
		if strings.TrimSpace(r.Stdout) == "idle" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Slurm's nodes are not idle after 30 s: %s", r.Stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// requireSlurmClean checks that nothing of the jobs is left: Cruz's own
// leftovers (requireClean), no packet filter table in any node's netns, no
// process of the given Slurm jobs, every Slurm node idle and no job queued.
func (e *slurmEnv) requireSlurmClean(t *testing.T, ids ...string) {
	t.Helper()
	// The epilog runs as the job completes: give it a moment.
	e.waitIdle(t)
	r := slurmCmd(t, e.conf, "squeue", "-h")
	assert.Empty(t, strings.TrimSpace(r.Stdout), "jobs left in Slurm's queue")
	st := e.c.status() // a node's agent may have been restarted
	e.c.requireClean(t, st)
	for _, n := range st.Nodes {
		out := inNodeNetns(t, n, "nft", "list", "tables")
		assert.NotContains(t, out, "cruz_block", "a packet filter table left in %s's netns", n.Name)
	}
	for _, id := range ids {
		assert.Empty(t, processesWithEnv("SLURM_JOB_ID="+id), "processes of Slurm job %s left", id)
	}
}

// processesWithEnv lists the processes whose environment holds kv.
func processesWithEnv(kv string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		for _, v := range strings.Split(string(env), "\x00") {
			if v == kv {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				out = append(out, fmt.Sprintf("%d %s", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	return out
}

// allreduceScript is a batch script whose step runs mpi_allreduce (MPICH)
// under srun with the given srun options.
func (e *slurmEnv) allreduceScript(t *testing.T, name, srunOpts string, iters, sleepMS int) string {
	t.Helper()
	return e.appScript(t, name, srunOpts, testenv.Bin(t, "mpi_allreduce"), iters, sleepMS)
}

// appScript is allreduceScript with another build of mpi_allreduce.
func (e *slurmEnv) appScript(t *testing.T, name, srunOpts, app string, iters, sleepMS int) string {
	t.Helper()
	return e.script(t, name, fmt.Sprintf(`echo "batch: restarts=${SLURM_RESTART_COUNT:-0}" >&2
srun %s %s %d %d
echo "batch: srun exited $?" >&2
`, srunOpts, app, iters, sleepMS))
}

// waitCheckpoint waits until the step of Slurm job id has a checkpoint.
func (e *slurmEnv) waitCheckpoint(t *testing.T, id string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var list api.CheckpointList
		e.cruzJSON(t, e.n1, &list, "checkpoints", "--json", id)
		if len(list.Checkpoints) > 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "no checkpoint of Slurm job %s within %s", id, timeout)
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSlurmCruzJob: an sbatch job whose step is `srun --cruz-interval=2s
// mpi_allreduce` on 2 nodes, 4 tasks: each task's rank runs in its own pod
// where Slurm put the task, the policy engine checkpoints it every 2 s, the
// output file is exactly one uninterrupted run's, and Slurm sees the step
// end with the program's status. cruz status/checkpoints/checkpoint take the
// Slurm job id, also from another node's agent. Nothing is left after.
func TestSlurmCruzJob(t *testing.T) {
	e := slurmSetup(t, 3)
	const np, iters = 4, 60
	id := e.sbatch(t, "-N2", "-n4", e.allreduceScript(t, "job.sh", "--cruz-interval=2s", iters, 150))
	e.waitOutput(t, id, "iter 10 ", 90*time.Second)

	var j api.Job
	e.cruzJSON(t, e.n1, &j, "status", "--json", id)
	assert.Equal(t, "slurm-"+id+"-0", j.ID, "the Slurm step's cruz job")
	require.NotNil(t, j.Slurm)
	assert.Equal(t, api.SlurmInfo{JobID: j.Slurm.JobID, StepID: 0, Restarts: 0}, *j.Slurm)
	assert.Equal(t, api.StateRunning, j.State)
	ranks, main := podsByNode(j)
	assert.Equal(t, map[string]int{"node1": 2, "node2": 2}, ranks, "ranks where Slurm put the tasks (block: 2 per node)")
	assert.Equal(t, "node1", main, "mpiexec on the step's first node")
	assert.Contains(t, j.Policy, "checkpoint every 2s")

	// node3 holds none of it: its agent finds the job on node1's.
	n3 := e.c.node(t, e.st, "node3")
	var ck api.Checkpoint
	e.cruzJSON(t, n3, &ck, "checkpoint", "--json", id)
	assert.Equal(t, "slurm-"+id+"-0", ck.Job)
	assert.Len(t, ck.Pods, np+1)
	var list api.CheckpointList
	e.cruzJSON(t, n3, &list, "checkpoints", "--json", id+".0")
	assert.NotEmpty(t, list.Checkpoints)

	sj := e.waitJob(t, id, 3*time.Minute)
	assert.Equal(t, "COMPLETED", sj.State)
	assert.Equal(t, "0:0", sj.Exit)
	assert.Equal(t, check.AllreduceOutput(np, iters), check.Lines(e.out(t, id)), "the job's output file, line by line")
	assert.Contains(t, e.errOut(t, id), "batch: srun exited 0")

	e.cruzJSON(t, e.n1, &j, "status", "--json", id)
	assert.Equal(t, api.StateExited, j.State)
	evs := e.n1.events(e.u, j.ID)
	assert.GreaterOrEqual(t, countKind(evs, "checkpoint"), 2, "periodic checkpoints: %v", kinds(evs))
	// Nothing will resume a step that ended by itself: its checkpoints go.
	assert.NoDirExists(t, filepath.Join(e.c.store, j.ID), "the ended step's checkpoints")

	// A program that fails: srun exits with its status, as without Cruz
	// (there is no checkpoint to roll back to).
	r := e.as(t, "srun", "--cruz", "-N2", "-n2", "sh", "-c", "echo failing; exit 3")
	assert.Equal(t, 3, r.Code, "srun's status; stderr:\n%s", r.Stderr)
	assert.Equal(t, "failing\nfailing\n", withoutQueueNotes(r.Stdout))
	assert.Contains(t, r.Stderr, "ended with status 3")
	e.requireSlurmClean(t, id)
}

// withoutQueueNotes drops srun's notes about waiting for resources.
func withoutQueueNotes(s string) string {
	var out []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(l, "srun: job ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestSlurmScancel: scancel of a running srun --cruz job ends it at once:
// every pod on every node goes, with its processes and packet filter, the
// cruz job is cancelled (its checkpoints stay) and Slurm's nodes are idle.
// Then the same with the step's first task killed first (it cannot end the
// job itself): the epilog removes the pods on every node.
func TestSlurmScancel(t *testing.T) {
	e := slurmSetup(t, 3)
	script := e.allreduceScript(t, "job.sh", "--cruz-interval=2s", 1000, 100)

	id := e.sbatch(t, "-N2", "-n4", script)
	e.waitOutput(t, id, "iter 5 ", 90*time.Second)
	r := e.as(t, "scancel", id)
	require.Equal(t, 0, r.Code, "scancel: %s", r.Stderr)
	sj := e.waitJob(t, id, time.Minute)
	assert.Equal(t, "CANCELLED", sj.State)
	var j api.Job
	e.cruzJSON(t, e.n1, &j, "status", "--json", id)
	assert.Equal(t, api.StateCancelled, j.State)
	assert.Contains(t, j.Message, "scancel")
	e.requireSlurmClean(t, id)

	// The first task dies before scancel: the epilog ends the job.
	id = e.sbatch(t, "-N2", "-n4", script)
	e.waitOutput(t, id, "iter 5 ", 90*time.Second)
	leader := 0
	for _, p := range processesWithEnv("SLURM_JOB_ID=" + id) {
		pid, _ := strconv.Atoi(strings.Fields(p)[0])
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if strings.HasSuffix(p, " cruz") && strings.Contains(string(env), "\x00SLURM_PROCID=0\x00") {
			leader = pid
		}
	}
	require.NotZero(t, leader, "the step's first task (cruz) among %v", processesWithEnv("SLURM_JOB_ID="+id))
	require.NoError(t, unix.Kill(leader, unix.SIGKILL))
	time.Sleep(time.Second)
	e.cruzJSON(t, e.n1, &j, "status", "--json", id)
	require.Equal(t, api.StateRunning, j.State, "the job runs on without its first task")
	r = e.as(t, "scancel", id)
	require.Equal(t, 0, r.Code, "scancel: %s", r.Stderr)
	e.waitJob(t, id, time.Minute)
	e.requireSlurmClean(t, id)
	e.cruzJSON(t, e.n1, &j, "status", "--json", id)
	assert.Equal(t, api.StateCancelled, j.State)
	assert.Contains(t, j.Message, "epilog")
}

// TestSlurmRequeue: `scontrol requeue` of a running srun --cruz job: Slurm
// starts the job again (SLURM_RESTART_COUNT=1) and its step resumes from
// its last checkpoint instead of starting over, and the output file is
// exactly one uninterrupted run's both ways Slurm treats it at a requeue
// (one cluster for both jobs, one after the other): truncated (Slurm's
// default: the step's earlier output is replayed into it; a 4-rank MPI job)
// and appended to (--open-mode=append, as with JobFileAppend=1: the file
// holds that output already, which is not replayed; a plain program).
func TestSlurmRequeue(t *testing.T) {
	e := slurmSetup(t, 3)
	t.Run("truncate", e.requeueTruncated)
	t.Run("append", e.requeueAppended)
	t.Run("append MPI", e.requeueAppendedMPI)
}

// requeueAppendedMPI: the 4-rank MPI job on 2 nodes, submitted with
// --open-mode=append and requeued after a checkpoint: the file, which Slurm
// kept, reads as one uninterrupted run's.
func (e *slurmEnv) requeueAppendedMPI(t *testing.T) {
	const np, iters = 4, 60
	id := e.sbatch(t, "-N2", "-n4", "--open-mode=append", e.allreduceScript(t, "job-append.sh", "--cruz-interval=1s", iters, 150))
	job := "slurm-" + id + "-0"
	e.waitOutput(t, id, "iter 15 ", 90*time.Second)
	e.waitCheckpoint(t, id, 30*time.Second)
	before := len(check.Lines(e.out(t, id)))
	r := e.as(t, "scontrol", "requeue", id)
	require.Equal(t, 0, r.Code, "scontrol requeue: %s", r.Stderr)
	sj := e.waitJob(t, id, 3*time.Minute)
	assert.Equal(t, "COMPLETED", sj.State)
	assert.Equal(t, 1, sj.Restarts, "Slurm requeued it once")
	errOut := e.errOut(t, id)
	assert.Contains(t, errOut, "batch: restarts=0\n", "Slurm appended to the files: the first run's lines are there")
	assert.Contains(t, errOut, "batch: restarts=1\n")
	assert.Equal(t, check.AllreduceOutput(np, iters), check.Lines(e.out(t, id)), "the output file (appended to), line by line; stderr:\n%s", errOut)
	agentLog, _ := os.ReadFile(e.st.Nodes[0].Log)
	assert.Contains(t, string(agentLog), `msg="Slurm kept the requeued job's output file: the step's earlier output is not replayed" job=`+job,
		"the agent saw that Slurm kept the file")
	t.Logf("the file had %d lines at the requeue", before)
	e.requireSlurmClean(t, id)
}

// requeueTruncated: the restored run's own output (in the coordinator's
// log) begins with an iteration past the first, the job's event log has
// one start and one restart from that checkpoint, and the output file,
// which Slurm truncated at the requeue, is exactly one uninterrupted run's.
func (e *slurmEnv) requeueTruncated(t *testing.T) {
	const np, iters = 4, 80
	id := e.sbatch(t, "-N2", "-n4", e.allreduceScript(t, "job.sh", "--cruz-interval=1s", iters, 150))
	e.waitOutput(t, id, "iter 25 ", 90*time.Second)
	job := "slurm-" + id + "-0"
	var list api.CheckpointList
	e.cruzJSON(t, e.n1, &list, "checkpoints", "--json", id)
	require.NotEmpty(t, list.Checkpoints, "a checkpoint before the requeue")
	r := e.as(t, "scontrol", "requeue", id)
	require.Equal(t, 0, r.Code, "scontrol requeue: %s", r.Stderr)

	logAfter := e.waitLogAfterRestart(t, job)
	// What the agent made of the output file (replayed into it or not).
	agentLog, _ := os.ReadFile(e.st.Nodes[0].Log)
	kept := strings.Contains(string(agentLog), `msg="Slurm kept the requeued job's output file: the step's earlier output is not replayed" job=`+job)
	assert.False(t, kept, "the agent replays the earlier output into a truncated file")
	sj := e.waitJob(t, id, 3*time.Minute)
	assert.Equal(t, "COMPLETED", sj.State)
	assert.Equal(t, 1, sj.Restarts, "Slurm requeued it once")
	assert.Contains(t, e.errOut(t, id), "batch: restarts=1")
	assert.Equal(t, check.AllreduceOutput(np, iters), check.Lines(e.out(t, id)), "the output file, line by line")

	evs := e.n1.events(e.u, job)
	assert.Equal(t, 1, countKind(evs, "started"), "started once: %v", kinds(evs))
	assert.Equal(t, 1, countKind(evs, "cancelled"), "cancelled by the requeue: %v", kinds(evs))
	require.Equal(t, 1, countKind(evs, "restarted"), "restarted once: %v", kinds(evs))
	var from string
	for _, ev := range evs {
		if ev.Kind == "restarted" {
			from = ev.Checkpoint
		}
	}
	assert.NotEmpty(t, from)

	// The restored run's own output, after the frame that ended the
	// cancelled run, starts past the first iteration and prints no start.
	log := logAfter
	var after []string
	cancelled := false
	for _, line := range strings.Split(string(log), "\n") {
		var f api.Frame
		if json.Unmarshal([]byte(line), &f) != nil {
			continue
		}
		if f.Error != "" {
			cancelled = true
			continue
		}
		if cancelled && f.Stream == "stdout" {
			after = append(after, check.Lines(string(f.Data))...)
		}
	}
	require.True(t, cancelled, "the log has the cancelled run's end")
	require.NotEmpty(t, after, "the restored run printed")
	m := regexp.MustCompile(`^iter ([0-9]+) `).FindStringSubmatch(after[0])
	require.NotNil(t, m, "the restored run's first line %q is an iteration", after[0])
	first, _ := strconv.Atoi(m[1])
	assert.Greater(t, first, 1, "the restored run went on from %s: it did not start over", from)
	for _, l := range after {
		assert.NotContains(t, l, "start ranks", "the restored run did not start over")
	}
	e.requireSlurmClean(t, id)
}

// requeueAppended: a job submitted with --open-mode=append, whose step
// prints a line every 300 ms, is requeued after a checkpoint: Slurm keeps
// its output file, the agent sees that the file holds the step's earlier
// output and does not replay it, the restored run's repetition of what the
// cancelled run printed after the checkpoint is filtered, and the file
// reads as one run's: every line once, in order.
func (e *slurmEnv) requeueAppended(t *testing.T) {
	const lines = 60
	id := e.sbatch(t, "-N1", "-n1", "--open-mode=append", e.script(t, "count.sh", fmt.Sprintf(`echo "batch: restarts=${SLURM_RESTART_COUNT:-0}" >&2
srun --cruz-interval=2s %s %d 300
`, testenv.Bin(t, "counter"), lines)))
	job := "slurm-" + id + "-0"
	e.waitOutput(t, id, "line 10\n", 90*time.Second)
	e.waitCheckpoint(t, id, 30*time.Second)
	before := len(check.Lines(e.out(t, id)))
	r := e.as(t, "scontrol", "requeue", id)
	require.Equal(t, 0, r.Code, "scontrol requeue: %s", r.Stderr)

	sj := e.waitJob(t, id, 2*time.Minute)
	assert.Equal(t, "COMPLETED", sj.State)
	assert.Equal(t, 1, sj.Restarts, "Slurm requeued it once")
	errOut := e.errOut(t, id)
	assert.Contains(t, errOut, "batch: restarts=0\n", "Slurm appended to the files: the first run's lines are there")
	assert.Contains(t, errOut, "batch: restarts=1\n")
	assert.Equal(t, check.CounterLines(1, lines), check.Lines(e.out(t, id)), "the output file (appended to), line by line")
	agentLog, _ := os.ReadFile(e.st.Nodes[0].Log)
	assert.Contains(t, string(agentLog), `msg="Slurm kept the requeued job's output file: the step's earlier output is not replayed" job=`+job,
		"the agent saw that Slurm kept the file")
	evs := e.n1.events(e.u, job)
	assert.Equal(t, 1, countKind(evs, "started"), "started once: %v", kinds(evs))
	assert.Equal(t, 1, countKind(evs, "restarted"), "restarted once: %v", kinds(evs))
	t.Logf("the file had %d lines at the requeue; %d after", before, lines)
	e.requireSlurmClean(t, id)
}

// waitLogAfterRestart waits until a requeued step's job has restarted and
// printed, and returns its output log, read from the step's directory of
// the store (where it is until the step ends).
func (e *slurmEnv) waitLogAfterRestart(t *testing.T, job string) []byte {
	t.Helper()
	path := filepath.Join(e.c.store, job, "output.log")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if i := strings.LastIndex(string(b), `"error":`); i >= 0 && strings.Contains(string(b[i:]), `"stream":"stdout"`) {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no output of the restarted run in %s within 2m (read: %v)", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSlurmRequeueElsewhere: a requeued job that Slurm starts again on
// other nodes (here node1 is excluded while it waits, as after a node
// failure): the step's new first node, node2, has never run it; its agent
// takes the job from the shared store (its signed record and its output
// log) and resumes it there from the last checkpoint, and the output file
// is still one uninterrupted run's.
func TestSlurmRequeueElsewhere(t *testing.T) {
	e := slurmSetup(t, 3)
	const np, iters = 4, 80
	id := e.sbatch(t, "-N2", "-n4", "-w", "node1,node2", e.allreduceScript(t, "job.sh", "--cruz-interval=1s", iters, 150))
	e.waitOutput(t, id, "iter 25 ", 90*time.Second)
	job := "slurm-" + id + "-0"
	var list api.CheckpointList
	e.cruzJSON(t, e.n1, &list, "checkpoints", "--json", id)
	require.NotEmpty(t, list.Checkpoints, "a checkpoint before the requeue")
	for _, args := range [][]string{
		{"requeuehold", id},
		{"update", "JobId=" + id, "ReqNodeList=node2,node3"},
		{"release", id},
	} {
		r := slurmCmd(t, e.conf, "scontrol", args...)
		require.Equal(t, 0, r.Code, "scontrol %v: %s", args, r.Stderr)
	}
	sj := e.waitJob(t, id, 3*time.Minute)
	assert.Equal(t, "COMPLETED", sj.State)
	assert.Equal(t, 1, sj.Restarts)
	assert.Equal(t, check.AllreduceOutput(np, iters), check.Lines(e.out(t, id)), "the output file, line by line")

	n2 := e.c.node(t, e.st, "node2")
	evs := n2.events(e.u, job)
	require.Equal(t, 1, countKind(evs, "restarted"), "node2's agent restarted it: %v", kinds(evs))
	assert.Zero(t, countKind(evs, "started"), "node2 did not start it afresh: %v", kinds(evs))
	var j api.Job
	e.cruzJSON(t, n2, &j, "status", "--json", job)
	ranks, main := podsByNode(j)
	assert.Equal(t, map[string]int{"node2": 2, "node3": 2}, ranks, "the ranks where the new tasks are")
	assert.Equal(t, "node2", main)
	evs = e.n1.events(e.u, job)
	assert.Equal(t, 1, countKind(evs, "started"), "node1 started it: %v", kinds(evs))
	assert.Equal(t, 1, countKind(evs, "cancelled"), "node1's run was cancelled by the requeue: %v", kinds(evs))
	assert.Zero(t, countKind(evs, "restarted"), "node1 did not restart it: %v", kinds(evs))
	e.requireSlurmClean(t, id)
}

// TestSlurmTimeLimit: a job with a 1-minute limit and a warning signal 50 s
// before it (`sbatch --time=1 --signal=USR1@50 --cruz-restart=auto`) and a
// step that needs more than a minute: at each warning the step is
// checkpointed and stopped there, and the job requeues itself; each run
// resumes from the last one's checkpoint, and the job finishes with the
// right output although no run of it had the time to.
func TestSlurmTimeLimit(t *testing.T) {
	e := slurmSetup(t, 3)
	const np, iters = 4, 70
	// 70 iterations of 1 s: more than any run gets before its warning.
	script := e.allreduceScript(t, "job.sh", "", iters, 1000)
	id := e.sbatch(t, "-N2", "-n4", "--time=1", "--signal=USR1@50", "--cruz-restart=auto", "--cruz-interval=30s", script)
	sj := e.waitJob(t, id, 6*time.Minute)
	assert.Equal(t, "COMPLETED", sj.State, "stderr:\n%s", e.errOut(t, id))
	assert.GreaterOrEqual(t, sj.Restarts, 1, "requeued at least once")
	assert.Equal(t, check.AllreduceOutput(np, iters), check.Lines(e.out(t, id)), "the output file, line by line")
	// Slurm truncates the files at each requeue: the last run's is left.
	assert.Contains(t, e.errOut(t, id), fmt.Sprintf("batch: restarts=%d", sj.Restarts))
	evs := e.n1.events(e.u, "slurm-"+id+"-0")
	assert.Equal(t, sj.Restarts, countKind(evs, "stopped"), "one stop per requeue: %v", kinds(evs))
	assert.Equal(t, sj.Restarts, countKind(evs, "restarted"), "one restart per requeue: %v", kinds(evs))
	e.requireSlurmClean(t, id)
}

// TestSlurmBadInput: wrong option values and a store that does not exist
// are refused by srun and sbatch before any job exists, naming the plugin
// and the fix; a store other than the cluster's, and a node without an
// agent, make the step fail fast with the reason. Slurm stays clean: no job
// queued or running, every node idle, nothing of Cruz left.
func TestSlurmBadInput(t *testing.T) {
	e := slurmSetup(t, 3)
	prog := testenv.Bin(t, "mpi_allreduce")
	for _, tc := range []struct {
		name string
		cmd  []string
		want string
	}{
		{"srun restart value", []string{"srun", "--cruz-restart=sometimes", "-n2", prog, "3", "10"}, "cruz: --cruz-restart=sometimes is neither auto nor never"},
		{"srun interval value", []string{"srun", "--cruz-interval=fast", "-n2", prog, "3", "10"}, "cruz: --cruz-interval=fast is not a duration"},
		{"srun interval too short", []string{"srun", "--cruz-interval=10ms", "-n2", prog, "3", "10"}, "is shorter than 1s"},
		{"sbatch restart value", []string{"sbatch", "--cruz-restart=yes", "--wrap", "true"}, "cruz: --cruz-restart=yes is neither auto nor never"},
		{"srun store missing", []string{"srun", "--cruz-store=/nonexistent/cruz", "-n2", prog, "3", "10"}, "cruz: --cruz-store=/nonexistent/cruz: No such file or directory"},
		{"sbatch store relative", []string{"sbatch", "--cruz-store=ckpts", "--wrap", "true"}, "cruz: --cruz-store=ckpts is not an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Now()
			r := e.as(t, tc.cmd[0], tc.cmd[1:]...)
			assert.NotEqual(t, 0, r.Code, "%v must fail", tc.cmd)
			assert.Contains(t, r.Stderr, tc.want)
			assert.Less(t, time.Since(t0), 10*time.Second, "fails fast")
			q := slurmCmd(t, e.conf, "squeue", "-h")
			assert.Empty(t, strings.TrimSpace(q.Stdout), "no job queued")
		})
	}

	t.Run("store other than the cluster's", func(t *testing.T) {
		t0 := time.Now()
		r := e.as(t, "srun", "--cruz-store="+e.dir, "-N2", "-n2", prog, "3", "10")
		assert.NotEqual(t, 0, r.Code)
		assert.Contains(t, r.Stderr, "cruz: srun --cruz:")
		assert.Contains(t, r.Stderr, "keep checkpoints in "+e.c.store)
		assert.Contains(t, r.Stderr, "drop --cruz-store")
		assert.Less(t, time.Since(t0), 30*time.Second, "fails fast")
	})

	t.Run("store not writable", func(t *testing.T) {
		// A read-only store (a bind mount of it onto itself), as when the
		// shared filesystem is mounted read-only on the nodes.
		out, err := exec.Command("mount", "--bind", e.c.store, e.c.store).CombinedOutput()
		require.NoError(t, err, "%s", out)
		t.Cleanup(func() {
			if out, err := exec.Command("umount", e.c.store).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", e.c.store, err, out)
			}
		})
		out, err = exec.Command("mount", "-o", "remount,bind,ro", e.c.store).CombinedOutput()
		require.NoError(t, err, "%s", out)
		e.waitIdle(t)
		t0 := time.Now()
		r := e.as(t, "srun", "--cruz", "-N2", "-n2", prog, "3", "10")
		assert.NotEqual(t, 0, r.Code)
		assert.Contains(t, r.Stderr, "cruz: srun --cruz:")
		assert.Contains(t, r.Stderr, "read-only file system")
		assert.Contains(t, r.Stderr, "must be writable by the agents")
		assert.Less(t, time.Since(t0), 20*time.Second, "fails fast")
	})

	t.Run("no agent on a node", func(t *testing.T) {
		n2, err := e.st.Node("node2")
		require.NoError(t, err)
		require.NoError(t, unix.Kill(n2.PID, unix.SIGTERM))
		for i := 0; i < 100 && cluster.Alive(n2.PID); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		require.NoFileExists(t, n2.Socket, "node2's agent removed its socket as it stopped")
		t.Cleanup(func() {
			r := e.c.clusterCmd("restart", "node2")
			require.Equal(t, 0, r.Code, "cruz cluster restart node2: %s", r.Stderr)
		})
		// node2 runs the step's second task: the first, on node1, finds
		// it cannot start node2's pod and cancels the step.
		e.waitIdle(t)
		t0 := time.Now()
		r := e.as(t, "srun", "--cruz", "-w", "node1,node2", "-N2", "-n2", prog, "3", "10")
		assert.NotEqual(t, 0, r.Code)
		assert.Contains(t, r.Stderr, "cruz: no cruz agent on node node2")
		assert.Contains(t, r.Stderr, "start cruzd")
		assert.Contains(t, r.Stderr, "the job could not start: node node2")
		assert.Less(t, time.Since(t0), 20*time.Second, "fails fast")

		// node2 runs the step's first task: it fails; the second, on
		// node3, gives up when node2 has no agent to ask about the job.
		e.waitIdle(t)
		t0 = time.Now()
		r = e.as(t, "srun", "--cruz", "-w", "node2,node3", "-N2", "-n2", prog, "3", "10")
		assert.NotEqual(t, 0, r.Code)
		assert.Contains(t, r.Stderr, "cruz: no cruz agent on node node2")
		assert.Contains(t, r.Stderr, "no answer about job")
		assert.Less(t, time.Since(t0), 40*time.Second, "fails fast")
	})
	e.requireSlurmClean(t)
}

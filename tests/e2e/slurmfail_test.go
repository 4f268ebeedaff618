package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Node failures inside a running srun --cruz step (issue 12 item 7): the
// virtual Slurm cluster sets SlurmdTimeout low, so slurmctld marks a dead
// node DOWN within seconds and acts on it as on a real cluster.

// failSlurmNode fails node (cruz cluster fail: link cut, its agent, slurmd,
// slurmstepds and pods killed) once the step's job has a checkpoint, and
// returns when it failed.
func (e *slurmEnv) failSlurmNode(t *testing.T, id, node string) time.Time {
	t.Helper()
	e.waitCheckpoint(t, id, 60*time.Second)
	r := e.c.clusterCmd("fail", node)
	require.Equal(t, 0, r.Code, "cruz cluster fail %s: %s", node, r.Stderr)
	return time.Now()
}

// waitSlurmNodeDown waits until slurmctld says node is down and returns
// when it saw that.
func (e *slurmEnv) waitSlurmNodeDown(t *testing.T, node string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := slurmCmd(t, e.conf, "sinfo", "-h", "-n", node, "-o", "%T")
		if strings.HasPrefix(strings.TrimSpace(r.Stdout), "down") {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("Slurm does not say %s is down %s after it failed: %s", node, timeout, r.Stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// requireSlurmCleanAfterFail is requireSlurmClean on a cluster whose node
// failed: the other nodes idle, nothing of the jobs left on them.
func (e *slurmEnv) requireSlurmCleanAfterFail(t *testing.T, failed string, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := slurmCmd(t, e.conf, "sinfo", "-h", "-N", "-o", "%N %T")
		busy := false
		for _, l := range sortedLines(r.Stdout) {
			f := strings.Fields(l)
			if len(f) == 2 && f[0] != failed && f[1] != "idle" {
				busy = true
			}
		}
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Slurm's live nodes are not idle after 30 s: %s", r.Stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := slurmCmd(t, e.conf, "squeue", "-h")
	assert.Empty(t, strings.TrimSpace(r.Stdout), "jobs left in Slurm's queue")
	st := e.c.status()
	live := st
	live.Nodes = nil
	for _, n := range st.Nodes {
		if !n.Failed {
			live.Nodes = append(live.Nodes, n)
		}
	}
	e.c.requireClean(t, live)
	for _, n := range live.Nodes {
		out := inNodeNetns(t, n, "nft", "list", "tables")
		assert.NotContains(t, out, "cruz_block", "a packet filter table left in %s's netns", n.Name)
	}
	for _, id := range ids {
		assert.Empty(t, processesWithEnv("SLURM_JOB_ID="+id), "processes of Slurm job %s left", id)
	}
}

// logAgentOnFailure logs, if the test fails, what node1's agent logged
// from the failure on (the cluster's own cleanup shows only its end).
func (e *slurmEnv) logAgentOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		b, _ := os.ReadFile(e.st.Nodes[0].Log)
		s := string(b)
		if i := strings.Index(s, `msg="job failed"`); i >= 0 {
			s = s[max(0, strings.LastIndex(s[:i], "\n")):]
		}
		lines := strings.Split(s, "\n")
		t.Logf("node1's agent log from the failure on:\n%s", strings.Join(lines[:min(len(lines), 200)], "\n"))
	})
}

// slurmctldLog returns slurmctld's log lines that hold s.
func (e *slurmEnv) slurmctldLog(s string) []string {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(e.conf), "log", "slurmctld.log"))
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// TestSlurmNodeFailNoKill: a batch job submitted with --no-kill whose step
// (srun --cruz, 4 MPI ranks on node1 and node2 of a 3-node cluster) loses
// node2 after a checkpoint: Cruz rolls the job back onto the step's other
// node (node1, never node3, which Slurm did not give the job), Slurm drops
// node2 from the job and the step and keeps them running, srun reports no
// failed task, the job completes and its output file is one run's.
func TestSlurmNodeFailNoKill(t *testing.T) {
	e := slurmSetup(t, 3)
	const np, iters = 4, 60
	id := e.sbatch(t, "--no-kill", "-N2", "-n4", "-w", "node1,node2",
		e.allreduceScript(t, "job.sh", "--cruz-interval=2s", iters, 200))
	job := "slurm-" + id + "-0"
	e.waitOutput(t, id, "iter 5 ", 90*time.Second)
	e.logAgentOnFailure(t)
	failed := e.failSlurmNode(t, id, "node2")

	j := awaitRecovered(t, e, job, 60*time.Second)
	recovered := time.Now()
	ranks, main := podsByNode(j)
	assert.Equal(t, map[string]int{"node1": np}, ranks, "every rank on the step's other node")
	assert.Equal(t, "node1", main)
	down := e.waitSlurmNodeDown(t, "node2", 60*time.Second)
	t.Logf("node2 failed; the job ran again (recovered) after %s; Slurm marked node2 down after %s",
		recovered.Sub(failed).Round(100*time.Millisecond), down.Sub(failed).Round(100*time.Millisecond))

	sj := e.waitJob(t, id, 3*time.Minute)
	errOut := e.errOut(t, id)
	assert.Equal(t, "COMPLETED", sj.State, "stderr:\n%s", errOut)
	assert.Equal(t, 0, sj.Restarts, "not requeued")
	assert.Contains(t, errOut, "batch: srun exited 0", "srun reports no failure for node2's tasks")
	assert.NotEmpty(t, e.slurmctldLog("Killing JobId="+id+" StepId=0 on failed node node2"),
		"Slurm ended only node2's part of the step (srun --cruz makes it no-kill), not the step")
	assert.Equal(t, check.AllreduceOutput(np, iters), check.Lines(e.out(t, id)), "the output file, line by line")
	t.Logf("the batch job's stderr:\n%s", errOut)
	t.Logf("slurmctld on node2: %s", strings.Join(e.slurmctldLog("node2"), "\n"))

	evs := e.n1.events(e.u, job)
	assert.Equal(t, 1, countKind(evs, "started"), "%v", kinds(evs))
	assert.Equal(t, 1, countKind(evs, "recovered"), "%v", kinds(evs))
	assert.Zero(t, countKind(evs, "restarted"), "no requeue: %v", kinds(evs))
	e.requireSlurmCleanAfterFail(t, "node2", id)
}

// awaitRecovered waits until the job has recovered from a failure (an
// event "recovered") and runs, and returns it.
func awaitRecovered(t *testing.T, e *slurmEnv, job string, timeout time.Duration) api.Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := e.n1.events(e.u, job)
		if countKind(evs, "recovered") > 0 {
			var j api.Job
			e.cruzJSON(t, e.n1, &j, "status", "--json", job)
			if j.State == api.StateRunning {
				return j
			}
		}
		if countKind(evs, "gave_up") > 0 || time.Now().After(deadline) {
			t.Fatalf("job %s did not recover within %s: %v", job, timeout, evs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSlurmNodeFailRequeue: a batch job without --no-kill (--requeue) whose
// step's node2 fails after a checkpoint: Slurm ends the job for the node
// failure and requeues it; the requeued job gets node1 and node3 and its
// step resumes from the checkpoint instead of starting over; the output
// file is one run's.
func TestSlurmNodeFailRequeue(t *testing.T) {
	e := slurmSetup(t, 3)
	// 45 s of work: the step must still run when Slurm marks node2 down,
	// 9-26 s after it failed (SlurmdTimeout=5 and slurmctld's ping RPCs
	// to the dead node timing out); a step that ended by then would run
	// again from its start, as Slurm reruns the batch script.
	const np, iters = 4, 150
	id := e.sbatch(t, "--requeue", "-N2", "-n4",
		e.allreduceScript(t, "job.sh", "--cruz-interval=2s", iters, 300))
	job := "slurm-" + id + "-0"
	e.waitOutput(t, id, "iter 5 ", 90*time.Second)
	var j api.Job
	e.cruzJSON(t, e.n1, &j, "status", "--json", id)
	ranks, _ := podsByNode(j)
	require.Equal(t, map[string]int{"node1": 2, "node2": 2}, ranks, "Slurm put the step on node1 and node2")
	e.logAgentOnFailure(t)
	failed := e.failSlurmNode(t, id, "node2")

	down := e.waitSlurmNodeDown(t, "node2", 60*time.Second)
	// Running again: the requeued step's job restored on its new nodes.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		evs := e.n1.events(e.u, job)
		if countKind(evs, "restarted") > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "job %s not restarted within 2m: %v; stderr:\n%s", job, kinds(evs), e.errOut(t, id))
		time.Sleep(200 * time.Millisecond)
	}
	running := time.Now()
	t.Logf("node2 failed; Slurm marked it down after %s; the requeued step's job ran again after %s",
		down.Sub(failed).Round(100*time.Millisecond), running.Sub(failed).Round(100*time.Millisecond))
	e.cruzJSON(t, e.n1, &j, "status", "--json", job)
	ranks, main := podsByNode(j)
	assert.Equal(t, map[string]int{"node1": 2, "node3": 2}, ranks, "the ranks where the requeued job's tasks are")
	assert.Equal(t, "node1", main)

	sj := e.waitJob(t, id, 3*time.Minute)
	errOut := e.errOut(t, id)
	assert.Equal(t, "COMPLETED", sj.State, "stderr:\n%s", errOut)
	assert.Equal(t, 1, sj.Restarts, "Slurm requeued it once")
	assert.Contains(t, errOut, "batch: restarts=1")
	assert.Contains(t, errOut, "batch: srun exited 0")
	assert.Equal(t, check.AllreduceOutput(np, iters), check.Lines(e.out(t, id)), "the output file, line by line")
	t.Logf("slurmctld on the job: %s", strings.Join(e.slurmctldLog("JobId="+id), "\n"))

	evs := e.n1.events(e.u, job)
	assert.Equal(t, 1, countKind(evs, "started"), "started once: %v", kinds(evs))
	assert.Equal(t, 1, countKind(evs, "restarted"), "restarted once, by the requeue: %v", kinds(evs))
	e.requireSlurmCleanAfterFail(t, "node2", id)
}

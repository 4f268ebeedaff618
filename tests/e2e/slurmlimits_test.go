package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSlurmStepLimits (issue 11.6): the pods of a srun --cruz step obey the
// limits Slurm gives the step, as its tasks would without Cruz: the virtual
// cluster confines steps with task/cgroup (cpuset and memory, swap
// included), and a step's pods join its cgroups on their node. A step of
// one CPU sees one CPU in its pod; a step of 200 MB runs a program of
// 100 MiB, and the kernel ends one that wants 400 MiB.
func TestSlurmStepLimits(t *testing.T) {
	e := slurmSetup(t, 1)

	plain := e.as(t, "srun", "-n1", "-c1", "nproc")
	require.Equal(t, 0, plain.Code, "srun without --cruz; stderr:\n%s", plain.Stderr)
	require.Equal(t, "1\n", withoutQueueNotes(plain.Stdout), "Slurm itself confines a step of one CPU to one")
	r := e.as(t, "srun", "--cruz", "-n1", "-c1", "nproc")
	require.Equal(t, 0, r.Code, "srun --cruz; stderr:\n%s", r.Stderr)
	assert.Equal(t, "1\n", withoutQueueNotes(r.Stdout), "the step's pod sees the step's one CPU")
	r = e.as(t, "srun", "--cruz", "-n1", "-c2", "nproc")
	require.Equal(t, 0, r.Code, "srun --cruz -c2; stderr:\n%s", r.Stderr)
	assert.Equal(t, "2\n", withoutQueueNotes(r.Stdout), "a step of two CPUs has two")

	memhog := testenv.Bin(t, "memhog")
	r = e.as(t, "srun", "--cruz", "-n1", "--mem=200M", "timeout", "-s", "INT", "3", memhog, "100")
	assert.Contains(t, r.Stdout, "ready 100\n", "100 MiB fit in a step of 200 MB; stderr:\n%s", r.Stderr)
	r = e.as(t, "srun", "--cruz", "-n1", "--mem=200M", memhog, "400")
	assert.NotEqual(t, 0, r.Code, "a pod using 400 MiB in a step of 200 MB; stdout:\n%s", r.Stdout)
	assert.NotContains(t, r.Stdout, "ready 400", "the pod got more memory than the step has")
	assert.True(t, strings.Contains(r.Stderr, "status 137") || strings.Contains(r.Stderr, "Killed") || strings.Contains(r.Stderr, "oom"),
		"the kernel ended the pod (SIGKILL of the OOM killer); stderr:\n%s", r.Stderr)

	// A requeued step's restored pod goes into the cgroups of the step
	// that resumes it, not those it was dumped in.
	id := e.sbatch(t, "--requeue", "-n1", "--mem=200M", e.script(t, "limits.sh", "srun --cruz --cruz-interval=1s "+memhog+" 50\n"))
	job := "slurm-" + id + "-0"
	e.waitOutput(t, id, "ready 50", 90*time.Second)
	require.Equal(t, "/job_"+id+"/step_0", stepOf(t, memhogPID(t)), "the pod runs in its step's memory cgroup")
	e.waitCheckpoint(t, id, time.Minute)
	r = e.as(t, "scontrol", "requeue", id)
	require.Equal(t, 0, r.Code, "scontrol requeue: %s", r.Stderr)
	deadline := time.Now().Add(2 * time.Minute)
	for countKind(e.n1.events(e.u, job), "restarted") == 0 {
		require.True(t, time.Now().Before(deadline), "%s not restarted within 2m: %v", job, kinds(e.n1.events(e.u, job)))
		time.Sleep(200 * time.Millisecond)
	}
	assert.Equal(t, "/job_"+id+"/step_0", stepOf(t, memhogPID(t)), "the restored pod runs in the requeued step's memory cgroup")
	r = e.as(t, "scancel", id)
	require.Equal(t, 0, r.Code, "scancel: %s", r.Stderr)
	e.requireSlurmClean(t, id)
}

// memhogPID is the one memhog process running.
func memhogPID(t *testing.T) int {
	t.Helper()
	var pids []int
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "memhog" {
			pids = append(pids, pid)
		}
	}
	require.Len(t, pids, 1, "memhog processes")
	return pids[0]
}

// stepOf is the end of pid's memory cgroup from /job_ on ("/job_5/step_0").
func stepOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if _, path, ok := strings.Cut(l, ":memory:"); ok {
			if i := strings.Index(path, "/job_"); i >= 0 {
				return path[i:]
			}
			return path
		}
	}
	return ""
}

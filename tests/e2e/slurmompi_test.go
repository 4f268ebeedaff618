package e2e

import (
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSlurmOpenMPIRequeue (issue 13.3): an Open MPI program as a srun
// --cruz step, 4 tasks on 2 nodes, checkpointed every second, is requeued
// after a checkpoint: Slurm truncates its output file, the requeued step
// resumes from the checkpoint (Open MPI's mpirun and daemons restored in
// their pods), and the file reads as one uninterrupted run's.
func TestSlurmOpenMPIRequeue(t *testing.T) {
	e := slurmSetup(t, 3)
	const np, iters = 4, 60
	app := testenv.Bin(t, "mpi_allreduce_ompi")
	id := e.sbatch(t, "-N2", "-n4", e.appScript(t, "ompi.sh", "--cruz-interval=1s", app, iters, 150))
	job := "slurm-" + id + "-0"
	e.waitOutput(t, id, "iter 15 ", 90*time.Second)
	e.waitCheckpoint(t, id, 30*time.Second)
	r := e.as(t, "scontrol", "requeue", id)
	require.Equal(t, 0, r.Code, "scontrol requeue: %s", r.Stderr)
	sj := e.waitJob(t, id, 3*time.Minute)
	assert.Equal(t, "COMPLETED", sj.State)
	assert.Equal(t, 1, sj.Restarts, "Slurm requeued it once")
	errOut := e.errOut(t, id)
	assert.Contains(t, errOut, "batch: restarts=1\n")
	assert.Contains(t, errOut, "batch: srun exited 0\n")
	assert.Equal(t, check.AllreduceOutput(np, iters), check.Lines(e.out(t, id)), "the output file, line by line; stderr:\n%s", errOut)
	evs := e.n1.events(e.u, job)
	assert.Equal(t, 1, countKind(evs, "started"), "started once: %v", kinds(evs))
	assert.Equal(t, 1, countKind(evs, "restarted"), "resumed once from a checkpoint, not started over: %v", kinds(evs))
	e.requireSlurmClean(t, id)
}

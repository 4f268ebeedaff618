package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// meltWithDump is tests/apps/in.melt made smaller (2,048 atoms, 1,000
// steps) and writing a trajectory file: every 200 steps, the atoms sorted
// by id, to dump.melt in the working directory. LAMMPS also writes its log,
// log.lammps, there, flushed at each thermo row (else a log this short sits
// in LAMMPS's buffer, in memory, until the end). It opens both with fopen
// "w": written, not appended.
func meltWithDump(t *testing.T, u testenv.User, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "apps", "in.melt"))
	require.NoError(t, err)
	in := strings.Replace(string(b), "block 0 10 0 10 0 10", "block 0 8 0 8 0 8", 1)
	in = strings.Replace(in, "run\t\t1500", "thermo_modify\tflush yes\ndump\t\t1 all atom 200 dump.melt\ndump_modify\t1 sort id\nrun\t\t1000", 1)
	require.Contains(t, in, "run\t\t1000")
	require.Contains(t, in, "block 0 8 0 8 0 8")
	p := filepath.Join(dir, "in.melt-dump")
	require.NoError(t, os.WriteFile(p, []byte(in), 0o644))
	require.NoError(t, os.Chown(p, int(u.UID), int(u.GID)))
	return p
}

// TestLAMMPSFilesRollBack: Debian's LAMMPS (Open MPI) runs on 4 ranks on
// two nodes with a spare, writing its log (log.lammps) and a trajectory
// (dump.melt) in its working directory. It is checkpointed, runs on (both
// files grow), and node2 fails. The automatic recovery rolls the whole job
// back to the checkpoint: the files are put back as they were then, before
// CRIU restores the ranks (which it would otherwise refuse: "has bad
// size"), and the job ends with a log whose thermo rows and a trajectory
// that are those of an uninterrupted run, byte for byte for the trajectory.
func TestLAMMPSFilesRollBack(t *testing.T) {
	lmp := requireProgram(t, "lmp", "lammps")
	c, _, n1, u, dir := clusterSetup(t, 3)
	in := meltWithDump(t, u, dir)

	// The reference: the same input, uninterrupted, with mpirun alone,
	// over the transport Cruz's pods use.
	refDir := testenv.TempDirFor(t, u)
	ref := testenv.RunAs(u, "mpirun.openmpi", "--oversubscribe", "-np", "4", "--mca", "btl", "tcp,self", "--mca", "pml", "ob1", lmp, "-in", in)
	ref.Dir = refDir
	refOut, err := ref.CombinedOutput()
	require.NoError(t, err, "reference run: %s", refOut)
	refLog, err := os.ReadFile(filepath.Join(refDir, "log.lammps"))
	require.NoError(t, err)
	want := thermoRows(string(refLog))
	require.Len(t, want, 11, "thermo every 100 of 1000 steps:\n%s", refLog)
	wantDump, err := os.ReadFile(filepath.Join(refDir, "dump.melt"))
	require.NoError(t, err)
	require.Equal(t, 6, bytes.Count(wantDump, []byte("ITEM: TIMESTEP\n")), "a snapshot every 200 of 1000 steps")

	run := n1.startCruz(u, dir, "run", "--name", "lf", "--np", "4", "--spares", "1", "--", "lmp", "-in", in)
	run.waitOutput(t, "\n     200 ", 2*time.Minute)
	before := n1.status(u, "lf")
	ranks, _ := podsByNode(before)
	require.Equal(t, map[string]int{"node1": 2, "node2": 2}, ranks, "node3 is the spare")
	ckpt := n1.checkpoint(u, "lf")
	logAt, dumpAt := fileSize(t, filepath.Join(dir, "log.lammps")), fileSize(t, filepath.Join(dir, "dump.melt"))
	run.waitOutput(t, "\n     500 ", 2*time.Minute)
	logGrown, dumpGrown := fileSize(t, filepath.Join(dir, "log.lammps")), fileSize(t, filepath.Join(dir, "dump.melt"))
	t.Logf("at checkpoint %s: log.lammps %d bytes, dump.melt %d; at step 500: %d and %d", ckpt, logAt, dumpAt, logGrown, dumpGrown)
	require.Greater(t, logGrown, logAt, "the log grew after the checkpoint")
	require.Greater(t, dumpGrown, dumpAt, "the trajectory grew after the checkpoint")

	r := c.clusterCmd("fail", "node2")
	require.Equal(t, 0, r.Code, "cruz cluster fail node2: %s", r.Stderr)
	evs := n1.awaitEvent(u, "lf", "recovered", 1, 2*time.Minute)
	for _, e := range evs {
		if e.Kind == "failure" || e.Kind == "recovered" || e.Kind == "restarting" {
			t.Logf("%s: %s", e.Kind, e.Message)
		}
	}
	after := n1.status(u, "lf")
	ranks, _ = podsByNode(after)
	assert.Equal(t, map[string]int{"node1": 2, "node3": 2}, ranks, "node2's ranks are on the spare")
	out := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)

	log, err := os.ReadFile(filepath.Join(dir, "log.lammps"))
	require.NoError(t, err)
	assert.Equal(t, want, thermoRows(string(log)), "log.lammps holds the uninterrupted run's thermo rows, each once")
	assert.Equal(t, want, thermoRows(out.Stdout), "and so does the job's output")
	gotDump, err := os.ReadFile(filepath.Join(dir, "dump.melt"))
	require.NoError(t, err)
	assert.Equal(t, 6, bytes.Count(gotDump, []byte("ITEM: TIMESTEP\n")), "one snapshot every 200 steps, none twice")
	assert.True(t, bytes.Equal(wantDump, gotDump), "dump.melt is the uninterrupted run's, byte for byte (%d and %d bytes)", len(wantDump), len(gotDump))
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	return st.Size()
}

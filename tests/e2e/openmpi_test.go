package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOpenMPICheckpointStopRestart: the allreduce program built with Open
// MPI runs as 4 ranks in 4 pods, each rank under its own orted (started by
// mpirun through cruzd as remote shell), is found to be Open MPI's by the
// library it links, is checkpointed while it runs, stopped and restarted:
// its output is the uninterrupted run's, line for line. The restored ranks
// find their session files (in the pods' private /dev/shm) and terminals.
func TestOpenMPICheckpointStopRestart(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const np, iters = 4, 40
	app := testenv.Bin(t, "mpi_allreduce_ompi")

	run := a.startCruz(u, dir, "run", "--name", "oar", "--np", fmt.Sprint(np), "--", app, fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", 60*time.Second)
	j := a.status(u, "oar")
	require.Equal(t, api.StateRunning, j.State)
	require.Len(t, j.Pods, np+1, "one pod per rank plus mpirun's")
	ips := map[string]bool{}
	for _, p := range j.Pods {
		ips[p.IP] = true
		out, err := exec.Command("ps", "-o", "user=,comm=", "-p", fmt.Sprint(p.PID)).Output()
		require.NoError(t, err)
		fields := strings.Fields(string(out))
		require.Len(t, fields, 2, "pod %s: ps says %q", p.Name, out)
		assert.Equal(t, "cruzt1", fields[0], "pod %s runs as the user", p.Name)
		if strings.Contains(p.Name, "-r") {
			assert.Equal(t, "orted", fields[1], "rank pod %s runs Open MPI's daemon as PID 1", p.Name)
		} else {
			assert.Equal(t, "mpirun.openmpi", fields[1], "the first pod runs Open MPI's mpirun")
		}
	}
	assert.Len(t, ips, np+1, "every pod has its own address")

	a.checkpoint(u, "oar")
	time.Sleep(300 * time.Millisecond)
	stopID := a.checkpoint(u, "oar", "--stop")
	first := run.wait(t, time.Minute)
	require.Equal(t, 75, first.Code, "cruz run exits 75 when a checkpoint stops the job; stderr:\n%s", first.Stderr)
	assert.Contains(t, first.Stderr, stopID)
	a.requireNoLeaks()

	second := a.cruz(u, dir, "restart", "oar")
	require.Equal(t, 0, second.Code, "restart: %s", second.Stderr)
	got := append(check.Lines(first.Stdout), check.Lines(second.Stdout)...)
	require.Equal(t, check.AllreduceOutput(np, iters), got, "the output of the run and its restart, joined, is the uninterrupted run's")
	assert.Equal(t, api.StateExited, a.status(u, "oar").State)
	a.requireNoLeaks()
}

// requireProgram returns the path of an application the test command
// installs (scripts/install-deps.sh), or skips loudly without it.
func requireProgram(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("NOT RUN: %s not installed (Debian package %s; run `make deps`)", name, pkg)
	}
	return p
}

// thermoRows keeps LAMMPS's thermo rows (step and 5 numbers) of its output:
// the physics, without the timing lines that differ from run to run.
var thermoRow = regexp.MustCompile(`^\s*\d+(\s+-?[0-9.eE+-]+){5}\s*$`)

func thermoRows(out string) []string {
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if thermoRow.MatchString(l) {
			rows = append(rows, strings.TrimSpace(l))
		}
	}
	return rows
}

// copyApp copies tests/apps/NAME into dir, for u to run.
func copyApp(t *testing.T, u testenv.User, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "apps", name))
	require.NoError(t, err)
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o755))
	require.NoError(t, os.Chown(p, int(u.UID), int(u.GID)))
	return p
}

// TestLAMMPSRestartElsewhere: Debian's LAMMPS (an Open MPI program, found
// as such by cruz run) runs its Lennard-Jones melt on 4 ranks on node1, is
// checkpointed while it runs, stopped, and restarted on node2: its thermo
// rows are those of an uninterrupted run with mpirun, line for line, and
// the LAMMPS log it writes (log.lammps) ends like that run's.
func TestLAMMPSRestartElsewhere(t *testing.T) {
	lmp := requireProgram(t, "lmp", "lammps")
	c := upCluster(t, 2)
	st := c.status()
	n1, n2 := c.node(t, st, "node1"), c.node(t, st, "node2")
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	in := copyApp(t, u, dir, "in.melt")

	// The reference: the same input, uninterrupted, with mpirun alone.
	refDir := testenv.TempDirFor(t, u)
	ref := testenv.RunAs(u, "mpirun.openmpi", "--oversubscribe", "-np", "4", lmp, "-in", in, "-log", "none")
	ref.Dir = refDir
	refOut, err := ref.CombinedOutput()
	require.NoError(t, err, "reference run: %s", refOut)
	want := thermoRows(string(refOut))
	require.Len(t, want, 16, "thermo every 100 of 1500 steps:\n%s", refOut)

	run := n1.startCruz(u, dir, "run", "--name", "melt", "--np", "4", "--nodes", "node1", "--", "lmp", "-in", in)
	run.waitOutput(t, "\n     200 ", 2*time.Minute)
	assert.Contains(t, run.stdout.String(), "1 by 2 by 2 MPI processor grid", "one LAMMPS job of 4 ranks, not 4 copies of one")
	n1.checkpoint(u, "melt")
	before := n1.status(u, "melt")
	n1.checkpoint(u, "melt", "--stop")
	first := run.wait(t, time.Minute)
	require.Equal(t, 75, first.Code, "stderr:\n%s", first.Stderr)

	second := n2.cruz(u, dir, "restart", "--nodes", "node2", before.ID)
	require.Equal(t, 0, second.Code, "restart on node2: %s", second.Stderr)
	got := thermoRows(first.Stdout + second.Stdout)
	require.Equal(t, want, got, "thermo rows of the run and its restart on node2 are the uninterrupted run's")
	after := n2.status(u, before.ID)
	for _, p := range after.Pods {
		assert.Equal(t, "node2", p.Node)
	}
	log, err := os.ReadFile(filepath.Join(dir, "log.lammps"))
	require.NoError(t, err)
	assert.Equal(t, want, thermoRows(string(log)), "log.lammps holds the whole run's thermo rows once")
}

// TestMPI4PyCheckpointRestart: a Python script using mpi4py (python3 links
// no MPI, so --mpi openmpi says which) runs on 2 ranks, is checkpointed,
// stopped and restarted, and prints what an uninterrupted run prints.
func TestMPI4PyCheckpointRestart(t *testing.T) {
	requireProgram(t, "/usr/bin/python3", "python3")
	if _, err := os.Stat("/usr/lib/python3/dist-packages/mpi4py"); err != nil {
		t.Skipf("NOT RUN: mpi4py not installed (Debian package python3-mpi4py; run `make deps`)")
	}
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	script := copyApp(t, u, dir, "allreduce.py")
	const np, iters = 2, 30

	noFlag := a.cruz(u, dir, "run", "--np", "2", "--", "/usr/bin/python3", script, "3", "10")
	assert.Equal(t, 2, noFlag.Code)
	assert.Contains(t, noFlag.Stderr, "links no MPI library", "python3 links no MPI: cruz run asks for --mpi")
	assert.Contains(t, noFlag.Stderr, "--mpi")

	run := a.startCruz(u, dir, "run", "--name", "py", "--mpi", "openmpi", "--np", fmt.Sprint(np), "--", "/usr/bin/python3", script, fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", time.Minute)
	a.checkpoint(u, "py", "--stop")
	first := run.wait(t, time.Minute)
	require.Equal(t, 75, first.Code, "stderr:\n%s", first.Stderr)
	second := a.cruz(u, dir, "restart", "py")
	require.Equal(t, 0, second.Code, "restart: %s", second.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), append(check.Lines(first.Stdout), check.Lines(second.Stdout)...))
	a.requireNoLeaks()
}

// TestMPIBadInput: what cannot run is refused before any pod starts, with
// a message that says what is wrong and what to do, and nothing is left.
func TestMPIBadInput(t *testing.T) {
	a := startAgent(t, agentOptions{extra: "[mpi]\nopenmpi_mpirun = \"/nonexistent/mpirun\"\n"})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"not an MPI program", []string{"--np", "2", "--", "/bin/sleep", "1"}, 2,
			[]string{"/bin/sleep links no MPI library", "--np 1"}},
		{"mismatch", []string{"--np", "2", "--mpi", "openmpi", "--", testenv.Bin(t, "mpi_allreduce"), "3", "10"}, 2,
			[]string{"links libmpich.so.12 (MPICH), not Open MPI", "--mpi mpich"}},
		{"unknown MPI", []string{"--np", "2", "--mpi", "intel", "--", "/bin/true"}, 2,
			[]string{`"intel" is not an MPI Cruz knows`}},
		{"MPI not installed", []string{"--np", "2", "--", testenv.Bin(t, "mpi_allreduce_ompi"), "3", "10"}, 1,
			[]string{"Open MPI's launcher /nonexistent/mpirun is not installed on this node", "mpi.openmpi_mpirun"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.cruz(u, dir, append([]string{"run"}, tc.args...)...)
			assert.Equal(t, tc.code, r.Code, "stderr: %s", r.Stderr)
			for _, w := range tc.want {
				assert.Contains(t, r.Stderr, w)
			}
			assert.Empty(t, r.Stdout)
		})
	}
	list := a.cruz(u, dir, "status", "--json")
	require.Equal(t, 0, list.Code, list.Stderr)
	assert.Contains(t, list.Stdout, `"jobs": []`, "no job was created by a refused run")
	a.requireNoLeaks()
}

// allreduceLines keeps the lines mpi_allreduce prints (start, iter, result):
// what mpirun prints about a daemon lost with its node is not the program's.
func allreduceLines(t *testing.T, lines []string) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "start ranks ") || strings.HasPrefix(l, "iter ") || strings.HasPrefix(l, "result ") {
			out = append(out, l)
		} else if l != "" {
			t.Logf("not the program's: %s", l)
		}
	}
	return out
}

// TestOpenMPIRecoveryNodeFailure: an Open MPI job of 4 ranks on 2 nodes
// with a spare, checkpointed every 2 s; node2 fails (link cut, agent and
// pods killed). The job rolls back to its last checkpoint with node2's
// pods (their orted and rank, their session files) restored on the spare,
// and every line of the program's output is there exactly once.
func TestOpenMPIRecoveryNodeFailure(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 3)
	const np, iters = 4, 100
	run := n1.startCruz(u, dir, "run", "--name", "onf", "--np", fmt.Sprint(np), "--interval", "2s", "--spares", "1",
		"--", testenv.Bin(t, "mpi_allreduce_ompi"), fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", time.Minute)
	before := n1.status(u, "onf")
	ranks, _ := podsByNode(before)
	require.Equal(t, map[string]int{"node1": 2, "node2": 2}, ranks, "node3 is the spare")
	n1.awaitEvent(u, "onf", "checkpoint", 1, time.Minute)

	r := c.clusterCmd("fail", "node2")
	require.Equal(t, 0, r.Code, "cruz cluster fail node2: %s", r.Stderr)
	n1.awaitEvent(u, "onf", "recovered", 1, 2*time.Minute)
	after := n1.status(u, "onf")
	ranks, _ = podsByNode(after)
	assert.Equal(t, map[string]int{"node1": 2, "node3": 2}, ranks, "node2's ranks are on the spare")
	for i, p := range after.Pods {
		assert.Equal(t, before.Pods[i].IP, p.IP)
	}
	out := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), allreduceLines(t, check.Lines(out.Stdout)))
	st = c.status()
	var alive []cluster.Node
	for _, n := range st.Nodes {
		if !n.Failed {
			alive = append(alive, n)
		}
	}
	st.Nodes = alive
	c.requireClean(t, st)
}

// TestOpenMPIMigrateDrain: an Open MPI job of 4 ranks (each under its own
// orted) on node1 and node2 of three. Rank 1 is migrated live to node3,
// then node2 is drained: its ranks (orted, rank and their session files in
// the pod's /dev/shm) move to the other nodes while the job runs. Every pod
// keeps its address and MAC, and the job prints what an uninterrupted run
// prints.
func TestOpenMPIMigrateDrain(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 3)
	const np, iters = 4, 100
	run := n1.startCruz(u, dir, "run", "--name", "omd", "--np", fmt.Sprint(np), "--nodes", "node1,node2",
		"--", testenv.Bin(t, "mpi_allreduce_ompi"), fmt.Sprint(iters), "100")
	run.waitOutput(t, "iter 3 ", time.Minute)
	first := n1.status(u, "omd")
	ranks, _ := podsByNode(first)
	require.Equal(t, map[string]int{"node1": 2, "node2": 2}, ranks)
	addr := map[string][2]string{}
	for _, p := range first.Pods {
		addr[p.Name] = [2]string{p.IP, p.MAC}
	}

	rank1 := first.ID + "-r1"
	r := n1.cruz(u, "", "migrate", "--json", "--rank", "1", "--to", "node3", "omd")
	require.Equal(t, 0, r.Code, "cruz migrate: %s", r.Stderr)
	var m api.Migration
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &m))
	assert.Equal(t, rank1, m.Pod)
	assert.Equal(t, "node3", m.To)
	t.Logf("rank 1 %s -> %s: downtime %d ms (dump %d, restore %d), %d bytes", m.From, m.To, m.DowntimeMS, m.DumpMS, m.RestoreMS, m.Bytes)
	// The job goes on after the migration, before the drain.
	iters0 := strings.Count(run.stdout.String(), "iter ")
	deadline := time.Now().Add(time.Minute)
	for strings.Count(run.stdout.String(), "iter ") <= iters0 {
		require.True(t, time.Now().Before(deadline), "no iteration within a minute of the migration; stdout:\n%s", run.stdout.String())
		time.Sleep(50 * time.Millisecond)
	}

	d := runCommand(t, exec.Command(testenv.Bin(t, "cruz"), "--socket", n1.socket, "drain", "node2"), 2*time.Minute)
	require.Equal(t, 0, d.Code, "cruz drain node2: %s", d.Stderr)
	assert.Contains(t, d.Stdout, "node node2 is drained")
	after := n1.status(u, "omd")
	ranks, _ = podsByNode(after)
	assert.Zero(t, ranks["node2"], "no rank left on node2: %v", ranks)
	for _, p := range after.Pods {
		assert.Equal(t, addr[p.Name], [2]string{p.IP, p.MAC}, "pod %s keeps its address and MAC", p.Name)
		if p.Name == rank1 {
			assert.Equal(t, "node3", p.Node)
		}
	}

	out := run.wait(t, 3*time.Minute)
	require.Equal(t, 0, out.Code, "stderr:\n%s", out.Stderr)
	require.Equal(t, check.AllreduceOutput(np, iters), allreduceLines(t, check.Lines(out.Stdout)))
	c.requireClean(t, st)
}

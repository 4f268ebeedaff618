package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRanksPerPodMPICH and TestRanksPerPodOpenMPI (issue 13.5): 4 ranks
// with --ranks-per-pod 2 on two nodes run in two pods of two ranks, which
// share memory (a shared mapping in the pod's /dev/shm); the job is
// checkpointed while it runs, stopped, restarted on other nodes, and a
// rank's pod is migrated live, taking its partner rank with it. The output
// of the runs, joined, is the uninterrupted run's. MPI_Finalize may not
// hang: the program's self-kill is off (--finalize-grace 0, MPICH) and a
// run that has not ended finalizeHangAfter after its result fails the test.
// CRUZ_RANKS_RUNS=N repeats the whole story N times (default 1), to count
// hangs (make ranks-hang).
func TestRanksPerPodMPICH(t *testing.T) {
	ranksPerPod(t, "mpich", testenv.Bin(t, "mpi_allreduce"), []string{"--finalize-grace", "0"})
}

func TestRanksPerPodOpenMPI(t *testing.T) {
	ranksPerPod(t, "openmpi", testenv.Bin(t, "mpi_allreduce_ompi"), []string{"--finalize-grace", "0"})
}

func ranksPerPod(t *testing.T, kind, app string, appFlags []string) {
	runs := 1
	if s := os.Getenv("CRUZ_RANKS_RUNS"); s != "" {
		var err error
		runs, err = strconv.Atoi(s)
		require.NoError(t, err, "CRUZ_RANKS_RUNS")
	}
	c, st, n1, u, dir := clusterSetup(t, 3)
	n2 := c.node(t, st, "node2")
	const np, iters = 4, 80
	hangs := 0
	for i := 1; i <= runs; i++ {
		name := fmt.Sprintf("rpp%d", i)
		args := append([]string{"run", "--name", name, "--np", fmt.Sprint(np), "--ranks-per-pod", "2",
			"--nodes", "node1,node2", "--interval", "off", "--mpi", kind, "--", app}, appFlags...)
		run := n1.startCruz(u, dir, append(args, fmt.Sprint(iters), "100")...)
		run.waitOutput(t, "iter 3 ", 2*time.Minute)
		j := n1.status(u, name)
		require.Equal(t, api.StateRunning, j.State)
		require.Len(t, j.Pods, 3, "mpiexec's pod and two pods of two ranks: %+v", j.Pods)
		shmChecked := 0
		for _, p := range j.Pods {
			if p.Role != api.RoleRank {
				continue
			}
			assert.Equal(t, 2, p.Ranks, "pod %s holds 2 ranks", p.Name)
			want := map[int]string{0: "node1", 2: "node2"}[p.Rank]
			assert.Equal(t, want, p.Node, "pod %s (ranks %d-%d) is on %s", p.Name, p.Rank, p.Rank+1, want)
			if p.PID != 0 { // the PID is known on the coordinator's node
				requireSharedMemory(t, p)
				shmChecked++
			}
		}
		require.NotZero(t, shmChecked, "no rank pod on node1 to look into: %+v", j.Pods)

		n1.checkpoint(u, name)
		time.Sleep(300 * time.Millisecond)
		stopID := n1.checkpoint(u, name, "--stop")
		first := run.wait(t, time.Minute)
		require.Equal(t, 75, first.Code, "run %d: cruz run exits 75 when a checkpoint stops the job; stderr:\n%s", i, first.Stderr)
		assert.Contains(t, first.Stderr, stopID)

		// Restart on other nodes: mpiexec and ranks 0-1 on node2, ranks
		// 2-3 on node3.
		second := n2.startCruz(u, dir, "restart", "--nodes", "node2,node3", j.ID)
		second.waitOutput(t, "iter ", 2*time.Minute)
		after := n2.status(u, j.ID)
		for _, p := range after.Pods {
			if p.Role == api.RoleRank {
				want := map[int]string{0: "node2", 2: "node3"}[p.Rank]
				assert.Equal(t, want, p.Node, "restored pod %s", p.Name)
			}
		}
		// Live migration by rank: rank 3's pod moves, rank 2 with it.
		r := n2.cruz(u, "", "migrate", "--json", "--rank", "3", "--to", "node1", j.ID)
		require.Equal(t, 0, r.Code, "cruz migrate --rank 3: %s", r.Stderr)
		var m api.Migration
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &m))
		assert.Equal(t, j.ID+"-r2-3", m.Pod)
		assert.Equal(t, []int{2, 3}, m.Ranks, "the ranks that moved")
		t.Logf("run %d: ranks 2-3 %s -> %s: downtime %d ms, %d bytes", i, m.From, m.To, m.DowntimeMS, m.Bytes)

		second.waitOutput(t, "result ", 3*time.Minute)
		select {
		case <-second.done:
		case <-time.After(finalizeHangAfter):
			hangs++
			t.Errorf("run %d: HUNG in MPI_Finalize: no exit %s after its result; where the ranks are:\n%s",
				i, finalizeHangAfter, n2.whereRanks(j.ID))
			r := n2.cruz(u, "", "rm", j.ID)
			require.Equal(t, 0, r.Code, "cruz rm: %s", r.Stderr)
			second.wait(t, time.Minute)
			continue
		}
		out := second.wait(t, time.Second)
		require.Equal(t, 0, out.Code, "run %d: restart: %s", i, out.Stderr)
		got := allreduceLines(t, append(check.Lines(first.Stdout), check.Lines(out.Stdout)...))
		require.Equal(t, check.AllreduceOutput(np, iters), got, "run %d: the output of the run and its restart, joined, is the uninterrupted run's", i)
		t.Logf("run %d: ok", i)
	}
	t.Logf("SUMMARY %s --ranks-per-pod 2: runs=%d hangs=%d", kind, runs, hangs)
	c.requireClean(t, st)
}

// requireSharedMemory checks that the ranks of pod p share memory: each of
// the pod's MPI processes maps a file of the pod's /dev/shm shared.
func requireSharedMemory(t *testing.T, p api.Pod) {
	t.Helper()
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.PID, p.PID))
	require.NoError(t, err)
	ranks := strings.Fields(string(kids))
	require.Len(t, ranks, 2, "pod %s: its PID 1 (%d) runs the 2 ranks", p.Name, p.PID)
	for _, pid := range ranks {
		maps, err := os.ReadFile("/proc/" + pid + "/maps")
		require.NoError(t, err)
		shm := 0
		for _, l := range strings.Split(string(maps), "\n") {
			f := strings.Fields(l)
			if len(f) >= 6 && strings.Contains(f[1], "s") && strings.HasPrefix(f[5], "/dev/shm/") {
				shm++
			}
		}
		assert.NotZero(t, shm, "pod %s: rank process %s maps no shared memory of /dev/shm:\n%s", p.Name, pid, maps)
	}
}

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/require"
)

// finalizeHangAfter is how long a run may take from its result line to its
// end before it counts as hung in MPI_Finalize: a healthy 4-rank job ends
// within a second or two, even beside CPU hogs.
const finalizeHangAfter = 30 * time.Second

// TestMPIFinalizeHang measures how often a 4-rank MPICH job in pods hangs in
// MPI_Finalize (issue 13.6). It runs only with CRUZ_FINALIZE_RUNS=N (make
// finalize-hang): N runs of mpi_allreduce with its self-kill off
// (--finalize-grace 0), each with cruz run --interval CRUZ_FINALIZE_INTERVAL
// (default off; 1s checkpoints every second as far as the overhead cap
// allows). CRUZ_FINALIZE_MPI_ENV (KEY=VALUE ..., space-separated) replaces
// the agent's mpi.env, to try MPICH/UCX settings. A run that has printed its
// result and has not ended within finalizeHangAfter counts as a hang: the
// test logs where each rank is (gdb backtrace, the pod's TCP sockets), ends
// the job and goes on. It fails if any run hung or went wrong otherwise.
func TestMPIFinalizeHang(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("CRUZ_FINALIZE_RUNS"))
	if runs <= 0 {
		t.Skip("a measurement, not part of the suite: set CRUZ_FINALIZE_RUNS=N (make finalize-hang)")
	}
	interval := os.Getenv("CRUZ_FINALIZE_INTERVAL")
	if interval == "" {
		interval = "off"
	}
	var opt agentOptions
	if env := os.Getenv("CRUZ_FINALIZE_MPI_ENV"); env != "" {
		var quoted []string
		for _, kv := range strings.Fields(env) {
			quoted = append(quoted, strconv.Quote(kv))
		}
		opt.extra = fmt.Sprintf("[mpi]\nenv = [%s]\n", strings.Join(quoted, ", "))
	}
	iters := 60 // 6 s of iterations: with --interval 1s, 2-4 checkpoints
	if s := os.Getenv("CRUZ_FINALIZE_ITERS"); s != "" {
		var err error
		iters, err = strconv.Atoi(s)
		require.NoError(t, err, "CRUZ_FINALIZE_ITERS")
	}
	a := startAgent(t, opt)
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	app := testenv.Bin(t, "mpi_allreduce")
	hangs, ckpts := 0, 0
	var exits []time.Duration
	for i := 1; i <= runs; i++ {
		name := fmt.Sprintf("fin%d", i)
		run := a.startCruz(u, dir, "run", "--name", name, "--np", "4", "--interval", interval,
			"--", app, "--finalize-grace", "0", fmt.Sprint(iters), "100")
		run.waitOutput(t, "result ", 3*time.Minute)
		resultAt := time.Now()
		n := countKind(a.events(u, name), "checkpoint")
		ckpts += n
		select {
		case <-run.done:
			took := time.Since(resultAt)
			exits = append(exits, took)
			require.Equal(t, 0, run.code, "run %d: stderr:\n%s", i, run.stderr.String())
			t.Logf("run %d: ended %s after its result, %d checkpoints", i, took.Round(10*time.Millisecond), n)
		case <-time.After(finalizeHangAfter):
			hangs++
			t.Logf("run %d: HUNG: no exit %s after its result (%d checkpoints); where the ranks are:\n%s",
				i, finalizeHangAfter, n, a.whereRanks(name))
			r := a.cruz(u, "", "rm", name)
			require.Equal(t, 0, r.Code, "cruz rm %s: %s", name, r.Stderr)
			run.wait(t, time.Minute)
		}
	}
	t.Logf("SUMMARY interval=%s mpi.env=%q runs=%d hangs=%d checkpoints=%d (%.1f per run) exits after result: %v",
		interval, os.Getenv("CRUZ_FINALIZE_MPI_ENV"), runs, hangs, ckpts, float64(ckpts)/float64(runs), exits)
	require.Zero(t, hangs, "runs hung in MPI_Finalize")
}

// whereRanks describes, for a hung job, each rank process: its state, its
// kernel wait channel, its CPU time, a gdb backtrace and the TCP sockets of
// its pod (ss, with their queues).
func (a *agent) whereRanks(job string) string {
	var b strings.Builder
	for _, pid := range a.ownPodProcesses() {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) != "mpi_allreduce" {
			continue
		}
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		f := strings.Fields(string(stat))
		state, utime := "?", "?"
		if len(f) > 14 {
			state, utime = f[2], f[13]+"+"+f[14]
		}
		fmt.Fprintf(&b, "--- rank pid %d state %s wchan %s cpu ticks %s\n", pid, state, wchan, utime)
		bt, _ := exec.Command("gdb", "-p", fmt.Sprint(pid), "-batch", "-nx", "-ex", "thread apply all bt 12").CombinedOutput()
		for _, l := range strings.Split(string(bt), "\n") {
			if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "Thread") {
				b.WriteString("  " + l + "\n")
			}
		}
		ss, _ := exec.Command("nsenter", "--net="+filepath.Join("/proc", fmt.Sprint(pid), "ns", "net"), "ss", "-tanp").CombinedOutput()
		b.WriteString(string(ss))
	}
	return b.String()
}

package e2e

// The check-to-open race of a restore (issue 11.1): the agent checks the
// paths of the images as the job's owner before CRIU runs, but CRIU, as
// root, opens them again afterwards. A user who swaps a file for a link to
// root's file in between must not get root's file in the restored job: the
// agent looks at what the restored processes really hold before they run.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/testenv"
)

// swapSub, for the perl scripts below, swaps the names f and its link
// (f.lnk) atomically: renameat2(RENAME_EXCHANGE), syscall 316 on x86_64.
// Neither file's name is ever removed, so the path always exists and a
// process holding the real file never holds a deleted one (which CRIU
// could not dump again).
const swapSub = `my ($f, $l) = ($ARGV[0], "$ARGV[0].lnk");
sub swap { my ($x, $y) = ($f, $l); syscall(316, -100, $x, -100, $y, 2) == 0 or die "renameat2: $!"; }
`

// swapAfterPutBack waits until the agent has put the job's file back
// (RestoreFiles truncates it: its ctime changes), which is after both of
// the agent's path checks, then swaps f for the link once, at once: CRIU
// opens the path after that. It gives up after 60 s.
const swapAfterPutBack = swapSub + `use Time::HiRes qw(stat sleep time);
my $c0 = (stat $f)[10];
my $end = time + 60;
while ((stat $f)[10] == $c0) { exit 2 if time > $end; sleep 0.0005; }
swap();
print "swapped\n";`

// swapLoop flips f between the real file and the link every 2 ms, for at
// most 120 s.
const swapLoop = swapSub + `use Time::HiRes qw(sleep time);
my $end = time + 120;
while (time < $end) { swap(); sleep 0.002; }`

// swapBack makes f the real file again (the swapper is stopped).
const swapBack = swapSub + `swap() if -l $f;`

// perlAs is a perl script run as u with f as its argument.
func perlAs(u testenv.User, f, script string) *exec.Cmd {
	cmd := testenv.RunAs(u, "/usr/bin/perl", "-e", script, f)
	cmd.Dir = "/"
	return cmd
}

// startSwapper starts a perl script as u on f; stop kills it and waits.
func startSwapper(t *testing.T, u testenv.User, f, script string) (out *syncBuffer, stop func()) {
	t.Helper()
	cmd := perlAs(u, f, script)
	out = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = sync.OnceFunc(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	t.Cleanup(stop)
	return out, stop
}

// TestRestoreSwapRaceRefused: cruzt1's plain job holds ~/f open for
// appending and is checkpointed (--stop). Then cruzt1 swaps f for a link to
// a root-owned 0644 file of the same size while `cruz restart` runs:
//   - once right after the agent's checks passed, before CRIU opens f: the
//     restore is refused by the check of what the restored process holds,
//     naming root's file;
//   - then 8 times with a loop that flips f every 2 ms: each restart is
//     either refused with an error naming the file, or the restored job
//     holds cruzt1's own file as its fd 3.
//
// Root's file is never changed, and in the end the job, restarted with f
// left alone, appends to its own file and ends.
func TestRestoreSwapRaceRefused(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	f := filepath.Join(dir, "f")
	_, target, _ := rootSecret(t)
	const rootContent = "root's-xyz\n" // as long as f: CRIU's size check passes
	require.NoError(t, os.WriteFile(target, []byte(rootContent), 0o644))
	require.NoError(t, os.Chmod(target, 0o644))
	r := runAs(t, u, "/bin/sh", "-c", `umask 022; printf 'cruzt1 own\n' > "$1" && ln -s "$2" "$1.lnk"`, "sh", f, target)
	require.Equal(t, 0, r.Code, r.Stderr)
	var realSt, targetSt unix.Stat_t
	require.NoError(t, unix.Stat(f, &realSt))
	require.NoError(t, unix.Stat(target, &targetSt))
	rootUntouched := func() {
		t.Helper()
		b, err := os.ReadFile(target)
		require.NoError(t, err)
		require.Equal(t, rootContent, string(b), "the root-owned file is untouched")
	}
	perl := func(script string) *exec.Cmd { return perlAs(u, f, script) }
	// putBack makes f cruzt1's file again (the swapper is stopped).
	putBack := func() {
		t.Helper()
		r := runCommand(t, perl(swapBack), time.Minute)
		require.Equal(t, 0, r.Code, r.Stderr)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(f, &st))
		require.Equal(t, realSt.Ino, st.Ino, "f is cruzt1's file again")
	}
	swapper := func(script string) (*syncBuffer, func()) { return startSwapper(t, u, f, script) }

	ck, res := stopFileHolder(t, a, u, dir, "racer")

	// The swap lands between the agent's checks and CRIU's open.
	held := fmt.Sprintf("restored pod holds %s opened for writing, which %s may not write", target, u.Name)
	out, stop := swapper(swapAfterPutBack)
	start := time.Now()
	r = a.cruz(u, dir, "restart", "racer")
	stop()
	t.Logf("directed swap: restart refused in %s; swapper said %q", time.Since(start).Round(time.Millisecond), out.String())
	require.Equal(t, "swapped\n", out.String(), "the swap happened after the agent put f back")
	require.Equal(t, 1, r.Code, "stdout %q stderr %q", r.Stdout, r.Stderr)
	require.Contains(t, r.Stderr, held)
	assert.Contains(t, r.Stderr, "put back the file the job had")
	rootUntouched()
	j := a.status(u, "racer")
	assert.Equal(t, api.StateStopped, j.State)
	assert.Equal(t, ck, j.LastCheckpoint)
	a.requireNoLeaks()
	putBack()

	// Swaps at random moments: refused (naming f or, when CRIU got root's
	// file, naming that) or restored with cruzt1's own file.
	tally := map[string]int{}
	for i := 0; i < 8; i++ {
		out, stop := swapper(swapLoop)
		restart := a.startCruz(u, dir, "restart", "racer")
		outcome := ""
		deadline := time.Now().Add(60 * time.Second)
		for outcome == "" {
			require.True(t, time.Now().Before(deadline), "restart %d neither refused nor running within 60s: %s", i, restart.stderr.String())
			select {
			case <-restart.done:
				outcome = "refused"
			case <-time.After(50 * time.Millisecond):
				if a.status(u, "racer").State == api.StateRunning {
					outcome = "restored"
				}
			}
		}
		stop()
		require.Empty(t, strings.TrimSpace(out.String()), "the swap loop failed")
		switch outcome {
		case "refused":
			res := restart.wait(t, time.Second)
			require.Equal(t, 1, res.Code, "restart %d: stdout %q stderr %q", i, res.Stdout, res.Stderr)
			switch {
			case strings.Contains(res.Stderr, held):
				outcome = "refused after CRIU (what the process holds)"
			case strings.Contains(res.Stderr, "cannot open "+f+" "):
				outcome = "refused before CRIU (path check)"
			case strings.Contains(res.Stderr, "cannot open "+f+", a file the job wrote"):
				outcome = "refused before CRIU (putting f back)"
			default:
				t.Fatalf("restart %d refused without naming %s or %s:\n%s", i, f, target, res.Stderr)
			}
			j := a.status(u, "racer")
			require.Equal(t, api.StateStopped, j.State)
			a.requireNoLeaks()
		case "restored":
			j := a.status(u, "racer")
			require.Len(t, j.Pods, 1)
			var st unix.Stat_t
			require.NoError(t, unix.Stat(fmt.Sprintf("/proc/%d/fd/3", j.Pods[0].PID), &st))
			require.False(t, st.Dev == targetSt.Dev && st.Ino == targetSt.Ino, "restart %d: the restored job holds root's file", i)
			require.Equal(t, [2]uint64{realSt.Dev, realSt.Ino}, [2]uint64{st.Dev, st.Ino}, "restart %d: the restored job holds its own file", i)
			putBack()
			a.checkpoint(u, "racer", "--stop")
			res := restart.wait(t, 30*time.Second)
			require.Equal(t, 75, res.Code, "stderr:\n%s", res.Stderr)
		}
		tally[outcome]++
		putBack()
		rootUntouched()
	}
	t.Logf("8 restarts under a swap loop: %v", tally)

	// f left alone: the job comes back with its own file and ends.
	restart := a.startCruz(u, dir, "restart", "racer")
	deadline := time.Now().Add(30 * time.Second)
	for a.status(u, "racer").State != api.StateRunning {
		require.True(t, time.Now().Before(deadline), "the job was not running again within 30s: %s", restart.stderr.String())
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o644))
	res = restart.wait(t, 30*time.Second)
	require.Equal(t, 0, res.Code, "stderr:\n%s", res.Stderr)
	assert.Equal(t, "wrote\n", res.Stdout)
	b, err := os.ReadFile(f)
	require.NoError(t, err)
	assert.Equal(t, "cruzt1 own\nappended\n", string(b))
	rootUntouched()
	a.requireNoLeaks()
	var checks []string
	for _, l := range strings.Split(a.log(), "\n") {
		if strings.Contains(l, "restored pod's files checked") {
			if _, took, ok := strings.Cut(l, "took="); ok {
				checks = append(checks, strings.Fields(took)[0])
			}
		}
	}
	t.Logf("the agent checked the restored pod's files %d times, taking %v", len(checks), checks)
}

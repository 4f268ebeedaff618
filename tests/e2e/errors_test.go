package e2e

// What a user or an operator sees when something is wrong: cruzd refusing to
// start (no CRIU, an old CRIU, a bad config), and the cruz CLI refusing
// requests that cannot be done (unknown jobs, bad arguments, corrupted
// checkpoints, checkpoints of jobs that are not running). Every test checks
// the exit status and that the message names the problem.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// directCruzdConfig is a complete cruzd config whose socket, run dir, key,
// bridge and store are all private to dir, so that a cruzd started with it
// cannot touch anything outside dir but its own bridge.
func directCruzdConfig(dir, bridge, criuPath string) string {
	return fmt.Sprintf(`version = 1
[agent]
socket = %q
run_dir = %q
key_file = %q
[network]
bridge = %q
subnet = "10.219.%d.0/24"
[store]
dir = %q
[criu]
path = %q
`, filepath.Join(dir, "run", "cruzd.sock"), filepath.Join(dir, "run"), filepath.Join(dir, "key", "cluster.key"),
		bridge, 1+agentSeq.Load()%250, filepath.Join(dir, "store"), criuPath)
}

// directBridge is a bridge name for a cruzd that a test runs itself; it
// differs from the harness's (cze...) so that both can coexist.
func directBridge() string {
	b := fmt.Sprintf("czd%d_%d", os.Getpid()%10000, agentSeq.Add(1))
	if len(b) > 15 {
		b = b[:15]
	}
	return b
}

// runCruzdDirect runs the cruzd binary (not through startAgent) with the
// config file text and returns how it ended and how long it took. A cruzd
// that is still running after 30s is killed and the test fails: every use
// here expects cruzd to refuse to start. Whatever it made (its bridge, its
// netns mount point) is removed when the test ends.
func runCruzdDirect(t *testing.T, dir, bridge, config string) (result, time.Duration) {
	t.Helper()
	path := filepath.Join(dir, "cruzd.toml")
	require.NoError(t, os.WriteFile(path, []byte(config), 0o644))
	t.Cleanup(func() {
		_ = unix.Unmount(filepath.Join(dir, "run", "netns"), unix.MNT_DETACH)
		if bridge != "" {
			_ = exec.Command("ip", "link", "del", bridge).Run()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Bin(t, "cruzd"), "--config", path)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	took := time.Since(t0)
	require.NoError(t, ctx.Err(), "cruzd was still running after 30s; it should have refused to start. stderr:\n%s", stderr.String())
	res := result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.Code = ee.ExitCode()
	} else {
		require.NoError(t, err, "run cruzd")
	}
	return res, took
}

// requireNoBridge checks that a cruzd that refused to start left no bridge.
func requireNoBridge(t *testing.T, bridge string) {
	t.Helper()
	err := exec.Command("ip", "link", "show", bridge).Run()
	assert.Error(t, err, "cruzd refused to start but created bridge %s", bridge)
}

// TestAgentRefusesMissingCRIU: with criu.path pointing at nothing, cruzd
// stops at once and says where it looked and how to get CRIU.
func TestAgentRefusesMissingCRIU(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	bridge := directBridge()
	missing := filepath.Join(dir, "no", "such", "criu")
	r, took := runCruzdDirect(t, dir, bridge, directCruzdConfig(dir, bridge, missing))
	assert.NotEqual(t, 0, r.Code, "cruzd must fail without CRIU; stderr:\n%s", r.Stderr)
	assert.Less(t, took, 10*time.Second, "cruzd must give up at once without CRIU")
	assert.Contains(t, r.Stderr, missing, "the message names the path it tried")
	assert.Contains(t, r.Stderr, "CRIU >= 4.2")
	assert.Contains(t, r.Stderr, "make deps")
	requireNoBridge(t, bridge)
	_, err := os.Stat(filepath.Join(dir, "run", "cruzd.sock"))
	assert.True(t, os.IsNotExist(err), "no socket is left by a cruzd that refused to start")
}

// findGo returns the go command, or skips the test loudly.
func findGo(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go"
	}
	t.Skipf("NOT RUN: the go command is not on PATH (nor /usr/local/go/bin/go); it builds the fake CRIU: run `make test`")
	return ""
}

// TestAgentRefusesOldCRIU: a CRIU that reports version 3.17.1 over CRIU's
// RPC (tests/fakecriu, a test double) is refused, naming both versions.
func TestAgentRefusesOldCRIU(t *testing.T) {
	testenv.RequireRoot(t)
	goCmd := findGo(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "criu")
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	build := exec.Command(goCmd, "build", "-o", fake, "./tests/fakecriu")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./tests/fakecriu:\n%s", out)
	out, err = exec.Command(fake, "--version").CombinedOutput()
	require.NoError(t, err)
	require.Contains(t, string(out), "3.17.1", "the fake CRIU claims to be 3.17.1")

	bridge := directBridge()
	r, took := runCruzdDirect(t, dir, bridge, directCruzdConfig(dir, bridge, fake))
	assert.NotEqual(t, 0, r.Code, "cruzd must refuse CRIU 3.17.1; stderr:\n%s", r.Stderr)
	assert.Less(t, took, 10*time.Second)
	assert.Contains(t, r.Stderr, "3.17.1", "the message names the version found")
	assert.Contains(t, r.Stderr, "4.2", "the message names the version needed")
	assert.Contains(t, r.Stderr, fake, "the message names the CRIU it asked")
	requireNoBridge(t, bridge)
}

// TestAgentRejectsBadConfig: mistakes in the config file stop cruzd with
// exit status 2 and a message naming the key, before it touches anything.
func TestAgentRejectsBadConfig(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		name string
		edit func(cfg string) string
		says []string
	}{
		{"unknown key", func(c string) string {
			return strings.Replace(c, "[agent]\n", "[agent]\nsockett = \"/x\"\n", 1)
		}, []string{"unknown key agent.sockett", "did you mean agent.socket?"}},
		{"bad subnet", func(c string) string {
			return regexp.MustCompile(`subnet = ".*"`).ReplaceAllString(c, `subnet = "10.0.0.0/33"`)
		}, []string{"network.subnet", `"10.0.0.0/33"`, "prefix length"}},
		{"missing version", func(c string) string {
			return strings.Replace(c, "version = 1\n", "", 1)
		}, []string{"version is missing", "version = 1"}},
		{"every problem at once", func(c string) string {
			c = strings.Replace(c, "[agent]\n", "[agent]\nsockett = \"/x\"\n", 1)
			return regexp.MustCompile(`subnet = ".*"`).ReplaceAllString(c, `subnet = "10.0.0.0/33"`)
		}, []string{"agent.sockett", "network.subnet"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := t.TempDir()
			bridge := directBridge()
			// criu.path is never reached: the config is checked first.
			cfg := tc.edit(directCruzdConfig(dir, bridge, "criu"))
			r, took := runCruzdDirect(t, dir, bridge, cfg)
			assert.Equal(t, 2, r.Code, "a bad config is a usage error (exit 2); stderr:\n%s", r.Stderr)
			assert.Less(t, took, 10*time.Second)
			assert.Contains(t, r.Stderr, filepath.Join(dir, "cruzd.toml"), "the message names the file")
			for _, s := range tc.says {
				assert.Contains(t, r.Stderr, s)
			}
			requireNoBridge(t, bridge)
		})
	}
}

// TestUnknownJob: every command on a job that does not exist fails with
// exit status 1 and says so.
func TestUnknownJob(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	for _, args := range [][]string{
		{"checkpoint", "nosuchjob"},
		{"checkpoint", "--stop", "nosuchjob"},
		{"restart", "nosuchjob"},
		{"restart", "--checkpoint", "ckpt-0001", "nosuchjob"},
		{"status", "nosuchjob"},
		{"checkpoints", "nosuchjob"},
		{"attach", "nosuchjob"},
		{"signal", "nosuchjob", "TERM"},
		{"rm", "nosuchjob"},
	} {
		r := a.cruz(u, "", args...)
		assert.Equal(t, 1, r.Code, "cruz %v: stdout %q stderr %q", args, r.Stdout, r.Stderr)
		assert.Contains(t, r.Stderr, `job "nosuchjob" does not exist`, "cruz %v", args)
		assert.Empty(t, r.Stdout, "cruz %v prints nothing on stdout", args)
	}
}

// stoppedCounterJob runs counter as u, stops it with a checkpoint once it
// printed a few lines, and returns the job id and the checkpoint id.
func stoppedCounterJob(t *testing.T, a *agent, u testenv.User, dir, name string) (string, string) {
	t.Helper()
	run := a.startCruz(u, dir, "run", "--plain", "--name", name, "--", testenv.Bin(t, "counter"), "1000", "20")
	run.waitOutput(t, "line 3\n", 30*time.Second)
	id := a.status(u, name).ID
	ck := a.checkpoint(u, id, "--stop")
	r := run.wait(t, 30*time.Second)
	require.Equal(t, 75, r.Code, "cruz run ends with 75 when a checkpoint stops the job; stderr:\n%s", r.Stderr)
	require.Equal(t, api.StateStopped, a.status(u, id).State)
	return id, ck
}

// TestBadCLIInput: malformed requests get a usage error (exit 2) or a
// refusal (exit 1) that says what is wrong and what would be accepted.
func TestBadCLIInput(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)

	r := a.cruz(u, dir, "run", "--np", "0", "--", "x")
	assert.NotEqual(t, 0, r.Code, "stderr: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "--np 0 is out of range")
	assert.Contains(t, r.Stderr, "from 1 to")

	for _, args := range [][]string{{"run"}, {"run", "--"}, {"run", "--np", "2"}} {
		r = a.cruz(u, dir, args...)
		assert.Equal(t, 2, r.Code, "cruz %v is a usage error; stderr: %s", args, r.Stderr)
		assert.Contains(t, r.Stderr, "usage: cruz run", "cruz %v", args)
	}
	r = a.cruz(u, dir, "frobnicate")
	assert.Equal(t, 2, r.Code)
	assert.Contains(t, r.Stderr, `unknown command "frobnicate"`)

	// Nothing was started by the refused runs.
	r = a.cruz(u, "", "status", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, `"jobs": []`, "no job was created by a refused run")

	id, ck := stoppedCounterJob(t, a, u, dir, "stopme")
	require.Equal(t, "ckpt-0001", ck)

	r = a.cruz(u, dir, "restart", "--checkpoint", "ckpt-9999", id)
	assert.Equal(t, 1, r.Code, "stderr: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "ckpt-9999")
	assert.Contains(t, r.Stderr, "no such checkpoint")
	assert.Contains(t, r.Stderr, "cruz checkpoints "+id, "the message says how to list the checkpoints")

	r = a.cruz(u, dir, "restart", "--checkpoint", "latest", id)
	assert.Equal(t, 1, r.Code, "stderr: %s", r.Stderr)
	assert.Contains(t, r.Stderr, `"latest"`)
	assert.Contains(t, r.Stderr, "ckpt-NNNN")

	r = a.cruz(u, dir, "signal", id, "NOPE")
	assert.Equal(t, 2, r.Code, "stderr: %s", r.Stderr)
	assert.Contains(t, r.Stderr, `unknown signal "NOPE"`)
	for _, name := range []string{"TERM", "KILL", "INT", "USR1", "HUP"} {
		assert.Contains(t, r.Stderr, name, "the message lists the valid signal names")
	}
	r = a.cruz(u, dir, "signal", id)
	assert.Equal(t, 2, r.Code)
	assert.Contains(t, r.Stderr, "usage: cruz signal JOB SIGNAL")

	// A stopped job has no process to signal, and is not checkpointed.
	r = a.cruz(u, dir, "signal", id, "TERM")
	assert.Equal(t, 1, r.Code, "stderr: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "stopped")
	assert.Contains(t, r.Stderr, "no process to signal")

	// The refusals changed nothing: the job is still stopped at ck.
	j := a.status(u, id)
	assert.Equal(t, api.StateStopped, j.State)
	assert.Equal(t, ck, j.LastCheckpoint)
	a.requireNoLeaks()
}

// flipByte inverts one byte in the middle of path.
func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	require.NotZero(t, st.Size(), "%s is empty", path)
	b := make([]byte, 1)
	off := st.Size() / 2
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

// largestFile returns the largest file in dir whose name matches glob.
func largestFile(t *testing.T, dir, glob string) string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, glob))
	require.NoError(t, err)
	require.NotEmpty(t, matches, "no %s in %s", glob, dir)
	best, size := "", int64(-1)
	for _, m := range matches {
		st, err := os.Stat(m)
		require.NoError(t, err)
		if st.Size() > size {
			best, size = m, st.Size()
		}
	}
	return best
}

// counterFrom checks that lines are "line s" .. "line last" in order and
// returns s.
func counterFrom(t *testing.T, lines []string, last int) int {
	t.Helper()
	require.NotEmpty(t, lines)
	var s int
	_, err := fmt.Sscanf(lines[0], "line %d", &s)
	require.NoError(t, err, "first line %q", lines[0])
	want := make([]string, 0, last-s+1)
	for i := s; i <= last; i++ {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	require.Equal(t, want, lines, "the output runs on, line by line, from line %d to line %d", s, last)
	return s
}

// TestCorruptCheckpointRefused: a checkpoint whose images were altered, or
// lost a file, is never restored: asked for by id it is refused with a
// message that names it, the file and the problem, and the job stays as it
// was; without an id cruz restart says it skips it and restores the newest
// good checkpoint instead, from which the job runs on to its normal end.
func TestCorruptCheckpointRefused(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	const last = 100

	run := a.startCruz(u, dir, "run", "--plain", "--name", "cnt", "--", testenv.Bin(t, "counter"), fmt.Sprint(last), "50")
	run.waitOutput(t, "line 5\n", 30*time.Second)
	id := a.status(u, "cnt").ID
	before := strings.Count(run.stdout.String(), "\n")
	ckA := a.checkpoint(u, id)
	time.Sleep(time.Second) // let what A's process printed reach the client
	after := strings.Count(run.stdout.String(), "\n")
	// Far enough past A that restoring A is told apart from restoring B.
	run.waitOutput(t, fmt.Sprintf("line %d\n", after+15), 30*time.Second)
	ckB := a.checkpoint(u, id, "--stop")
	first := run.wait(t, 30*time.Second)
	require.Equal(t, 75, first.Code, "stderr: %s", first.Stderr)
	atB := len(check.Lines(first.Stdout))
	require.Equal(t, api.StateStopped, a.status(u, id).State)
	pod := id + "-main"

	// (a) One flipped byte in B's memory pages.
	pages := largestFile(t, filepath.Join(a.store, id, ckB, pod), "pages-*.img")
	flipByte(t, pages)
	rel := pod + "/" + filepath.Base(pages)
	r := a.cruz(u, dir, "restart", "--checkpoint", ckB, id)
	assert.Equal(t, 1, r.Code, "restoring a corrupted checkpoint fails; stdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
	assert.Contains(t, r.Stderr, "checkpoint "+ckB)
	assert.Contains(t, r.Stderr, rel, "the message names the altered file")
	assert.Contains(t, r.Stderr, "altered or corrupted")
	assert.Empty(t, r.Stdout, "nothing of the job ran")
	j := a.status(u, id)
	assert.Equal(t, api.StateStopped, j.State, "a refused restart leaves the job stopped")
	a.requireNoLeaks()

	// (b) Without --checkpoint: B is skipped, with a word, and A restored.
	r = a.cruz(u, dir, "restart", id)
	require.Equal(t, 0, r.Code, "restart from %s: stderr:\n%s", ckA, r.Stderr)
	assert.Contains(t, r.Stderr, "skipping checkpoint", "the user is told that a checkpoint was skipped")
	assert.Contains(t, r.Stderr, ckB)
	assert.Contains(t, r.Stderr, rel)
	s := counterFrom(t, check.Lines(r.Stdout), last)
	assert.GreaterOrEqual(t, s-1, before, "restored from %s, taken after line %d was printed", ckA, before)
	assert.LessOrEqual(t, s-1, after, "restored from %s, taken before line %d was printed", ckA, after+1)
	assert.Less(t, s-1, atB, "not restored from %s (taken at line %d)", ckB, atB)
	assert.Equal(t, api.StateExited, a.status(u, id).State)
	a.requireNoLeaks()

	// (c) A lost one of its files: refused by id, and no checkpoint of the
	// job is left to restart from.
	victim := filepath.Join(a.store, id, ckA, pod, "inventory.img")
	require.NoError(t, os.Remove(victim))
	r = a.cruz(u, dir, "restart", "--checkpoint", ckA, id)
	assert.Equal(t, 1, r.Code, "stderr: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "checkpoint "+ckA)
	assert.Contains(t, r.Stderr, pod+"/inventory.img", "the message names the missing file")
	assert.Contains(t, r.Stderr, "missing")
	r = a.cruz(u, dir, "restart", id)
	assert.Equal(t, 1, r.Code, "stderr: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "none of its 2 checkpoints verifies")
	assert.Contains(t, r.Stderr, ckA)
	assert.Contains(t, r.Stderr, ckB)
	assert.Equal(t, api.StateExited, a.status(u, id).State)
	a.requireNoLeaks()
}

// TestCheckpointOfFinishedJob: a job that has ended cannot be checkpointed,
// and the refusal says why.
func TestCheckpointOfFinishedJob(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	r := a.cruz(u, dir, "run", "--plain", "--name", "short", "--", testenv.Bin(t, "counter"), "3", "10")
	require.Equal(t, 0, r.Code, "stderr: %s", r.Stderr)
	require.Equal(t, []string{"line 1", "line 2", "line 3"}, check.Lines(r.Stdout))
	id := a.status(u, "short").ID
	require.Equal(t, api.StateExited, a.status(u, id).State)
	for _, args := range [][]string{{"checkpoint", id}, {"checkpoint", "--stop", id}} {
		r = a.cruz(u, dir, args...)
		assert.Equal(t, 1, r.Code, "cruz %v: stderr: %s", args, r.Stderr)
		assert.Contains(t, r.Stderr, "job "+id+" is exited, not running", "cruz %v", args)
		assert.Contains(t, r.Stderr, "only a running job can be checkpointed")
	}
	r = a.cruz(u, dir, "checkpoints", "--json", id)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, `"checkpoints": []`, "the refused checkpoints left nothing behind")
	r = a.cruz(u, dir, "restart", id)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "has no checkpoints")
	a.requireNoLeaks()
}

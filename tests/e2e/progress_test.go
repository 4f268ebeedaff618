package e2e

import (
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckpointProgressAndReport: cruz checkpoint --json streams the
// checkpoint's phases as JSON lines on stderr (block, dump with the pods
// done, resume, commit, done with the checkpoint's bytes) and ends with the
// checkpoint on stdout; without --json and a terminal, plain lines. Then
// cruz report prints the job's checkpoints and writes a valid PNG of the
// size asked for, as the user. A stop-checkpoint and a restart, which shows
// the restore's progress; the job ends right.
func TestCheckpointProgressAndReport(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	// 300 lines 50 ms apart: room for three checkpoints and a report on a
	// busy machine before the job ends.
	const n = 300
	run := a.startCruz(u, dir, "run", "--plain", "--name", "prog", "--interval", "off", "--", testenv.Bin(t, "counter"), fmt.Sprint(n), "50")
	run.waitOutput(t, "line 3\n", 30*time.Second)

	r := a.cruz(u, "", "checkpoint", "--json", "prog")
	require.Equal(t, 0, r.Code, r.Stderr)
	var ck api.Checkpoint
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &ck), "stdout holds the checkpoint alone: %s", r.Stdout)
	require.Regexp(t, `^ckpt-\d{4}$`, ck.ID)
	var phases []string
	var last api.Progress
	dumped := 0
	for _, l := range check.NonEmptyLines(r.Stderr) {
		var f api.Frame
		require.NoError(t, json.Unmarshal([]byte(l), &f), "every stderr line is JSON: %q", l)
		require.NotNil(t, f.Progress, "a progress frame: %q", l)
		p := *f.Progress
		assert.Equal(t, "checkpoint", p.Op)
		assert.Equal(t, 1, p.Pods)
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		if p.Phase == "dump" {
			dumped = max(dumped, p.PodsDone)
		}
		last = p
	}
	assert.Equal(t, []string{"block", "dump", "resume", "commit", "done"}, phases, "stderr:\n%s", r.Stderr)
	assert.Equal(t, 1, dumped, "the pod was counted once dumped")
	assert.Equal(t, ck.Bytes, last.Bytes, "the last line has the checkpoint's bytes")
	t.Logf("progress of %s (%d bytes):\n%s", ck.ID, ck.Bytes, r.Stderr)

	plain := a.cruz(u, "", "checkpoint", "prog")
	require.Equal(t, 0, plain.Code, plain.Stderr)
	id2 := strings.TrimSpace(plain.Stdout)
	require.Regexp(t, `^ckpt-\d{4}$`, id2, "stdout holds the id alone")
	lines := check.NonEmptyLines(plain.Stderr)
	require.NotEmpty(t, lines)
	job := a.status(u, "prog").ID
	assert.True(t, strings.HasPrefix(lines[0], "checkpoint "+job+": block, "), "plain lines when not a terminal: %q", plain.Stderr)
	assert.True(t, strings.HasPrefix(lines[len(lines)-1], "checkpoint "+job+": done, "), "%q", plain.Stderr)
	assert.Contains(t, plain.Stderr, "dump 1/1 pods")

	// cruz report: the table, and the PNG in the working directory.
	bad := a.cruz(u, dir, "report", "--size", "10x10", "prog")
	assert.Equal(t, 2, bad.Code, "a bad --size is a usage error: %s", bad.Stderr)
	assert.Contains(t, bad.Stderr, `--size "10x10" is not WIDTHxHEIGHT in pixels`)
	rep := a.cruz(u, dir, "report", "--size", "800x500", "prog")
	require.Equal(t, 0, rep.Code, rep.Stderr)
	assert.Contains(t, rep.Stdout, "2 checkpoints: held the job")
	for _, id := range []string{ck.ID, id2} {
		assert.Regexp(t, `(?m)^\S+ \S+\s+checkpoint\s+`+id+`\s+\d+ms`, rep.Stdout)
	}
	path := filepath.Join(dir, job+"-report.png")
	assert.Contains(t, rep.Stdout, "wrote "+job+"-report.png")
	f, err := os.Open(path)
	require.NoError(t, err, "report:\n%s", rep.Stdout)
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	require.NoError(t, err, "a valid PNG")
	assert.Equal(t, [2]int{800, 500}, [2]int{cfg.Width, cfg.Height})
	fi, err := f.Stat()
	require.NoError(t, err)
	assert.Equal(t, u.UID, fi.Sys().(*syscall.Stat_t).Uid, "written by the user's cruz, as the user")
	t.Logf("report:\n%s", rep.Stdout)

	// A restart shows the restore's progress on stderr before the job's
	// output.
	a.checkpoint(u, "prog", "--stop")
	first := run.wait(t, time.Minute)
	require.Equal(t, 75, first.Code, first.Stderr)
	rest := a.cruz(u, dir, "restart", "prog")
	require.Equal(t, 0, rest.Code, rest.Stderr)
	assert.Contains(t, rest.Stderr, "restart "+job+": restore 0/1 pods")
	assert.Contains(t, rest.Stderr, "restart "+job+": done")
	t.Logf("restart's stderr:\n%s", rest.Stderr)
	assert.Equal(t, check.CounterLines(1, n), append(check.NonEmptyLines(first.Stdout), check.NonEmptyLines(rest.Stdout)...))
	a.requireNoLeaks()
}

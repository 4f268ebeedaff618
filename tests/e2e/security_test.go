package e2e

// Isolation between users and from the node: a user can neither see nor act
// on another user's jobs, nor read their checkpoints, nor alter their own;
// a pod runs as its user without privileges and sees only its own
// processes. Root sees and may act on every job.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/store"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cruzAsRoot runs the cruz CLI as root (the test process itself) against a.
func (a *agent) cruzAsRoot(args ...string) result {
	a.t.Helper()
	cmd := exec.Command(testenv.Bin(a.t, "cruz"), args...)
	cmd.Env = append(os.Environ(), "CRUZ_SOCKET="+a.socket)
	return runCommand(a.t, cmd, 2*time.Minute)
}

// runAs runs name as u and returns its output.
func runAs(t *testing.T, u testenv.User, name string, args ...string) result {
	t.Helper()
	cmd := testenv.RunAs(u, name, args...)
	cmd.Dir = "/"
	return runCommand(t, cmd, time.Minute)
}

// TestOtherUserCannotActOnJob: cruzt2 is refused every command on cruzt1's
// job, with a message saying whose it is, and does not see it in its list;
// the job runs on untouched. Root sees it and may checkpoint it.
func TestOtherUserCannotActOnJob(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u1 := testenv.LookupUser(t, "cruzt1")
	u2 := testenv.LookupUser(t, "cruzt2")
	dir := testenv.TempDirFor(t, u1)
	const last = 200

	run := a.startCruz(u1, dir, "run", "--plain", "--name", "mine", "--", testenv.Bin(t, "counter"), fmt.Sprint(last), "30")
	run.waitOutput(t, "line 3\n", 30*time.Second)
	id := a.status(u1, "mine").ID

	for _, args := range [][]string{
		{"status", id},
		{"status", "--json", id},
		{"checkpoint", id},
		{"checkpoint", "--stop", id},
		{"checkpoints", id},
		{"restart", id},
		{"restart", "--checkpoint", "ckpt-0001", id},
		{"signal", id, "KILL"},
		{"signal", id, "TERM"},
		{"rm", id},
		{"rm", "--checkpoints", id},
		{"attach", id},
	} {
		r := a.cruz(u2, "", args...)
		assert.Equal(t, 1, r.Code, "cruzt2: cruz %v: stdout %q stderr %q", args, r.Stdout, r.Stderr)
		assert.Contains(t, r.Stderr, "job "+id+" belongs to user cruzt1", "cruzt2: cruz %v", args)
		assert.Contains(t, r.Stderr, "only on your own jobs", "cruzt2: cruz %v", args)
		assert.Empty(t, r.Stdout, "cruzt2: cruz %v shows nothing of the job", args)
	}
	// Job names are per user: cruzt2's "mine" is not cruzt1's.
	r := a.cruz(u2, "", "status", "mine")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, `job "mine" does not exist`)
	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		r = a.cruz(u2, "", args...)
		require.Equal(t, 0, r.Code, "cruzt2: cruz %v: %s", args, r.Stderr)
		assert.NotContains(t, r.Stdout, id, "cruzt2's job list does not show cruzt1's job")
		assert.NotContains(t, r.Stdout, "cruzt1")
	}
	r = a.cruz(u1, "", "status")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, id, "cruzt1 sees its own job")

	// Root sees every job, and may checkpoint it.
	r = a.cruzAsRoot("status", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, id)
	r = a.cruzAsRoot("status", "--json", id)
	require.Equal(t, 0, r.Code, r.Stderr)
	var j api.Job
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &j))
	assert.Equal(t, "cruzt1", j.User)
	assert.Equal(t, api.StateRunning, j.State)
	r = a.cruzAsRoot("checkpoint", id)
	require.Equal(t, 0, r.Code, "root checkpoints cruzt1's job: %s", r.Stderr)
	assert.Equal(t, "ckpt-0001", strings.TrimSpace(r.Stdout))

	// cruzt1's job ran on untouched, to its normal end.
	res := run.wait(t, time.Minute)
	require.Equal(t, 0, res.Code, "stderr: %s", res.Stderr)
	assert.Equal(t, check.CounterLines(1, last), check.Lines(res.Stdout))
	assert.Equal(t, "cruz: job "+id+" started\n", res.Stderr, "cruz run says only which job started")
	j = a.status(u1, id)
	assert.Equal(t, api.StateExited, j.State)
	assert.Equal(t, 1, j.Checkpoints, "the only checkpoint is root's")
	// The checkpoint root took is cruzt1's: it may list it.
	r = a.cruz(u1, "", "checkpoints", id)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "ckpt-0001")
	a.requireNoLeaks()
}

// TestCheckpointImagesNotReadableByOthers: a checkpoint's files are root's;
// its owner may read but not change them, and nobody else may read them.
func TestCheckpointImagesNotReadableByOthers(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u1 := testenv.LookupUser(t, "cruzt1")
	u2 := testenv.LookupUser(t, "cruzt2")
	dir := testenv.TempDirFor(t, u1)
	id, ck := stoppedCounterJob(t, a, u1, dir, "secret")
	jobDir := filepath.Join(a.store, id)
	ckDir := filepath.Join(jobDir, ck)
	manifest := filepath.Join(ckDir, "manifest.json")

	var files, dirs []string
	require.NoError(t, filepath.Walk(jobDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		assert.Zero(t, st.Uid, "%s is owned by root", p)
		assert.Zero(t, fi.Mode().Perm()&0o007, "%s gives others no access (mode %v)", p, fi.Mode())
		if fi.IsDir() {
			dirs = append(dirs, p)
		} else {
			files = append(files, p)
		}
		return nil
	}))
	require.Greater(t, len(files), 5, "the checkpoint has its images and manifest")

	// cruzt2 can read nothing of it, nor list it.
	r := runAs(t, u2, "cat", files...)
	assert.NotEqual(t, 0, r.Code)
	assert.Empty(t, r.Stdout, "cruzt2 read checkpoint data")
	for _, f := range files {
		assert.Contains(t, r.Stderr, f+": Permission denied", "cruzt2 cannot read %s", f)
	}
	for _, d := range dirs {
		r = runAs(t, u2, "ls", d)
		assert.NotEqual(t, 0, r.Code, "cruzt2 lists %s: %s", d, r.Stdout)
		assert.Contains(t, r.Stderr, "Permission denied", "cruzt2 cannot list %s", d)
	}

	// cruzt1 reads its manifest, and can change nothing.
	r = runAs(t, u1, "cat", manifest)
	require.Equal(t, 0, r.Code, "cruzt1 reads its own manifest: %s", r.Stderr)
	var m store.Manifest
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &m))
	assert.Equal(t, ck, m.ID)
	assert.Equal(t, id, m.Job)
	assert.Equal(t, u1.UID, m.Owner.UID)
	for _, try := range []struct{ what, script string }{
		{"append to the manifest", `echo x >> "$1/manifest.json"`},
		{"truncate the manifest", `: > "$1/manifest.json"`},
		{"create a file in the checkpoint", `touch "$1/new"`},
		{"create a file in a pod image", `touch "$1/` + id + `-main/new"`},
		{"remove the manifest", `rm -f "$1/manifest.json"`},
		{"rename the checkpoint", `mv "$1" "$1.x"`},
		{"read the checkpoint counter", `cat "$1/../.seq"`},
		{"overwrite the job's owner record", `echo '{"uid":1002}' > "$1/../.owner"`},
		{"remove the job's owner record", `rm -f "$1/../.owner"`},
	} {
		r = runAs(t, u1, "/bin/sh", "-c", try.script, "sh", ckDir)
		assert.NotEqual(t, 0, r.Code, "cruzt1 could %s", try.what)
		assert.Contains(t, r.Stderr, "ermission denied", "cruzt1 tries to %s", try.what)
	}
	// The checkpoint is as it was taken.
	r = a.cruz(u1, "", "checkpoints", "--json", id)
	require.Equal(t, 0, r.Code, r.Stderr)
	var l api.CheckpointList
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &l))
	require.Len(t, l.Checkpoints, 1)
	assert.Empty(t, l.Problems)
	_, err := os.Stat(filepath.Join(ckDir, "new"))
	assert.True(t, os.IsNotExist(err))
	a.requireNoLeaks()
}

// TestPodsRunAsUserWithoutPrivilege: a pod's command runs as the job's user
// with no capabilities, as PID 1 of a pid namespace that holds nothing else
// but its children, on a host named after the pod.
func TestPodsRunAsUserWithoutPrivilege(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	script := `echo "uid=$(id -u) gid=$(id -g)"
grep -E '^Cap(Inh|Prm|Eff|Amb):' /proc/self/status
echo "host=$(hostname)"
echo "self=$$"
echo "pid1=$(tr '\0\n' '  ' </proc/1/cmdline)"
echo "procs=$(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
ps -e -o pid=,user=,comm=
`
	r := a.cruz(u, dir, "run", "--plain", "--name", "who", "--", "/bin/sh", "-c", script)
	require.Equal(t, 0, r.Code, "stdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
	j := a.status(u, "who")
	require.Len(t, j.Pods, 1)
	pod := j.Pods[0]
	out := r.Stdout
	field := func(key string) string {
		for _, l := range check.Lines(out) {
			if v, ok := strings.CutPrefix(l, key+"="); ok {
				return v
			}
		}
		t.Fatalf("no %s= line in the pod's output:\n%s", key, out)
		return ""
	}
	assert.Equal(t, fmt.Sprintf("%d gid=%d", u.UID, u.GID), field("uid"), "the pod runs as cruzt1")
	for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb"} {
		assert.Regexp(t, `(?m)^`+c+`:\s+0000000000000000$`, out, "the pod's process has no capabilities")
	}
	assert.Equal(t, pod.Name, field("host"), "the pod's hostname is the pod's name")
	assert.Equal(t, pod.Name, pod.Hostname)
	assert.Equal(t, "1", field("self"), "the command is PID 1 of the pod")
	assert.True(t, strings.HasPrefix(field("pid1"), "/bin/sh -c "), "PID 1 is the pod's command: %q", field("pid1"))

	// The pod sees its own processes only: sh and its children, all small
	// pids, all cruzt1's.
	var pids []int
	for _, f := range strings.Fields(field("procs")) {
		n, err := strconv.Atoi(f)
		require.NoError(t, err)
		pids = append(pids, n)
	}
	assert.Contains(t, pids, 1)
	assert.LessOrEqual(t, len(pids), 6, "the pod sees only its own few processes, not the node's: %v", pids)
	var ps []string
	for _, l := range check.Lines(out) {
		f := strings.Fields(l)
		if len(f) == 3 {
			if _, err := strconv.Atoi(f[0]); err == nil {
				ps = append(ps, l)
				assert.Equal(t, "cruzt1", f[1], "ps in the pod: %s", l)
				assert.Contains(t, []string{"sh", "ps"}, f[2], "ps in the pod shows only the pod's processes: %s", l)
			}
		}
	}
	assert.NotEmpty(t, ps, "ps ran in the pod")
	a.requireNoLeaks()
}

// TestForgedSlurmStepRefused: a user outside Slurm who sets the variables
// of a Slurm task by hand (those of step 777001.0, which is not theirs) is
// refused by the agent, which reads the step from the slurmstepd above the
// calling process instead; no job, pod or store directory of that step
// appears. (Before, this ran /bin/sleep as cruz job slurm-777001-0, taking
// that step's id and store directory.)
func TestForgedSlurmStepRefused(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	host, err := os.Hostname()
	require.NoError(t, err)
	cmd := testenv.RunAs(u, testenv.Bin(t, "cruz"), "5")
	cmd.Dir = testenv.TempDirFor(t, u)
	cmd.Env = append(cmd.Env, "CRUZ_SOCKET="+a.socket, "CRUZ_TASK_ARGV0=/bin/sleep",
		"SLURM_JOB_ID=777001", "SLURM_STEP_ID=0", "SLURM_PROCID=0", "SLURM_STEP_NUM_TASKS=1",
		"SLURM_STEP_NODELIST="+host, "SLURM_STEP_TASKS_PER_NODE=1")
	r := runCommand(t, cmd, time.Minute)
	require.NotEqual(t, 0, r.Code, "a forged Slurm step must be refused; stdout %q", r.Stdout)
	assert.Contains(t, r.Stderr, "refused to run Slurm step 777001.0 for uid 1001")
	assert.Contains(t, r.Stderr, "is not a task of that step (not a task of a Slurm step)")
	assert.Contains(t, a.log(), `msg=refused uid=1001 user=cruzt1 what="POST /v1/slurm/steps" why="refused to run Slurm step 777001.0 for uid 1001`,
		"the agent logs the refusal")

	l := a.cruzAsRoot("status", "--json")
	require.Equal(t, 0, l.Code, "%s", l.Stderr)
	assert.NotContains(t, l.Stdout, "slurm-777001", "no job of the forged step")
	_, err = os.Stat(filepath.Join(a.store, "slurm-777001-0"))
	assert.True(t, os.IsNotExist(err), "no store directory of the forged step: %v", err)
	a.requireNoLeaks()
}

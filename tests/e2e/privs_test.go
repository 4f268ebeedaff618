package e2e

// No privilege into or out of a pod: a pod runs with no_new_privs, so a
// setuid program in it gains nothing, before and after a restore.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// rootSecret makes a root-owned directory (0755) holding a root-only file
// (0600) with a secret in it and a setuid-root copy of cat (4755), and
// returns the setuid program, the secret file and the secret.
func rootSecret(t *testing.T) (suid, file, secret string) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cruz-test-root-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	secret = fmt.Sprintf("root-only-secret-%d", time.Now().UnixNano())
	file = filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(file, []byte(secret+"\n"), 0o600))
	suid = filepath.Join(dir, "suid-cat")
	src, err := os.Open("/usr/bin/cat")
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(suid, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	require.NoError(t, os.Chmod(suid, 0o4755|os.ModeSetuid))
	st, err := os.Stat(suid)
	require.NoError(t, err)
	require.NotZero(t, st.Mode()&os.ModeSetuid, "%s is setuid", suid)
	return suid, file, secret
}

// podStatusField reads a field of /proc/PID/status ("NoNewPrivs", ...).
func podStatusField(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// TestSetuidGainsNothingInPod: cruzt1's job runs a setuid-root copy of cat
// on a root-only file: it is refused (no_new_privs), the secret never shows
// in the job's output, and every process of the pod says NoNewPrivs: 1,
// also after the job was stopped by a checkpoint and restored, where the
// same attempt fails again.
func TestSetuidGainsNothingInPod(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	suid, file, secret := rootSecret(t)
	// The attack works outside a pod: the setuid bit is honoured on this
	// file system, so the refusal below is the pod's doing.
	r := runAs(t, u, suid, file)
	require.Equal(t, 0, r.Code, "setuid cat outside a pod: %s", r.Stderr)
	require.Contains(t, r.Stdout, secret, "outside a pod the setuid program reads the file")

	script := `"$1" "$2"; echo "first=$?"
while [ ! -e "$3/again" ]; do sleep 0.05; done
"$1" "$2"; echo "second=$?"`
	run := a.startCruz(u, dir, "run", "--plain", "--name", "suid", "--", "/bin/sh", "-c", script, "sh", suid, file, dir)
	run.waitOutput(t, "first=", 30*time.Second)
	j := a.status(u, "suid")
	require.Len(t, j.Pods, 1)
	requirePodNoNewPrivs(t, a, j)

	a.checkpoint(u, "suid", "--stop")
	first := run.wait(t, 30*time.Second)
	require.Equal(t, 75, first.Code, "stderr:\n%s", first.Stderr)
	assert.Contains(t, first.Stdout, "first=1\n", "the setuid program failed in the pod")
	assert.Contains(t, first.Stderr, file+": Permission denied")
	assert.NotContains(t, first.Stdout+first.Stderr, secret)

	second := a.startCruz(u, dir, "restart", "suid")
	deadline := time.Now().Add(30 * time.Second)
	for a.status(u, "suid").State != api.StateRunning {
		require.True(t, time.Now().Before(deadline), "the job was not running again within 30s: %s", second.stderr.String())
		time.Sleep(20 * time.Millisecond)
	}
	j = a.status(u, "suid")
	requirePodNoNewPrivs(t, a, j)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "again"), nil, 0o644))
	res := second.wait(t, 30*time.Second)
	require.Equal(t, 0, res.Code, "stderr:\n%s", res.Stderr)
	assert.Contains(t, res.Stdout, "second=1\n", "the setuid program failed in the restored pod")
	assert.Contains(t, res.Stderr, file+": Permission denied")
	assert.NotContains(t, res.Stdout+res.Stderr, secret)
	a.requireNoLeaks()
}

// requirePodNoNewPrivs checks NoNewPrivs of every process of the job's
// pods (each pod's PID 1 and its descendants).
func requirePodNoNewPrivs(t *testing.T, a *agent, j api.Job) {
	t.Helper()
	seen := 0
	for _, p := range j.Pods {
		require.NotZero(t, p.PID, "pod %s has a pid", p.Name)
		for _, pid := range descendants(p.PID) {
			assert.Equal(t, "1", podStatusField(t, pid, "NoNewPrivs"), "pod %s process %d has no_new_privs", p.Name, pid)
			seen++
		}
	}
	require.NotZero(t, seen)
}

// descendants lists pid and every descendant of it.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], task.Name()))
			for _, f := range strings.Fields(string(b)) {
				var c int
				if _, err := fmt.Sscan(f, &c); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// TestDumpRefusesPodWithPrivilegedProcess: cruzt1's job starts a process
// with capabilities (in a user namespace of its own, which any user may
// make): the checkpoint is refused, naming the process, its program and
// the capability set, the job runs on, and the checkpoint taken before
// stays the latest.
func TestDumpRefusesPodWithPrivilegedProcess(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	script := `echo waiting
while [ ! -e "$1/go" ]; do sleep 0.05; done
unshare -Ur sleep 600 &
exec "$2" 100000 20`
	run := a.startCruz(u, dir, "run", "--plain", "--name", "caps", "--", "/bin/sh", "-c", script, "sh", dir, testenv.Bin(t, "counter"))
	run.waitOutput(t, "waiting\n", 30*time.Second)
	ck := a.checkpoint(u, "caps")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o644))
	run.waitOutput(t, "line 3\n", 30*time.Second)
	// The process in its own user namespace holds every capability there.
	j := a.status(u, "caps")
	require.Len(t, j.Pods, 1)
	var sleeper int
	require.Eventually(t, func() bool {
		for _, pid := range descendants(j.Pods[0].PID) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) == "sleep\n" {
				sleeper = pid
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "the job's sleep in a user namespace")
	require.NotEqual(t, "0000000000000000", podStatusField(t, sleeper, "CapEff"))

	r := a.cruz(u, "", "checkpoint", "caps")
	assert.Equal(t, 1, r.Code, "stdout %q stderr %q", r.Stdout, r.Stderr)
	assert.Empty(t, r.Stdout)
	assert.Contains(t, r.Stderr, fmt.Sprintf("process %d (sleep, /usr/bin/sleep) runs with other credentials than the job's owner (uid %d gid %d)", sleeper, u.UID, u.GID))
	assert.Regexp(t, `CapEff is [0-9a-f]{16}, not 0000000000000000`, r.Stderr)
	assert.Contains(t, r.Stderr, "Cruz does not checkpoint a process with privileges or another identity")

	// The job runs on, and the earlier checkpoint is still the latest.
	n := len(check.NonEmptyLines(run.stdout.String()))
	require.Eventually(t, func() bool { return len(check.NonEmptyLines(run.stdout.String())) > n+5 }, 10*time.Second, 20*time.Millisecond,
		"the job goes on printing after the refused checkpoint")
	j = a.status(u, "caps")
	assert.Equal(t, api.StateRunning, j.State)
	assert.Equal(t, 1, j.Checkpoints)
	assert.Equal(t, ck, j.LastCheckpoint)
	r = a.cruz(u, "", "checkpoints", "caps")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, ck)
	assert.NotContains(t, r.Stdout, "ckpt-0002")
	entries, err := os.ReadDir(filepath.Join(a.store, j.ID))
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), ".tmp-"), "half-written checkpoint %s left", e.Name())
	}

	r = a.cruz(u, "", "signal", "caps", "KILL")
	require.Equal(t, 0, r.Code, r.Stderr)
	run.wait(t, 30*time.Second)
	a.requireNoLeaks()
}

// fileHolderScript holds DIR/f open for appending (fd 3), says ready, waits
// for DIR/go, then appends a line to f and says wrote.
const fileHolderScript = `exec 3>>"$1/f"
echo ready
while [ ! -e "$1/go" ]; do sleep 0.05; done
echo appended >&3
echo wrote`

// stopFileHolder runs fileHolderScript as u's plain job name and stops it
// with a checkpoint once it holds f; it returns the checkpoint and the run.
func stopFileHolder(t *testing.T, a *agent, u testenv.User, dir, name string) (string, result) {
	t.Helper()
	run := a.startCruz(u, dir, "run", "--plain", "--name", name, "--", "/bin/sh", "-c", fileHolderScript, "sh", dir)
	run.waitOutput(t, "ready\n", 30*time.Second)
	ck := a.checkpoint(u, name, "--stop")
	res := run.wait(t, 30*time.Second)
	require.Equal(t, 75, res.Code, "stderr:\n%s", res.Stderr)
	return ck, res
}

// TestRestoreOpensFilesAsOwner: cruzt1's job holds ~/f (its own, 0644)
// open for appending and is stopped by a checkpoint; cruzt1 replaces f by
// a link to a root-owned 0644 file. The restart is refused, naming f and
// the access the owner lacks; the root file is untouched and the job stays
// stopped. With f put back, the same checkpoint restarts and the job
// writes to f.
func TestRestoreOpensFilesAsOwner(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	f := filepath.Join(dir, "f")
	r := runAs(t, u, "/bin/sh", "-c", `umask 022; : > "$1"`, "sh", f)
	require.Equal(t, 0, r.Code, r.Stderr)
	_, target, _ := rootSecret(t)
	require.NoError(t, os.WriteFile(target, []byte("root's\n"), 0o644))
	require.NoError(t, os.Chmod(target, 0o644))

	ck, res := stopFileHolder(t, a, u, dir, "holder")

	r = runAs(t, u, "/bin/sh", "-c", `rm "$1" && ln -s "$2" "$1"`, "sh", f, target)
	require.Equal(t, 0, r.Code, r.Stderr)
	r = a.cruz(u, dir, "restart", "holder")
	assert.Equal(t, 1, r.Code, "stdout %q stderr %q", r.Stdout, r.Stderr)
	assert.Contains(t, r.Stderr, fmt.Sprintf("the job's owner (uid %d) cannot open %s (the job's open file) for writing (append) now: permission denied", u.UID, f))
	assert.Contains(t, r.Stderr, "put back the file the job had")
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, "root's\n", string(b), "the root-owned file is untouched")
	j := a.status(u, "holder")
	assert.Equal(t, api.StateStopped, j.State)
	assert.Equal(t, ck, j.LastCheckpoint)
	a.requireNoLeaks()

	// The file put back (empty, as it was at the checkpoint): the same
	// checkpoint restarts, and the job appends to its own file.
	r = runAs(t, u, "/bin/sh", "-c", `rm "$1" && umask 022 && : > "$1"`, "sh", f)
	require.Equal(t, 0, r.Code, r.Stderr)
	restart := a.startCruz(u, dir, "restart", "holder")
	deadline := time.Now().Add(30 * time.Second)
	for a.status(u, "holder").State != api.StateRunning {
		require.True(t, time.Now().Before(deadline), "the job was not running again within 30s: %s", restart.stderr.String())
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o644))
	res = restart.wait(t, 30*time.Second)
	require.Equal(t, 0, res.Code, "stderr:\n%s", res.Stderr)
	assert.Equal(t, "wrote\n", res.Stdout)
	b, err = os.ReadFile(f)
	require.NoError(t, err)
	assert.Equal(t, "appended\n", string(b))
	b, err = os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, "root's\n", string(b))
	a.requireNoLeaks()
}

// TestRollbackOpensFilesAsOwner: the same attack through an automatic
// rollback: cruzt1's job holds ~/f open for appending and is checkpointed;
// cruzt1 replaces f by a link to a root-owned file, then the job's process
// is killed (a failure the policy rolls back). The rollback's restore is
// refused with the same message, the job fails saying why, and the root
// file is untouched.
func TestRollbackOpensFilesAsOwner(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	f := filepath.Join(dir, "f")
	r := runAs(t, u, "/bin/sh", "-c", `umask 022; : > "$1"`, "sh", f)
	require.Equal(t, 0, r.Code, r.Stderr)
	_, target, _ := rootSecret(t)
	require.NoError(t, os.WriteFile(target, []byte("root's\n"), 0o644))

	script := `exec 3>>"$1/f"
echo ready
while :; do sleep 0.05; [ -e "$1/go" ] && echo appended >&3; done`
	run := a.startCruz(u, dir, "run", "--plain", "--name", "rb", "--", "/bin/sh", "-c", script, "sh", dir)
	run.waitOutput(t, "ready\n", 30*time.Second)
	ck := a.checkpoint(u, "rb")
	r = runAs(t, u, "/bin/sh", "-c", `rm "$1" && ln -s "$2" "$1" && touch "$3"`, "sh", f, target, filepath.Join(dir, "go"))
	require.Equal(t, 0, r.Code, r.Stderr)
	j := a.status(u, "rb")
	require.Len(t, j.Pods, 1)
	require.NoError(t, unix.Kill(j.Pods[0].PID, unix.SIGKILL))

	res := run.wait(t, time.Minute)
	assert.NotEqual(t, 0, res.Code)
	assert.Contains(t, res.Stderr, "the restore from "+ck+" failed")
	assert.Contains(t, res.Stderr, fmt.Sprintf("cannot open %s (the job's open file) for writing (append) now: permission denied", f))
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, "root's\n", string(b), "the root-owned file is untouched")
	assert.Equal(t, api.StateFailed, a.status(u, "rb").State)
	a.requireNoLeaks()
}

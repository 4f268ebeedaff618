package pod

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/proc"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// leftPod starts, in a new netns (held by the test), a sleep as PID 1 of a
// new pid namespace, like a pod's, and another sleep in the same netns
// outside that pid namespace (like what a CRIU restore cut short leaves).
func leftPod(t *testing.T) (ns *podNetns, init, stray *exec.Cmd) {
	t.Helper()
	ns, err := newPodNetns()
	require.NoError(t, err)
	t.Cleanup(ns.close)
	init = exec.Command("sleep", "60")
	init.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	stray = exec.Command("sleep", "60")
	for _, c := range []*exec.Cmd{init, stray} {
		require.NoError(t, withNetns(ns.path(), func() error { return startCmd(c) }))
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	}
	return ns, init, stray
}

func idOf(t *testing.T, pid int) InitID {
	t.Helper()
	start, err := proc.StartTime(pid)
	require.NoError(t, err)
	return InitID{PID: pid, Start: start}
}

// killed waits up to 10 s for c to end, and says whether it was killed.
func killed(t *testing.T, c *exec.Cmd) bool {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
		ws, ok := c.ProcessState.Sys().(syscall.WaitStatus)
		return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d still runs 10s after it was killed", c.Process.Pid)
		return false
	}
}

// TestKillLeftPodOnlyKillsThePod: a record a dead agent left may name a PID
// and a netns inode that other processes have by now. KillLeftPod kills
// nothing unless the recorded PID 1 (same PID, same start time) still runs
// in the recorded netns; then it kills the pod, and what else is in its
// netns.
func TestKillLeftPodOnlyKillsThePod(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("NOT RUN: making network and pid namespaces needs root")
	}
	ns, init, stray := leftPod(t)
	id := idOf(t, init.Process.Pid)

	// A user's process in another namespace (standing for the node's own:
	// a broken check must not kill the test's machine), whose PID or netns
	// inode a stale record names.
	other, err := newPodNetns()
	require.NoError(t, err)
	t.Cleanup(other.close)
	victim := exec.Command("sleep", "60")
	require.NoError(t, withNetns(other.path(), func() error { return startCmd(victim) }))
	t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })
	vid := idOf(t, victim.Process.Pid)

	for name, c := range map[string]struct {
		id  InitID
		ino uint64
	}{
		"the pod's PID, another start time":       {InitID{PID: id.PID, Start: id.Start + 1}, ns.ino},
		"a reused PID, a reused netns inode":      {InitID{PID: vid.PID, Start: vid.Start - 1}, other.ino},
		"a reused PID, the pod's netns":           {InitID{PID: vid.PID, Start: id.Start}, ns.ino},
		"another process, the pod's netns":        {vid, ns.ino},
		"the pod's PID 1, a reused netns inode":   {id, other.ino},
		"nothing recorded":                        {InitID{}, ns.ino},
		"nothing recorded, another netns's inode": {InitID{}, other.ino},
	} {
		require.Error(t, KillLeftPod(c.id, c.ino), "%s: refused", name)
	}
	for _, pid := range []int{init.Process.Pid, stray.Process.Pid, victim.Process.Pid} {
		require.NoError(t, unix.Kill(pid, 0), "pid %d lives on after the refused kills", pid)
		require.True(t, proc.Alive(pid), "pid %d lives on", pid)
	}
	err = KillLeftPod(InitID{PID: id.PID, Start: id.Start + 1}, ns.ino)
	require.ErrorContains(t, err, "is not the pod's PID 1 any more")

	require.NoError(t, KillLeftPod(id, ns.ino), "the recorded PID 1 in its netns")
	require.True(t, killed(t, init), "the pod's PID 1 was killed")
	require.True(t, killed(t, stray), "what else was in the pod's netns was killed")
	require.NoError(t, unix.Kill(victim.Process.Pid, 0), "the process outside the pod lives on")
	require.Error(t, KillLeftPod(id, ns.ino), "a pod already gone: nothing to kill")
}

// TestAdoptChecksTheStartTime: a pod is taken back only if the recorded
// PID 1 is the process that runs now.
func TestAdoptChecksTheStartTime(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("NOT RUN: making network and pid namespaces needs root")
	}
	ns, init, _ := leftPod(t)
	id := idOf(t, init.Process.Pid)
	_, err := Adopt(Spec{Name: "p"}, ns.ino, InitID{PID: id.PID, Start: id.Start + 1}, func(string, []byte) {})
	require.ErrorContains(t, err, "is not the pod's PID 1 any more")
	require.NoError(t, unix.Kill(init.Process.Pid, 0), "not taken back, not killed")

	p, err := Adopt(Spec{Name: "p"}, ns.ino, id, func(string, []byte) {})
	require.NoError(t, err)
	require.Equal(t, id, p.InitID())
	require.Equal(t, ns.ino, p.NetnsInode())
	(&Host{}).Destroy(p)
	require.True(t, killed(t, init), "Destroy of the pod taken back kills its PID 1")
}

package pod

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// threadsIn lists this process's threads whose network namespace has
// inode ino.
func threadsIn(t *testing.T, ino uint64) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	var in []string
	for _, task := range tasks {
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/self/task/%s/ns/net", task.Name()), &st) == nil && st.Ino == ino {
			in = append(in, task.Name())
		}
	}
	return in
}

// The test binary's main goroutine keeps the main thread, as cruzd's does
// (cmd/cruzd): a goroutine locked to the main thread that exits leaves it
// wedged, not ended (the Go runtime never ends the main thread), so a dirty
// thread that happened to be the main one would stay in the pod's netns
// (TestNoThreadStaysInAPodNetns failed 1 in 40 runs beside two CPU hogs).
func init() { runtime.LockOSThread() }

// TestNoThreadStaysInAPodNetns: the agent's threads that enter a pod's
// netns come back out, and one that cannot (dirty) ends instead of running
// other goroutines, in the pod's namespace, later.
func TestNoThreadStaysInAPodNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("NOT RUN: making a network namespace needs root")
	}
	ns, err := newPodNetns()
	require.NoError(t, err)
	defer ns.close()
	require.Empty(t, threadsIn(t, ns.ino), "newPodNetns returned to the agent's netns")

	var inside uint64
	require.NoError(t, withNetns(ns.path(), func() error {
		var st unix.Stat_t
		err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &st)
		inside = st.Ino
		return err
	}))
	require.Equal(t, ns.ino, inside, "fn ran in the pod's netns")
	require.Empty(t, threadsIn(t, ns.ino), "withNetns came back out")

	// A thread that stays in the namespace (as when leaving it fails) is
	// reported dirty: it must end with its goroutine.
	require.NoError(t, runOSThread(func() (bool, error) {
		return true, unix.Setns(int(ns.f.Fd()), unix.CLONE_NEWNET)
	}))
	deadline := time.Now().Add(5 * time.Second)
	for len(threadsIn(t, ns.ino)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.Empty(t, threadsIn(t, ns.ino), "the dirty thread ended")
}

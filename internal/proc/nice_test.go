package proc

import (
	"os"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestSetNiceEveryThread(t *testing.T) {
	before, err := Nice(os.Getpid())
	require.NoError(t, err)
	// Raising the nice value needs no privilege; other tests in this
	// process just run a little slower.
	want := min(before+1, 19)
	require.NoError(t, SetNice(want))
	tasks, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	require.Greater(t, len(tasks), 1, "a Go test process has several threads")
	for _, task := range tasks {
		n, err := niceAt("/proc/self/task/" + task.Name() + "/stat")
		require.NoError(t, err)
		require.Equal(t, want, n, "thread %s", task.Name())
	}
	// Threads made from now on inherit it.
	done := make(chan int)
	go func() {
		runtime.LockOSThread()
		prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
		require.NoError(t, err)
		done <- 20 - prio // getpriority's raw value is 20 - nice
	}()
	require.Equal(t, want, <-done)
	got, err := Nice(os.Getpid())
	require.NoError(t, err)
	require.Equal(t, want, got)
}

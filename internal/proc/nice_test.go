package proc

import (
	"os"
	"os/exec"
	"path/filepath"
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

// TestStartTime: field 22 of a stat line, past a command name with spaces
// and parentheses; a process started later has a later (or equal) start.
func TestStartTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat")
	line := "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654321 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0\n"
	require.NoError(t, os.WriteFile(path, []byte(line), 0o600))
	got, err := startTimeAt(path)
	require.NoError(t, err)
	require.Equal(t, uint64(987654321), got)

	require.NoError(t, os.WriteFile(path, []byte("4242 (a) S 1 2 3\n"), 0o600))
	_, err = startTimeAt(path)
	require.ErrorContains(t, err, "want at least 20")

	self, err := StartTime(os.Getpid())
	require.NoError(t, err)
	c := exec.Command("sleep", "10")
	require.NoError(t, c.Start())
	t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	child, err := StartTime(c.Process.Pid)
	require.NoError(t, err)
	require.GreaterOrEqual(t, child, self, "the child started after this test process")
	again, err := StartTime(c.Process.Pid)
	require.NoError(t, err)
	require.Equal(t, child, again, "a process's start time does not change")
}

package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A second lock on a run directory fails at once, naming the holder's PID,
// and leaves the holder's lock and PID as they were; once the holder lets go
// the directory can be taken again.
func TestLockRunDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	first, err := LockRunDir(dir)
	require.NoError(t, err)
	pidFile := filepath.Join(dir, RunLockName)
	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d\n", os.Getpid()), string(b))

	second, err := LockRunDir(dir)
	require.Nil(t, second)
	require.EqualError(t, err, fmt.Sprintf("run directory %s is in use by cruzd pid %d: stop that agent first, or give this one its own agent.run_dir and agent.socket", dir, os.Getpid()))
	b2, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	require.Equal(t, b, b2, "a refused agent changed the lock file")

	first.Release()
	third, err := LockRunDir(dir)
	require.NoError(t, err)
	third.Release()
}

// A lock file that is a symlink is refused (the run directory is root's,
// but nothing there is followed blindly).
func TestLockRunDirSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	require.NoError(t, os.WriteFile(target, []byte("x"), 0o644))
	require.NoError(t, os.Symlink(target, filepath.Join(dir, RunLockName)))
	_, err := LockRunDir(dir)
	require.ErrorContains(t, err, "open the run directory's lock file")
	b, _ := os.ReadFile(target)
	require.Equal(t, "x", string(b))
}

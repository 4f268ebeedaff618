package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// RunLockName is the lock file in the run directory that the agent using
// that directory holds an exclusive flock on for as long as it lives.
const RunLockName = "cruzd.lock"

// RunLock is the agent's hold on its run directory. The kernel drops the
// flock when the process ends, however it ends, so a crashed agent never
// leaves a stale lock behind; the file itself stays (removing it would let
// a third agent lock a new file while the second still holds the old one).
type RunLock struct{ f *os.File }

// LockRunDir takes the run directory dir for this process, before anything
// in it is touched: a second agent on the same directory would otherwise
// "clean up" the first one's pods as if they were left by a crash. It
// fails at once, naming the PID that holds the lock.
func LockRunDir(dir string) (*RunLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create run directory %s: %w (agent.run_dir in the config)", dir, err)
	}
	path := filepath.Join(dir, RunLockName)
	// O_CLOEXEC (set by os.OpenFile): pods and CRIU, which cruzd starts,
	// must not inherit the lock and keep it after the agent is gone.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the run directory's lock file %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "another cruzd"
			if pid := lockHolder(f); pid > 0 {
				holder = fmt.Sprintf("cruzd pid %d", pid)
			}
			return nil, fmt.Errorf("run directory %s is in use by %s: stop that agent first, or give this one its own agent.run_dir and agent.socket", dir, holder)
		}
		return nil, fmt.Errorf("lock the run directory's lock file %s: %w", path, err)
	}
	// Only the holder writes: the PID names it in the refusal above.
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write the agent's PID into %s: %w", path, err)
	}
	return &RunLock{f: f}, nil
}

// lockHolder reads the PID that the lock's holder wrote; 0 if there is none
// yet (the holder locks, then writes).
func lockHolder(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Release gives the run directory up (the process's end does too).
func (l *RunLock) Release() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

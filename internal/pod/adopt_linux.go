package pod

// When an agent dies (a crash, a kill -9) the pods it held keep running. A
// new agent can take a running pod back: Adopt finds its PID 1 in its
// network namespace and opens new read ends of its output pipes.

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Adopt makes a Pod of a running pod: its PID 1 (found in its
// netns), the netns, and new read ends of its stdout and stderr pipes.
func Adopt(spec Spec, ino uint64, sink Sink) (*Pod, error) {
	pid := podInitPID(ino)
	if pid == 0 {
		return nil, errors.New("no PID 1 of the pod is running")
	}
	// PID 1 is not this agent's child: pin it with a pidfd first, then
	// check (through /proc, while it lives) that it is the pod's.
	pidfd, err := openPidfd(pid, ino)
	if err != nil {
		return nil, fmt.Errorf("pid %d left the pod's netns: %w", pid, err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		pidfd.Close()
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Ino != ino || unix.PidfdSendSignal(int(pidfd.Fd()), 0, nil, 0) != nil {
		f.Close()
		pidfd.Close()
		return nil, fmt.Errorf("pid %d left the pod's netns", pid)
	}
	// A copy of the pidfd to wait on, so that the pod's own (for signals)
	// is closed only by Destroy.
	waitfd, err := unix.Dup(int(pidfd.Fd()))
	if err != nil {
		f.Close()
		pidfd.Close()
		return nil, fmt.Errorf("dup pidfd: %w", err)
	}
	ns := &podNetns{f: f, ino: ino}
	p := &Pod{Spec: spec, ns: ns, nsPath: ns.path(), PID: pid, pipes: map[string]string{},
		exited: make(chan struct{}), statusUnknown: true, pidfd: pidfd}
	for fd, stream := range map[int]string{1: "stdout", 2: "stderr"} {
		if key, r, err := pipeReader(pidfd, fd); err == nil {
			p.copyPipe(key, stream, r, sink)
		}
	}
	go func() {
		defer unix.Close(waitfd)
		fds := []unix.PollFd{{Fd: int32(waitfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		close(p.exited)
	}()
	return p, nil
}

// podInitPID finds the PID 1 of the pod whose netns has inode ino.
func podInitPID(ino uint64) int {
	for _, pid := range ProcessesInNetns(ino) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				if f := strings.Fields(v); len(f) > 1 && f[len(f)-1] == "1" {
					return pid
				}
			}
		}
	}
	return 0
}

// pipeReader opens a new read end of the pipe that the process of pidfd
// has as its descriptor fd, and of nothing else. The descriptor is copied
// from the process (pidfd_getfd: the very file it has, with no path to look
// up, so the process cannot swap it meanwhile), must be a pipe, and is then
// reopened for reading through this process's own /proc/self/fd, which for
// a pipe gives another end of the same pipe. (Reopening /proc/PID/fd/N of
// the pod's process instead would open, as root, whatever file the user's
// process has there by then.)
func pipeReader(pidfd *os.File, fd int) (key string, r *os.File, err error) {
	own, err := unix.PidfdGetfd(int(pidfd.Fd()), fd, 0)
	if err != nil {
		return "", nil, fmt.Errorf("pidfd_getfd %d: %w", fd, err)
	}
	defer unix.Close(own)
	var st unix.Stat_t
	if err := unix.Fstat(own, &st); err != nil {
		return "", nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return "", nil, fmt.Errorf("descriptor %d is not a pipe (mode %o)", fd, st.Mode)
	}
	r, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", own), os.O_RDONLY, 0)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("pipe:[%d]", st.Ino), r, nil
}

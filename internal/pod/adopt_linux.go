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
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Ino != ino {
		f.Close()
		return nil, fmt.Errorf("pid %d left the pod's netns", pid)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	ns := &podNetns{f: f, ino: ino}
	p := &Pod{Spec: spec, ns: ns, nsPath: ns.path(), PID: pid, pipes: map[string]string{},
		exited: make(chan struct{}), statusUnknown: true}
	for fd, stream := range map[int]string{1: "stdout", 2: "stderr"} {
		link := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
		target, err := os.Readlink(link)
		if err != nil || !strings.HasPrefix(target, "pipe:") {
			continue
		}
		// Opening a pipe through /proc gives a new end of the same pipe.
		r, err := os.OpenFile(link, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		p.copyPipe(target, stream, r, sink)
	}
	go func() {
		defer unix.Close(pidfd)
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
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

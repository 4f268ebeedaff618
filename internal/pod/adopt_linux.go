package pod

// When an agent dies (a crash, a kill -9) the pods it held keep running. A
// new agent takes a running pod back (Adopt: its PID 1, its netns, new read
// ends of its output pipes) or kills it (KillLeftPod), in both cases only
// once it has made sure, by PID 1's start time, that the record it read
// still names that pod.

import (
	"errors"
	"fmt"
	"os"

	"github.com/cruz-hpc/cruz/internal/proc"

	"golang.org/x/sys/unix"
)

// InitID names a pod's PID 1 for an agent that restarts after a crash: its
// PID and its start time (clock ticks after boot, /proc/PID/stat field 22).
// A PID is reused once its process is reaped, and a netns inode once its
// namespace is freed, so a record written by a dead agent may name a PID and
// an inode that now belong to other processes (the node's own namespace,
// another agent's pods, a user's shell). Together with the start time they
// name one process for the life of the machine.
type InitID struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// noteInit makes pid the pod's PID 1 and notes its start time, which the
// pod's set record keeps (see InitID). pid is this agent's child, not
// reaped yet: it cannot be another process.
func (p *Pod) noteInit(pid int) {
	p.PID = pid
	start, err := proc.StartTime(pid)
	if err != nil {
		// Without it, a restarted agent leaves the pod alone.
		p.initStart = 0
		return
	}
	p.initStart = start
}

// InitID names the pod's PID 1 for a record that outlives this agent
// (zero before it has one).
func (p *Pod) InitID() InitID { return InitID{PID: p.PID, Start: p.initStart} }

// openInit opens a pidfd of the process id names if that very process (same
// PID, same start time) still runs in the network namespace with inode ino,
// and that namespace, reopened through it: held open, its inode stays its
// own. /proc/PID is read after the pidfd is open and the process is found
// alive through the pidfd after that, so what was read was that process's.
func openInit(id InitID, ino uint64) (pidfd, ns *os.File, err error) {
	if id.PID <= 0 || id.Start == 0 {
		return nil, nil, errors.New("no PID 1 of the pod was recorded")
	}
	pidfd, err = openPidfd(id.PID, ino)
	if err != nil {
		return nil, nil, err
	}
	start, err := proc.StartTime(id.PID)
	if err != nil || start != id.Start {
		pidfd.Close()
		return nil, nil, fmt.Errorf("pid %d is not the pod's PID 1 any more (it started at tick %d, not %d)", id.PID, start, id.Start)
	}
	ns, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", id.PID))
	if err != nil {
		pidfd.Close()
		return nil, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil || st.Ino != ino || unix.PidfdSendSignal(int(pidfd.Fd()), 0, nil, 0) != nil {
		ns.Close()
		pidfd.Close()
		return nil, nil, fmt.Errorf("pid %d left the pod's netns", id.PID)
	}
	return pidfd, ns, nil
}

// KillLeftPod kills a pod that a previous agent left, named by its netns
// inode and its PID 1. It kills nothing unless that very process (PID and
// start time, see InitID) still runs in that namespace, and says why.
func KillLeftPod(id InitID, ino uint64) error {
	pidfd, ns, err := openInit(id, ino)
	if err != nil {
		return err
	}
	defer ns.Close()
	defer pidfd.Close()
	// Killing PID 1 of the pod's pid namespace kills every process in it.
	if err := unix.PidfdSendSignal(int(pidfd.Fd()), unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", id.PID, err)
	}
	// What sits in the netns outside that pid namespace (a CRIU restore
	// cut short) goes too: ns is held, so ino is still this namespace's.
	killNetns(ino)
	return nil
}

// Adopt makes a Pod of a running pod that a previous agent left: its PID 1
// (id, checked as openInit does), its netns (inode ino), and new read ends
// of its stdout and stderr pipes.
func Adopt(spec Spec, ino uint64, id InitID, sink Sink) (*Pod, error) {
	pidfd, f, err := openInit(id, ino)
	if err != nil {
		return nil, err
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
	p := &Pod{Spec: spec, ns: ns, nsPath: ns.path(), PID: id.PID, initStart: id.Start, pipes: map[string]string{},
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

package pod

// Signals reach a pod's processes through pidfds, never through a bare PID:
// once a process has ended and been reaped, the kernel may give its PID to
// another process (of any user), and a kill(2) meant for the pod would hit
// that one instead.

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openPidfd opens a pidfd of pid and, if ino is not 0, checks that the
// process is in the network namespace with inode ino. The check reads
// /proc/PID after the pidfd is open, and the process is found alive through
// the pidfd after that, so what was read was that process's.
func openPidfd(pid int, ino uint64) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	if ino != 0 {
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil || st.Ino != ino {
			f.Close()
			return nil, fmt.Errorf("process %d is not in the pod's network namespace", pid)
		}
	}
	if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	return f, nil
}

// signalInNetns sends sig to pid if it is, when signalled, a process of the
// network namespace with inode ino; otherwise nothing.
func signalInNetns(pid int, ino uint64, sig unix.Signal) {
	f, err := openPidfd(pid, ino)
	if err != nil {
		return
	}
	defer f.Close()
	_ = unix.PidfdSendSignal(int(f.Fd()), sig, nil, 0)
}

// setPidfd gives the pod the pidfd of its PID 1.
func (p *Pod) setPidfd(f *os.File) {
	p.pidfdMu.Lock()
	defer p.pidfdMu.Unlock()
	p.pidfd = f
}

// signal sends sig to the pod's PID 1 through its pidfd; nothing if PID 1
// has ended (or the pod has none yet).
func (p *Pod) signal(sig unix.Signal) error {
	p.pidfdMu.Lock()
	defer p.pidfdMu.Unlock()
	if p.pidfd == nil {
		return nil
	}
	err := unix.PidfdSendSignal(int(p.pidfd.Fd()), sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// closePidfd lets go of PID 1's pidfd: no signal reaches the pod after.
func (p *Pod) closePidfd() {
	p.pidfdMu.Lock()
	defer p.pidfdMu.Unlock()
	if p.pidfd != nil {
		p.pidfd.Close()
		p.pidfd = nil
	}
}

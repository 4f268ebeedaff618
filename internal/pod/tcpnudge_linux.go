package pod

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PushPendingTCP makes every TCP socket of the processes in the network
// namespace ino send the data it holds but has not yet sent.
//
// CRIU writes a restored socket's not-yet-sent data after it takes the socket
// out of repair mode, while the Cruz filter still holds the pod's traffic:
// that first transmission is dropped, and the kernel tries again only when a
// retransmission timer fires, with no RTT estimate yet (seconds, seen: ~3 s).
// Turning TCP_NODELAY on pushes the pending frames at once; the option is put
// back as it was, so the application sees no change.
func PushPendingTCP(ino uint64) (pushed int) {
	seen := map[string]bool{}
	for _, pid := range ProcessesInNetns(ino) {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		pidfd := -1
		for _, e := range entries {
			link, err := os.Readlink(dir + "/" + e.Name())
			if err != nil || !strings.HasPrefix(link, "socket:[") || seen[link] {
				continue
			}
			seen[link] = true
			target, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if pidfd < 0 {
				if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
					break
				}
				defer unix.Close(pidfd)
			}
			fd, err := unix.PidfdGetfd(pidfd, target, 0)
			if err != nil {
				continue
			}
			if nudgeTCP(fd) {
				pushed++
			}
			unix.Close(fd)
		}
	}
	return pushed
}

// nudgeTCP pushes a TCP socket's pending frames; other sockets are left alone.
func nudgeTCP(fd int) bool {
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil || proto != unix.IPPROTO_TCP {
		return false
	}
	was, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
	if err != nil {
		return false
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return false
	}
	if was == 0 {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 0)
	}
	return true
}

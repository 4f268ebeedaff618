package pod

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxRTO bounds the retransmission timeout of every TCP socket in a pod
// (net.ipv4.tcp_rto_max_ms, per netns since Linux 6.15; 1000 ms is the
// smallest value the kernel takes). While a checkpoint holds the pod's
// traffic, the retransmissions of segments lost at the hold's start back off
// exponentially, up to 120 s by default: after a hold of a few seconds the
// next try could come a minute after the release. Bounded, it comes within a
// second, and the socket's own data is pushed at once (PushPendingTCP).
const maxRTO = "1000"

// BoundRetransmits sets the pod netns's TCP retransmission backoff bound. A
// kernel without the setting (before 6.15) is told apart, so the caller can
// say so once and go on.
func BoundRetransmits(nsPath string) error {
	return withNetns(nsPath, func() error {
		// /proc/sys/net shows the netns of the thread that opens it.
		return os.WriteFile("/proc/sys/net/ipv4/tcp_rto_max_ms", []byte(maxRTO), 0)
	})
}

// PushPendingTCP makes every TCP socket of the processes in the network
// namespace ino send the data it holds but has not yet sent.
//
// Segments a pod sent while its traffic was held were dropped in its own
// netns on the way out, so the kernel keeps them as not yet sent and tries
// again only when one of its timers fires (backed off during the hold).
// Likewise, CRIU writes a restored socket's not-yet-sent data after it takes
// the socket out of repair mode, while the Cruz filter still holds the pod's
// traffic: that first transmission is dropped, and the kernel tries again
// only when a retransmission timer fires, with no RTT estimate yet (seconds,
// seen: ~3 s).
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

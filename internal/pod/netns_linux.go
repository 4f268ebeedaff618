package pod

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// startCmd starts a short helper command. Every descriptor the agent opens
// is close-on-exec (Go's default), so children get only what exec.Cmd hands
// them explicitly: no pod's pipe or netns leaks into another child.
func startCmd(cmd *exec.Cmd) error { return cmd.Start() }

// runOSThread runs fn on a goroutine locked to its own OS thread. If fn
// reports that the thread's namespaces could not be restored (dirty), the
// thread is left locked so that the Go runtime kills it instead of reusing
// a thread that sits in the wrong namespace.
func runOSThread(fn func() (dirty bool, err error)) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		dirty, err := fn()
		if !dirty {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// withNetns runs fn with the calling OS thread inside the network namespace at
// nsPath. Processes forked by fn (exec.Cmd.Start) are born in that namespace.
func withNetns(nsPath string, fn func() error) error {
	target, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer target.Close()
	return runOSThread(func() (bool, error) {
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			return false, fmt.Errorf("open current netns: %w", err)
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			return false, fmt.Errorf("enter netns %s: %w", nsPath, err)
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			return true, errors.Join(ferr, fmt.Errorf("leave netns %s: %w", nsPath, err))
		}
		return false, ferr
	})
}

// podNetns is a pod's network namespace, kept alive by the agent holding a
// descriptor to it rather than by a bind mount: a bind mount would be copied
// into every pod's mount namespace (and dumped with it), and a namespace
// held by a descriptor cannot outlive the agent and the pod's processes.
type podNetns struct {
	f   *os.File
	ino uint64
}

// path names the namespace for code that wants a path (setns, netlink,
// CRIU's inherit-fd): the agent's own descriptor, through /proc.
func (n *podNetns) path() string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.f.Fd()) }

// close drops the agent's hold on the namespace; it goes away once no
// process is left in it.
func (n *podNetns) close() {
	if n != nil && n.f != nil {
		n.f.Close()
	}
}

// newPodNetns makes a new network namespace.
func newPodNetns() (*podNetns, error) {
	var f *os.File
	err := runOSThread(func() (bool, error) {
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			return false, fmt.Errorf("open current netns: %w", err)
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return false, fmt.Errorf("unshare netns: %w", err)
		}
		f, err = os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			err = fmt.Errorf("open new netns: %w", err)
		}
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			return true, errors.Join(err, fmt.Errorf("return to the agent's netns: %w", serr))
		}
		return false, err
	})
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat new netns: %w", err)
	}
	return &podNetns{f: f, ino: st.Ino}, nil
}

// NetnsInode returns the inode number that identifies the namespace at path
// (what CRIU calls the namespace's id in `--external net[INODE]:KEY`).
func NetnsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat netns %s: %w", path, err)
	}
	return st.Ino, nil
}

// ProcessesInNetns lists the pids whose network namespace has inode ino.
// Used to find every process of a pod, e.g. to kill what is left of it.
func ProcessesInNetns(ino uint64) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && st.Ino == ino {
			pids = append(pids, pid)
		}
	}
	return pids
}

// SharedRoot makes the node's mounts shared (as systemd does at boot), so
// that the pods' mount namespaces, which are slave copies of the node's,
// follow the node: a filesystem unmounted on the node is gone from the pods
// too, instead of living on in them and being dumped with them.
func SharedRoot(log interface{ Info(string, ...any) }) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 6 && f[4] == "/" {
			for _, opt := range f[6:] {
				if opt == "-" {
					break
				}
				if strings.HasPrefix(opt, "shared:") {
					return nil
				}
			}
		}
	}
	log.Info("making the node's mounts shared (mount --make-rshared /), as systemd does, so that pods follow the node's unmounts")
	if err := unix.Mount("", "/", "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make / shared: %w", err)
	}
	return nil
}

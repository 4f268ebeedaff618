package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// createNetns makes a new network namespace and keeps it alive with a bind
// mount at nsPath (like `ip netns add`, but under the agent's run directory).
func createNetns(nsPath string) error {
	if err := os.MkdirAll(filepath.Dir(nsPath), 0o755); err != nil {
		return fmt.Errorf("create netns dir: %w", err)
	}
	f, err := os.OpenFile(nsPath, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file %s: %w", nsPath, err)
	}
	f.Close()
	err = runOSThread(func() (bool, error) {
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			return false, fmt.Errorf("open current netns: %w", err)
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return false, fmt.Errorf("unshare netns: %w", err)
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		merr := unix.Mount(src, nsPath, "none", unix.MS_BIND, "")
		if merr != nil {
			merr = fmt.Errorf("bind-mount netns at %s: %w", nsPath, merr)
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			return true, errors.Join(merr, fmt.Errorf("return to the agent's netns: %w", err))
		}
		return false, merr
	})
	if err != nil {
		_ = os.Remove(nsPath)
		return err
	}
	return nil
}

// deleteNetns drops the bind mount that keeps a pod netns alive and removes the
// file. A missing namespace is not an error, so cleanup can be repeated.
func deleteNetns(nsPath string) error {
	if err := unix.Unmount(nsPath, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", nsPath, err)
	}
	if err := os.Remove(nsPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns file %s: %w", nsPath, err)
	}
	return nil
}

// netnsInode returns the inode number that identifies the namespace at path
// (what CRIU calls the namespace's id in `--external net[INODE]:KEY`).
func netnsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat netns %s: %w", path, err)
	}
	return st.Ino, nil
}

// processesInNetns lists the pids whose network namespace has inode ino.
// Used to find every process of a pod, e.g. to kill what is left of it.
func processesInNetns(ino uint64) []int {
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

// privateMountPoint makes dir a mount point of its own with private
// propagation (as `ip netns` does for /run/netns), so that the netns bind
// mounts under it never propagate into pods' mount namespaces and pods can
// drop the whole directory from their view with one unmount.
func privateMountPoint(dir string) error {
	mounted, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if !mounted {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a private mount: %w", dir, err)
	}
	return nil
}

func isMountPoint(dir string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true, nil
		}
	}
	return false, nil
}

// sharedRoot makes the node's mounts shared (as systemd does at boot), so
// that the pods' mount namespaces, which are slave copies of the node's,
// follow the node: a filesystem unmounted on the node is gone from the pods
// too, instead of living on in them and being dumped with them.
func sharedRoot(log interface{ Info(string, ...any) }) error {
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

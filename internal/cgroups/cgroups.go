//go:build linux

// Package cgroups owns what Cruz does with cgroup v1 hierarchies: finding
// the cgroups Slurm made for a step on this node, putting a pod's first
// process into them, and removing a step's cgroup once its pods are gone.
// A step's limits (--mem, --cpus-per-task) then hold for its pods too,
// which are the agent's children and would otherwise escape them.
package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// StepControllers are the hierarchies a step's pods join: those that limit
// and account CPU and memory. Not freezer (proctrack/cgroup): Slurm
// signals and kills every process in a step's freezer cgroup, and a pod
// must outlive its task when the step is requeued or a node fails, with
// the agent ending it through Cruz. Not devices or pids either: the pods
// keep the agent's.
var StepControllers = []string{"cpu", "cpuacct", "cpuset", "memory"}

// Set maps a controller to a cgroup path in its hierarchy, as
// /proc/PID/cgroup shows it ("/slurm/uid_1001/job_5/step_0").
type Set map[string]string

// Mounts maps every mounted v1 controller to its hierarchy's mount point
// (a hierarchy with several controllers, "cpu,cpuacct", is listed under
// each of them).
func Mounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list cgroup mounts: %w", err)
	}
	defer f.Close()
	m, err := parseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("list cgroup mounts: %w", err)
	}
	return m, nil
}

func parseMountinfo(r io.Reader) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - TYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+3 >= len(fields) || fields[sep+1] != "cgroup" || fields[3] != "/" {
			// Not v1, or a bind mount of a cgroup below the root (the
			// hierarchy's own mount is the one to use).
			continue
		}
		for _, opt := range strings.Split(fields[sep+3], ",") {
			if _, ok := m[opt]; !ok && opt != "rw" && opt != "ro" {
				m[opt] = unescape(fields[4])
			}
		}
	}
	return m, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// StepPath is the cgroup Slurm's task/cgroup plugin (cgroup/v1) makes for a
// step: ROOT/uid_U/job_J/step_S, ROOT being "/slurm" on a node of its own.
func StepPath(root string, uid, job, step uint32) string {
	return fmt.Sprintf("%s/uid_%d/job_%d/step_%d", strings.TrimSuffix(root, "/"), uid, job, step)
}

// SlurmStep finds the cgroups of a step on this node, under the first of
// roots that Slurm uses here (exists in one of the StepControllers'
// hierarchies), in every hierarchy where Slurm made one. An empty set means
// the step has none (no task/cgroup, no such step here): its pods stay in
// the agent's. complete says whether every hierarchy in which Slurm makes
// steps' cgroups (those that have the root) has the step's: a step's
// cgroups appear one hierarchy after the other as its slurmstepd sets it up.
func SlurmStep(roots []string, uid, job, step uint32) (set Set, complete bool, err error) {
	mounts, err := Mounts()
	if err != nil {
		return nil, false, err
	}
	root := ""
	for _, r := range roots {
		for _, ctrl := range StepControllers {
			if mnt, ok := mounts[ctrl]; ok && root == "" {
				if fi, err := os.Lstat(filepath.Join(mnt, r)); err == nil && fi.IsDir() {
					root = r
				}
			}
		}
	}
	if root == "" {
		return Set{}, true, nil // Slurm makes no cgroups here
	}
	path := StepPath(root, uid, job, step)
	set, complete = Set{}, true
	for _, ctrl := range StepControllers {
		mnt, ok := mounts[ctrl]
		if !ok {
			continue
		}
		if _, err := os.Lstat(filepath.Join(mnt, root)); err != nil {
			continue // Slurm makes no cgroups in this hierarchy
		}
		fi, err := os.Lstat(filepath.Join(mnt, path))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			complete = false
			continue
		case err != nil:
			return nil, false, fmt.Errorf("cgroup of Slurm step %d.%d: %w", job, step, err)
		case !fi.IsDir():
			return nil, false, fmt.Errorf("cgroup of Slurm step %d.%d: %s is not a directory", job, step, filepath.Join(mnt, path))
		}
		set[ctrl] = path
	}
	return set, complete, nil
}

// Join moves the calling process (all its threads) into every cgroup of
// set. It runs in a pod's first process, as root, before it becomes the
// user: whatever it starts is then born in the step's cgroups.
func Join(set Set) error { return move("0", set) }

// Move moves process pid (all its threads) into every cgroup of set: the
// CRIU that restores a pod, whose restored processes are then born there.
func Move(pid int, set Set) error { return move(strconv.Itoa(pid), set) }

func move(pid string, set Set) error {
	if len(set) == 0 {
		return nil
	}
	mounts, err := Mounts()
	if err != nil {
		return err
	}
	for ctrl, path := range set {
		mnt, ok := mounts[ctrl]
		if !ok {
			return fmt.Errorf("join the step's %s cgroup: no %s hierarchy is mounted", ctrl, ctrl)
		}
		if err := writeProcs(filepath.Join(mnt, path), pid); err != nil {
			return fmt.Errorf("join the step's %s cgroup %s: %w", ctrl, path, err)
		}
	}
	return nil
}

// writeProcs writes pid ("0": the writer itself) to dir's cgroup.procs,
// after making sure dir is a cgroup: a job's owner may make cgroups inside
// its step's, but nothing but cgroups lives on a cgroup file system.
func writeProcs(dir, pid string) error {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	if st.Type != unix.CGROUP_SUPER_MAGIC {
		return fmt.Errorf("%s is not on a cgroup v1 file system", dir)
	}
	pf, err := unix.Openat(fd, "cgroup.procs", unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: filepath.Join(dir, "cgroup.procs"), Err: err}
	}
	defer unix.Close(pf)
	if _, err := unix.Write(pf, []byte(pid)); err != nil {
		return &os.PathError{Op: "write", Path: filepath.Join(dir, "cgroup.procs"), Err: err}
	}
	return nil
}

// RemoveStep removes the cgroups of set once the step's pods are gone from
// this node, as Slurm's task/cgroup does at a step's end: its own attempt
// fails while pods that outlive the step's tasks are still in them. It
// takes Slurm's lock (flock on the hierarchy's root directory) so that it
// never races a step being set up. A cgroup still in use stays.
func RemoveStep(set Set) {
	mounts, err := Mounts()
	if err != nil {
		return
	}
	for ctrl, path := range set {
		mnt, ok := mounts[ctrl]
		if !ok {
			continue
		}
		lock, err := os.Open(mnt)
		if err != nil {
			continue
		}
		if unix.Flock(int(lock.Fd()), unix.LOCK_EX) == nil {
			_ = unix.Rmdir(filepath.Join(mnt, path))
		}
		lock.Close()
	}
}

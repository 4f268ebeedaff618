//go:build linux

package slurmcluster

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupHierarchies is where the v1 hierarchies are mounted.
const cgroupHierarchies = "/sys/fs/cgroup"

// cgroupParent is the cgroup, in every v1 hierarchy, under which the nodes
// of the cluster in stateDir have theirs (node-init.sh): one name per state
// directory, so that two clusters on one machine never share one.
func cgroupParent(stateDir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(stateDir)))
	return "cruz-slurm-" + hex.EncodeToString(sum[:4])
}

// nodeCgroup is node's cgroup below every hierarchy's root: the root its
// slurmd sees.
func nodeCgroup(stateDir, node string) string { return cgroupParent(stateDir) + "/" + node }

// NodeCgroupPath is the cgroup path of node of the cluster in stateDir, as
// the host's /proc/PID/cgroup shows it.
func NodeCgroupPath(stateDir, node string) string { return "/" + nodeCgroup(stateDir, node) }

// v1Hierarchies lists the mounted cgroup v1 hierarchies.
func v1Hierarchies() []string {
	ents, _ := os.ReadDir(cgroupHierarchies)
	var hs []string
	for _, e := range ents {
		h := filepath.Join(cgroupHierarchies, e.Name())
		var st unix.Statfs_t
		if unix.Statfs(h, &st) == nil && st.Type == unix.CGROUP_SUPER_MAGIC {
			hs = append(hs, h)
		}
	}
	return hs
}

// removeCgroups removes the cgroups of the cluster in stateDir from every
// hierarchy, deepest first: what its slurmds made for jobs and steps, and
// the nodes' own. A process still in one (a pod that outlived its step) is
// moved to the hierarchy's root first; a cgroup whose last process is just
// exiting is tried again for a few seconds.
func removeCgroups(stateDir string) error {
	var errs []error
	for _, h := range v1Hierarchies() {
		top := filepath.Join(h, cgroupParent(stateDir))
		if _, err := os.Lstat(top); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // children before their parents
		for _, d := range dirs {
			if err := removeCgroup(h, d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func removeCgroup(root, dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, pid := range strings.Fields(string(procs)) {
				_ = os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(pid), 0)
			}
		}
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

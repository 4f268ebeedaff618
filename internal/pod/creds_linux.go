package pod

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/creds"
	"github.com/cruz-hpc/cruz/internal/criu"
	"golang.org/x/sys/unix"
)

// Owner is whom the processes of a pod made from spec must be.
func Owner(spec Spec) creds.Owner {
	return creds.Owner{UID: spec.UID, GID: spec.GID, Groups: spec.Groups}
}

// CheckImageCreds refuses the images in dir of the pod made from spec if a
// task in them records other credentials than the pod's owner's; the error
// names the image, the task and each field.
func CheckImageCreds(dir string, spec Spec) error {
	tasks, err := criu.ImageCreds(dir)
	if err != nil {
		return api.Errorf(api.ErrInvalid, "pod %s: read the credentials in its images: %w", spec.Name, err)
	}
	owner := Owner(spec)
	for _, t := range tasks {
		if ms := creds.Check(owner, t.Creds); len(ms) > 0 {
			return api.Errorf(api.ErrForbidden, "pod %s: image %s (task %q) records other credentials than the job's owner (uid %d gid %d): %s; "+
				"Cruz restores only the owner's identity, without capabilities", spec.Name, t.Image, t.Comm, owner.UID, owner.GID, creds.Describe(ms))
		}
	}
	return nil
}

// CheckCreds refuses the pod if any task of its process tree (every thread
// of PID 1 and of its descendants: what CRIU would dump) has credentials
// other than its owner's. A dump of such a task would keep its privilege in
// the images, and a restore, which CRIU does as root, would give it back.
// no_new_privs keeps pods from gaining privilege; this is the check that a
// pod taken back from an older agent, or anything else, did not.
func (p *Pod) CheckCreds() error {
	owner := Owner(p.Spec)
	for _, pid := range treePids(p.PID) {
		tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // ended since
			}
			return fmt.Errorf("pod %s: read the tasks of process %d: %w", p.Spec.Name, pid, err)
		}
		for _, t := range tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
					continue
				}
				return fmt.Errorf("pod %s: read the credentials of process %d: %w", p.Spec.Name, pid, err)
			}
			s, name, err := creds.ParseStatus(string(b))
			if err != nil {
				return fmt.Errorf("pod %s: /proc/%d/task/%s/status: %w", p.Spec.Name, pid, t.Name(), err)
			}
			if ms := creds.Check(owner, s); len(ms) > 0 {
				prog := name
				if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
					prog = name + ", " + exe
				}
				return api.Errorf(api.ErrForbidden, "pod %s: process %d (%s) runs with other credentials than the job's owner (uid %d gid %d): %s; "+
					"Cruz does not checkpoint a process with privileges or another identity (a setuid or setcap program, or one that changed its ids): end it, then checkpoint again",
					p.Spec.Name, pid, prog, owner.UID, owner.GID, creds.Describe(ms))
			}
		}
	}
	return nil
}

// treePids lists pid and its descendants, parents first, from the
// children lists of every thread (/proc/PID/task/TID/children).
func treePids(pid int) []int {
	out := []int{pid}
	seen := map[int]bool{pid: true}
	for i := 0; i < len(out); i++ {
		tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, t := range tids {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], t.Name()))
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil && !seen[c] {
					seen[c] = true
					out = append(out, c)
				}
			}
		}
	}
	return out
}

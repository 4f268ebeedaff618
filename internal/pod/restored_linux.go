package pod

// The files a restored pod really holds, checked as its owner (issue 11.1).
// CheckImageFiles checks the paths in the images before CRIU runs, but CRIU,
// as root, opens them again by path afterwards: a user who swaps a path for
// a link to root's file between the two gets root's file in the job. So
// once CRIU has restored every process, and before it lets any run (its
// post-restore notification), CheckRestoredFiles looks at the open file
// objects themselves, through /proc/PID/fd/N and /proc/PID/map_files (which
// name the file a process holds, not a path that can be swapped), and asks
// the kernel whether the owner may use each file the way the process holds
// it. Anything swapped before that is caught; anything swapped after it
// changes a path, not what the processes hold.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cruz-hpc/cruz/internal/api"
)

// heldFile is one file a restored process holds, opened O_PATH by the agent
// through the process's own /proc entry.
type heldFile struct {
	pid  int
	comm string
	what string // "fd 3", "mapping 7f00-7f10", "executable", ...
	path string // as /proc names it (may end in " (deleted)")
	mode uint32 // unix.R_OK|W_OK|X_OK the hold needs; 0 (F_OK): none
	// how says how it is held, may what the owner must be allowed, for
	// errors ("opened for writing", "write").
	how, may string
	fd       int
}

// CheckRestoredFiles refuses the restored pod made from spec whose root is
// rootPID (as the agent sees it) if one of its processes holds a file (an
// open descriptor, a mapped file, its executable, working or root
// directory) that the pod's owner may not use that way. Files in criuDir
// (CRIU's work directory: its log, which CRIU's code in each process still
// holds until it lets the process run) are CRIU's own and left out.
func CheckRestoredFiles(rootPID int, spec Spec, criuDir string) error {
	pids, err := restoredPids(rootPID)
	if err != nil {
		return fmt.Errorf("pod %s: list the restored processes: %w", spec.Name, err)
	}
	own := criuFiles(criuDir)
	var held []*heldFile
	defer func() {
		for _, h := range held {
			unix.Close(h.fd)
		}
	}()
	seen := map[[3]uint64]bool{} // dev, ino, mode: each checked once
	add := func(h *heldFile) {
		var st unix.Stat_t
		if err := unix.Fstat(h.fd, &st); err == nil {
			key := [3]uint64{st.Dev, st.Ino, uint64(h.mode)}
			if own[[2]uint64{st.Dev, st.Ino}] || seen[key] {
				unix.Close(h.fd)
				return
			}
			seen[key] = true
		}
		held = append(held, h)
	}
	for _, pid := range pids {
		if err := processFiles(pid, add); err != nil {
			return fmt.Errorf("pod %s: %w", spec.Name, err)
		}
	}
	owner := Owner(spec)
	name := userName(owner.UID)
	return asOwner(owner, func() error {
		for _, h := range held {
			err := unix.Faccessat2(h.fd, "", h.mode, unix.AT_EMPTY_PATH|unix.AT_EACCESS)
			if err != nil {
				return api.Errorf(api.ErrForbidden, "pod %s: restored pod holds %s %s, which %s may not %s (process %d %s, %s: %v); "+
					"it is not the file the job had at the checkpoint, or its permissions changed (was the path swapped for a link?): a restore gives the job only files its owner may use that way; "+
					"put back the file the job had, or restart from another checkpoint",
					spec.Name, h.path, h.how, name, h.may, h.pid, h.comm, h.what, err)
			}
		}
		return nil
	})
}

// restoredPids lists the restored processes: rootPID, every process in the
// pid namespace it is the init of, and their descendants (in namespaces of
// their own).
func restoredPids(rootPID int) ([]int, error) {
	pids := treePids(rootPID)
	if !isNsInit(rootPID) {
		return pids, nil
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", rootPID))
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for _, p := range pids {
		seen[p] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || seen[p] {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); err == nil && l == ns {
			for _, q := range treePids(p) {
				if !seen[q] {
					seen[q] = true
					pids = append(pids, q)
				}
			}
		}
	}
	return pids, nil
}

// isNsInit says whether pid is PID 1 of its own pid namespace.
func isNsInit(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(l, "NSpid:"); ok {
			ids := strings.Fields(f)
			return len(ids) > 1 && ids[len(ids)-1] == "1"
		}
	}
	return false
}

// processFiles opens, O_PATH and as root, every file process pid holds and
// hands each to add. A process that is gone is skipped (a restored zombie
// holds nothing).
func processFiles(pid int, add func(*heldFile)) error {
	dir := fmt.Sprintf("/proc/%d", pid)
	comm, _ := os.ReadFile(dir + "/comm")
	name := strings.TrimSpace(string(comm))
	// open opens what proc (a magic link) leads to; nil if nothing.
	open := func(proc, what, how, may string, mode uint32) (*heldFile, error) {
		target, err := os.Readlink(proc)
		if err != nil || !strings.HasPrefix(target, "/") {
			// Gone, or not a file of a file system (a socket, pipe or
			// anonymous inode): nothing a path could have swapped.
			return nil, nil
		}
		fd, err := unix.Open(proc, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
				return nil, nil
			}
			return nil, fmt.Errorf("open %s (%s): %w", proc, target, err)
		}
		return &heldFile{pid: pid, comm: name, what: what, path: target, mode: mode, how: how, may: may, fd: fd}, nil
	}
	hold := func(proc, what, how, may string, mode uint32) error {
		h, err := open(proc, what, how, may, mode)
		if h != nil {
			add(h)
		}
		return err
	}
	// What it runs and where, first: its executable is mapped too, and
	// the error should say what is wrong with it.
	for _, x := range []struct{ link, what, how, may string }{
		{"exe", "executable", "as its executable", "run"},
		{"cwd", "working directory", "as its working directory", "enter"},
		{"root", "root directory", "as its root directory", "enter"},
	} {
		if err := hold(dir+"/"+x.link, x.what, x.how, x.may, unix.X_OK); err != nil {
			return err
		}
	}
	fds, err := os.ReadDir(dir + "/fd")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("read the descriptors of process %d: %w", pid, err)
	}
	for _, e := range fds {
		flags, err := fdFlags(fmt.Sprintf("%s/fdinfo/%s", dir, e.Name()))
		if err != nil {
			continue // closed since
		}
		mode, how, may := fdAccess(flags)
		if err := hold(fmt.Sprintf("%s/fd/%s", dir, e.Name()), "fd "+e.Name(), how, may, mode); err != nil {
			return err
		}
	}
	var exe unix.Stat_t
	if unix.Stat(dir+"/exe", &exe) != nil {
		exe.Ino = 0
	}
	maps, err := os.ReadFile(dir + "/maps")
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("read the mappings of process %d: %w", pid, err)
	}
	mapped := map[string]bool{} // dev, inode and sharing already opened
	for _, l := range strings.Split(string(maps), "\n") {
		f := strings.Fields(l)
		// start-end perms offset dev inode [path]: only files have an inode.
		if len(f) < 6 || f[4] == "0" {
			continue
		}
		// Mapping a file needs it open for reading; a shared writable
		// mapping writes to the file, so needs it open for writing too.
		shared := len(f[1]) == 4 && f[1][1] == 'w' && f[1][3] == 's'
		// A library is mapped in several pieces, all of one file: the
		// same device and inode are the same file object.
		key := fmt.Sprintf("%s %s %t", f[3], f[4], shared)
		if mapped[key] {
			continue
		}
		mapped[key] = true
		mode, how, may := uint32(unix.R_OK), "mapped", "read"
		if shared {
			mode, how, may = unix.R_OK|unix.W_OK, "mapped shared for writing", "read and write"
		}
		h, err := open(dir+"/map_files/"+f[0], "mapping "+f[0], how, may, mode)
		if err != nil {
			return err
		}
		if h == nil {
			continue
		}
		var st unix.Stat_t
		if !shared && exe.Ino != 0 && unix.Fstat(h.fd, &st) == nil && st.Dev == exe.Dev && st.Ino == exe.Ino {
			// The kernel maps a program it runs without asking for read
			// permission (an execute-only program): running it is what
			// its owner must be allowed, checked above.
			h.mode, h.how, h.may = unix.X_OK, "mapped as its executable", "run"
		}
		add(h)
	}
	return nil
}

// fdFlags reads the open flags of a descriptor from its fdinfo (octal).
func fdFlags(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			return int(n), err
		}
	}
	return 0, fmt.Errorf("%s: no flags", path)
}

// fdAccess is the access a descriptor with open flags needs, how it is
// held and what the owner must be allowed, in words.
func fdAccess(flags int) (uint32, string, string) {
	if flags&unix.O_PATH != 0 {
		// An O_PATH descriptor reads and writes nothing.
		return unix.F_OK, "opened as a path only (O_PATH)", "reach"
	}
	switch flags & unix.O_ACCMODE {
	case unix.O_WRONLY:
		return unix.W_OK, "opened for writing", "write"
	case unix.O_RDWR:
		return unix.R_OK | unix.W_OK, "opened for reading and writing", "read and write"
	}
	return unix.R_OK, "opened for reading", "read"
}

// criuFiles lists (dev, ino) of the files in CRIU's work directory, which
// is the agent's own (no user can put a file there).
func criuFiles(dir string) map[[2]uint64]bool {
	out := map[[2]uint64]bool{}
	if dir == "" {
		return out
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(dir, e.Name()), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			out[[2]uint64{st.Dev, st.Ino}] = true
		}
	}
	return out
}

// userName names uid for messages.
func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return u.Username
	}
	return fmt.Sprintf("uid %d", uid)
}

package pod

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/creds"
	"github.com/cruz-hpc/cruz/internal/criu"
)

// CheckImageFiles refuses the images in dir of the pod made from spec if
// its owner could not, now, open a path the restore opens (an open file, a
// mapped file, a FIFO, an executable, a working or root directory) the way
// the restore opens it. CRIU restores as root and follows symbolic links:
// without this, a user who replaced a file the job held open by a link to
// a file only root may write would have CRIU open that file for the job.
//
// The check is done just before CRIU runs, but CRIU opens the paths again
// itself: a user who swaps a path for a link between this check and
// CRIU's open is not stopped by it. CheckRestoredFiles, run once CRIU has
// restored the processes and before they run, closes that race; this one
// refuses early and says which path of the images is wrong.
func CheckImageFiles(dir string, spec Spec) error {
	uses, err := criu.ImageFiles(dir)
	if err != nil {
		return api.Errorf(api.ErrInvalid, "pod %s: read the files in its images: %w", spec.Name, err)
	}
	owner := Owner(spec)
	return asOwner(owner, func() error {
		for _, u := range uses {
			if err := openAsOwner(u); err != nil {
				return api.Errorf(api.ErrForbidden, "pod %s: the job's owner (uid %d) cannot open %s (the job's %s) %s now: %v; "+
					"a restore opens each file only as the job's owner could: put back the file the job had (not a link to another's file), or restart from another checkpoint",
					spec.Name, owner.UID, u.Path, u.Why, describeAccess(u), err)
			}
		}
		return nil
	})
}

// openAsOwner opens u the way the restore would, on a thread that has the
// owner's file system identity (asOwner), and closes it again.
func openAsOwner(u criu.FileUse) error {
	switch {
	case u.Exec || u.Why == "working directory" || u.Why == "root directory":
		// Running a program and entering a directory need search (x)
		// permission, not read: check that, as the owner's fs ids.
		return unix.Faccessat2(unix.AT_FDCWD, u.Path, unix.X_OK, unix.AT_EACCESS)
	}
	// Creating or truncating is never a restore's to do; O_NONBLOCK keeps a
	// FIFO or device from blocking the agent.
	flags := u.Flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC) | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK
	fd, err := unix.Open(u.Path, flags, 0)
	if errors.Is(err, unix.ENXIO) {
		// A FIFO opened for writing that has no reader now (or a device
		// with nothing behind it): the kernel checks permission before it
		// says so, so the owner may open it; CRIU makes the FIFO's other
		// end itself.
		return nil
	}
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func describeAccess(u criu.FileUse) string {
	switch {
	case u.Exec:
		return "to run it"
	case u.Why == "working directory" || u.Why == "root directory":
		return "to enter it"
	}
	var s string
	switch u.Flags & unix.O_ACCMODE {
	case unix.O_WRONLY:
		s = "for writing"
	case unix.O_RDWR:
		s = "for reading and writing"
	default:
		s = "for reading"
	}
	if u.Flags&unix.O_APPEND != 0 {
		s += " (append)"
	}
	return s
}

// asOwner runs fn on an OS thread whose file system uid, gid and groups
// are the owner's: every path fn opens is resolved and checked as the owner
// would have it (following links as the owner, with no capability to
// override file permissions: the kernel drops them from a thread whose fs
// uid leaves 0). Credentials are per thread in Linux; the thread is locked
// to fn's goroutine and never unlocked, so that it ends with the goroutine
// and no other code of the agent ever runs on it.
func asOwner(o creds.Owner, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		done <- func() error {
			gids := append([]uint32(nil), o.Groups...)
			var p unsafe.Pointer
			if len(gids) > 0 {
				p = unsafe.Pointer(&gids[0])
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0); e != 0 {
				return fmt.Errorf("take the job owner's groups: %w", e)
			}
			unix.RawSyscall(unix.SYS_SETFSGID, uintptr(o.GID), 0, 0)
			unix.RawSyscall(unix.SYS_SETFSUID, uintptr(o.UID), 0, 0)
			// setfsuid and setfsgid report no error; asking with an
			// invalid id returns the current one.
			fsuid, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0)
			fsgid, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0)
			if uint32(fsuid) != o.UID || uint32(fsgid) != o.GID {
				return errors.New("take the job owner's file system identity: not permitted")
			}
			return fn()
		}()
	}()
	return <-done
}

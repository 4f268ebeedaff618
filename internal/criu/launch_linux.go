package criu

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// CRIU dumps a pod as the pod's user, with root's capabilities.
//
// To dump a process CRIU reads its resource limits, and the kernel allows
// that only to a process whose real uid and gid match the target's, or that
// holds CAP_SYS_RESOURCE. Root may not hold it (container sandboxes drop
// it), so the agent runs CRIU with the pod user's uids and gids and every
// capability root has, as ambient capabilities, in CRIU's "unprivileged"
// mode, which is made for exactly this: a non-root CRIU with
// CAP_CHECKPOINT_RESTORE and friends. Files it writes are made root-owned
// when the checkpoint is committed (internal/store).

// criuAsArg is the hidden first argument that makes the agent binary act as
// that launcher (see ExecCRIUAs).
const criuAsArg = "__cruz-criu-as"

// IsCRIUAs tells main whether this process was started to launch CRIU.
func IsCRIUAs(args []string) bool { return len(args) > 1 && args[1] == criuAsArg }

// criuAsCommand is the argv that runs criu with uid and gid.
func criuAsCommand(self string, uid, gid uint32, criu string, args ...string) []string {
	return append([]string{self, criuAsArg, strconv.Itoa(int(uid)), strconv.Itoa(int(gid)), criu}, args...)
}

// ExecCRIUAs becomes args' uid and gid, keeps every capability (effective,
// permitted, inheritable and ambient), and execs CRIU. It returns only on
// failure. Everything happens on one locked thread, which is the one that
// execs: credentials and capabilities are per thread in Linux.
func ExecCRIUAs(args []string) int {
	runtime.LockOSThread()
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "cruzd: start criu as the pod's user: %s: %v\n", what, err)
		return 127
	}
	if len(args) < 5 {
		return fail("usage", fmt.Errorf("%s UID GID CRIU ARGS", criuAsArg))
	}
	uid, err1 := strconv.Atoi(args[2])
	gid, err2 := strconv.Atoi(args[3])
	if err1 != nil || err2 != nil {
		return fail("bad uid or gid", fmt.Errorf("%q %q", args[2], args[3]))
	}
	// CRIU makes temporary mounts (/tmp/.criu.mntns.*) while it works. In
	// the node's mount namespace they would propagate into every pod's
	// (a slave of it), and a pod dumped meanwhile would carry a mount that
	// no longer exists at its restore. So CRIU runs in a mount namespace
	// of its own, a slave of the node's: it sees every mount, and nothing
	// it mounts goes back.
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fail("new mount namespace", err)
	}
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fail("make / a slave", err)
	}
	// no_new_privs passes from CRIU to the processes it restores (they
	// are its children), so a restored pod keeps what its init set (CRIU
	// does not save the flag in its images). CRIU itself gains nothing by
	// exec either way: it already holds what it needs.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("set no_new_privs", err)
	}
	if uid == 0 && gid == 0 {
		return execCRIU(args[4:], fail)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fail("keep capabilities", err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fail("setgroups", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
		return fail("setresgid", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fail("setresuid", e)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fail("capget", err)
	}
	for i := range data {
		data[i].Effective, data[i].Inheritable = data[i].Permitted, data[i].Permitted
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fail("capset", err)
	}
	for c := 0; c < 64; c++ {
		if data[c/32].Permitted&(1<<(c%32)) != 0 {
			if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil {
				return fail(fmt.Sprintf("raise ambient capability %d", c), err)
			}
		}
	}
	return execCRIU(args[4:], fail)
}

func execCRIU(argv []string, fail func(string, error) int) int {
	path := argv[0]
	if p, err := exec.LookPath(path); err == nil {
		path = p
	}
	err := syscall.Exec(path, argv, os.Environ())
	return fail("exec "+path, err)
}

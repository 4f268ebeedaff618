package store

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestOwnerACLEncoding(t *testing.T) {
	// Entries sorted by tag then id, little-endian, version 2.
	want := []byte{
		2, 0, 0, 0,
		0x01, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, // user::rw-
		0x02, 0, 4, 0, 0xe8, 0x03, 0, 0, // user:1000:r--
		0x04, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // group::---
		0x10, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, // mask::r--
		0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // other::---
	}
	assert.Equal(t, want, ownerACL(1000, false))

	es, err := decodeACL(ownerACL(1000, true))
	require.NoError(t, err)
	assert.Equal(t, []aclEntry{
		{aclUserObj, 7, aclUndefinedID},
		{aclUser, 5, 1000},
		{aclGroupObj, 0, aclUndefinedID},
		{aclMask, 5, aclUndefinedID},
		{aclOther, 0, aclUndefinedID},
	}, es)

	// Sorting: tag first, then id.
	got := encodeACL([]aclEntry{{aclOther, 0, aclUndefinedID}, {aclUser, 4, 7}, {aclUser, 4, 3}, {aclUserObj, 6, aclUndefinedID}})
	es, err = decodeACL(got)
	require.NoError(t, err)
	assert.Equal(t, []aclEntry{{aclUserObj, 6, aclUndefinedID}, {aclUser, 4, 3}, {aclUser, 4, 7}, {aclOther, 0, aclUndefinedID}}, es)

	_, err = decodeACL([]byte{1, 0, 0, 0})
	assert.Error(t, err)
	_, err = decodeACL([]byte{2, 0, 0, 0, 1})
	assert.Error(t, err)
}

func readACL(t *testing.T, path string) []aclEntry {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(path, aclXattrAccess, buf)
	require.NoError(t, err, "no access ACL on %s", path)
	es, err := decodeACL(buf[:n])
	require.NoError(t, err)
	return es
}

func wantACL(uid uint32, dir bool) []aclEntry {
	es, _ := decodeACL(ownerACL(uid, dir))
	return es
}

func statOf(t *testing.T, path string) (os.FileMode, *syscall.Stat_t) {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	return fi.Mode(), fi.Sys().(*syscall.Stat_t)
}

// asUser runs argv as uid/gid with no supplementary groups.
func asUser(uid uint32, argv ...string) (string, error) {
	id := strconv.FormatUint(uint64(uid), 10)
	args := append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups"}, argv...)
	var out bytes.Buffer
	cmd := exec.Command("setpriv", args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

func TestPermissionsAndACL(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: TestPermissionsAndACL needs root: it checks root ownership and reads images as another uid through setpriv; run `go test` as root")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("SKIPPED: TestPermissionsAndACL needs setpriv (package util-linux) to read a file as another uid")
	}
	// A base directory other users can traverse (t.TempDir's parent is 0700).
	base, err := os.MkdirTemp("", "cruz-store-acl-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o711))

	const uid, stranger = 54321, 54322
	s, err := Open(filepath.Join(base, "ckpts"), testKey)
	require.NoError(t, err)

	// While the checkpoint is written, the owner sees nothing of it.
	p, err := s.Begin("job1", Owner{UID: uid, GID: uid})
	require.NoError(t, err)
	writePods(t, p, defaultPods())
	tmp := filepath.Join(s.Root(), "job1", ".tmp-"+p.ID())
	out, err := asUser(uid, "ls", tmp)
	require.Error(t, err, "the owner must not see a checkpoint being written: %s", out)
	m := manifestFor(defaultPods())
	warnings, err := p.Commit(m)
	require.NoError(t, err)
	assert.Empty(t, warnings)

	jobDir := filepath.Join(s.Root(), "job1")
	ckpt := filepath.Join(jobDir, m.ID)
	file := filepath.Join(ckpt, "rank1", "pages-1.img")

	mode, st := statOf(t, s.Root())
	assert.Equal(t, os.FileMode(0o711), mode.Perm(), "root dir")
	assert.Equal(t, uint32(0), st.Uid)
	_, err = unix.Lgetxattr(s.Root(), aclXattrAccess, make([]byte, 64))
	assert.ErrorIs(t, err, unix.ENODATA, "root dir has no ACL")

	// Directories: root rwx, owner r-x via ACL (the group bits show the mask).
	for _, d := range []string{jobDir, ckpt, filepath.Join(ckpt, "rank0"), filepath.Join(ckpt, "rank0", "sub"), filepath.Join(ckpt, "rank1")} {
		mode, st := statOf(t, d)
		assert.True(t, mode.IsDir())
		assert.Equal(t, os.FileMode(0o750), mode.Perm(), d)
		assert.Equal(t, uint32(0), st.Uid, d)
		assert.Equal(t, uint32(0), st.Gid, d)
		assert.Equal(t, wantACL(uid, true), readACL(t, d), d)
	}
	// Files: root rw-, owner r-- (written 0644 by the test, fixed by Commit).
	for _, f := range []string{file, filepath.Join(ckpt, "rank0", "sub", "fdinfo-2.img"), filepath.Join(ckpt, manifestName)} {
		mode, st := statOf(t, f)
		assert.True(t, mode.IsRegular())
		assert.Equal(t, os.FileMode(0o640), mode.Perm(), f)
		assert.Equal(t, uint32(0), st.Uid, f)
		assert.Equal(t, uint32(0), st.Gid, f)
		assert.Equal(t, wantACL(uid, false), readACL(t, f), f)
	}
	// .seq is root's alone.
	mode, _ = statOf(t, filepath.Join(jobDir, seqName))
	assert.Equal(t, os.FileMode(0o600), mode.Perm())

	if _, err := exec.LookPath("getfacl"); err == nil {
		out, err := exec.Command("getfacl", "-n", "-p", "--omit-header", file).CombinedOutput()
		require.NoError(t, err, string(out))
		assert.Equal(t, []string{"user::rw-", "user:54321:r--", "group::---", "mask::r--", "other::---"},
			strings.Fields(string(out)))
		out, err = exec.Command("getfacl", "-n", "-p", "--omit-header", jobDir).CombinedOutput()
		require.NoError(t, err, string(out))
		assert.Equal(t, []string{"user::rwx", "user:54321:r-x", "group::---", "mask::r-x", "other::---"},
			strings.Fields(string(out)))
	} else {
		t.Log("getfacl not installed (package acl): checked the raw xattr only")
	}

	// The owner reads its images and manifest, and lists its checkpoints.
	out, err = asUser(uid, "cat", file)
	require.NoError(t, err, out)
	assert.Equal(t, "pages of rank 1", out)
	out, err = asUser(uid, "cat", filepath.Join(ckpt, manifestName))
	require.NoError(t, err, out)
	assert.Contains(t, out, `"signature"`)
	out, err = asUser(uid, "ls", jobDir)
	require.NoError(t, err, out)
	assert.Contains(t, out, m.ID)

	// ... but alters nothing.
	for _, sh := range []string{
		"echo x >> " + file,
		"rm -f " + file,
		"touch " + filepath.Join(ckpt, "rank1", "new.img"),
		"mv " + ckpt + " " + filepath.Join(jobDir, "ckpt-0099"),
		"mkdir " + filepath.Join(jobDir, "ckpt-0099"),
		"mkdir " + filepath.Join(s.Root(), "job2"),
		"chmod 777 " + file,
		"setfacl -m u:54322:r " + file,
	} {
		out, err := asUser(uid, "sh", "-c", sh)
		assert.Error(t, err, "owner could run %q: %s", sh, out)
	}
	// Another user reads nothing.
	out, err = asUser(stranger, "cat", file)
	require.Error(t, err)
	assert.Contains(t, out, "Permission denied")
	out, err = asUser(stranger, "ls", jobDir)
	require.Error(t, err)
	assert.Contains(t, out, "Permission denied")

	_, _, err = s.Load("job1", m.ID)
	require.NoError(t, err)
}

func TestACLUnsupportedFallsBackToRootOnly(t *testing.T) {
	calls := 0
	fsetxattr = func(fd int, attr string, data []byte, flags int) error {
		calls++
		return unix.EOPNOTSUPP
	}
	t.Cleanup(func() { fsetxattr = unix.Fsetxattr })

	s := openTestStore(t)
	p, err := s.Begin("job1", Owner{1000, 1000})
	require.NoError(t, err)
	writePods(t, p, defaultPods())
	m := manifestFor(defaultPods())
	warnings, err := p.Commit(m)
	require.NoError(t, err)
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "does not support POSIX ACLs")
	assert.Contains(t, warnings[0], "readable by root only, so the job owner (uid 1000) cannot read its images")
	assert.Equal(t, 1, calls, "after the first refusal no more ACLs are tried")

	ckpt := filepath.Join(s.Root(), "job1", m.ID)
	for _, d := range []string{filepath.Join(s.Root(), "job1"), ckpt, filepath.Join(ckpt, "rank0")} {
		mode, _ := statOf(t, d)
		assert.Equal(t, os.FileMode(0o700), mode.Perm(), d)
		_, err := unix.Lgetxattr(d, aclXattrAccess, make([]byte, 64))
		assert.True(t, errors.Is(err, unix.ENODATA), "%s: %v", d, err)
	}
	for _, f := range []string{filepath.Join(ckpt, "rank0", "core-1.img"), filepath.Join(ckpt, manifestName)} {
		mode, _ := statOf(t, f)
		assert.Equal(t, os.FileMode(0o600), mode.Perm(), f)
	}
	_, _, err = s.Load("job1", m.ID)
	require.NoError(t, err)
}

func TestRootOwnedJobGetsNoACL(t *testing.T) {
	s := openTestStore(t)
	m := commit(t, s, "job1", Owner{0, 0}, defaultPods())
	f := filepath.Join(s.Root(), "job1", m.ID, "rank0", "core-1.img")
	mode, _ := statOf(t, f)
	assert.Equal(t, os.FileMode(0o600), mode.Perm())
	_, err := unix.Lgetxattr(f, aclXattrAccess, make([]byte, 64))
	assert.ErrorIs(t, err, unix.ENODATA)
}

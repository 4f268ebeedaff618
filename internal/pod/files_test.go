package pod

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/criu"
)

// filesFixture makes, in a directory of /tmp every user may enter, files
// of a user that exists nowhere else (so nothing here is theirs by
// accident), and an images directory of root's.
func filesFixture(t *testing.T) (dir, images string, spec Spec) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("NOT RUN: taking another user's file system identity needs root")
	}
	spec = Spec{Name: "job-r0", UID: 4243, GID: 4243}
	// Not t.TempDir(): its parent is root's 0700 directory.
	dir, err := os.MkdirTemp("/tmp", "cruz-files-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	images = t.TempDir()
	return dir, images, spec
}

func writeOwned(t *testing.T, spec Spec, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	require.NoError(t, os.Chown(path, int(spec.UID), int(spec.GID)))
}

func appendTo(t *testing.T, path, more string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString(more)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// A log appended to and a file written in place are put back as they were
// at the dump, whatever the job did to them after it.
func TestSaveRestoreFiles(t *testing.T) {
	dir, images, spec := filesFixture(t)
	log, state, seq := filepath.Join(dir, "log"), filepath.Join(dir, "state"), filepath.Join(dir, "seq")
	writeOwned(t, spec, log, "step 1\n")
	writeOwned(t, spec, state, "AAAA")
	writeOwned(t, spec, seq, "row 1\n")
	var warnings []string
	require.NoError(t, saveFiles(images, spec, []criu.WrittenFile{
		{Path: log, Size: -1, Append: true},
		{Path: state, Size: 4},
		{Path: seq, Size: 6},
	}, 4, func(w string) { warnings = append(warnings, w) }))
	require.Len(t, warnings, 1, "seq is over the 4-byte bound left after state")
	assert.Contains(t, warnings[0], seq+" (6 bytes) is written in place but over store.max_file_bytes")

	appendTo(t, log, "step 2\n")
	require.NoError(t, os.WriteFile(state, []byte("BBBBBB"), 0))
	appendTo(t, seq, "row 2\n")
	require.NoError(t, RestoreFiles(images, spec))
	assert.Equal(t, "step 1\n", readString(t, log))
	assert.Equal(t, "AAAA", readString(t, state), "contents kept within the bound are written back")
	assert.Equal(t, "row 1\n", readString(t, seq), "a file over the bound is cut back to its size")
	for _, p := range []string{log, state, seq} {
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, spec.UID, st.Sys().(*syscall.Stat_t).Uid, "still the owner's")
	}
}

// A file over the bound that the job rewrote in place, or that shrank,
// cannot be put back: the restore says which and changes nothing at all.
func TestRestoreFilesRefusesWhatItCannotPutBack(t *testing.T) {
	dir, images, spec := filesFixture(t)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeOwned(t, spec, a, "0123456789")
	writeOwned(t, spec, b, "hello\n")
	require.NoError(t, saveFiles(images, spec, []criu.WrittenFile{{Path: a, Size: 10}, {Path: b, Size: -1, Append: true}}, 0, func(string) {}))

	require.NoError(t, os.WriteFile(a, []byte("01234X6789 and more"), 0))
	appendTo(t, b, "more\n")
	err := RestoreFiles(images, spec)
	require.ErrorIs(t, err, api.ErrConflict)
	assert.Contains(t, err.Error(), a+" was changed in place after the checkpoint")
	assert.Equal(t, "hello\nmore\n", readString(t, b), "nothing is cut when one file cannot be put back")

	require.NoError(t, os.WriteFile(a, []byte("0123"), 0))
	err = RestoreFiles(images, spec)
	require.ErrorIs(t, err, api.ErrConflict)
	assert.Contains(t, err.Error(), a+" is 4 bytes, shorter than the 10 it had at the checkpoint")
}

// The owner's files only: a path the job wrote that now leads (by a
// symbolic link) to root's file, or is root's file, is neither read at the
// dump nor cut at the restore.
func TestFilesAreTheOwners(t *testing.T) {
	dir, images, spec := filesFixture(t)
	rootFile := filepath.Join(dir, "root")
	require.NoError(t, os.WriteFile(rootFile, []byte("root's data, not to be cut\n"), 0o644))
	log := filepath.Join(dir, "log")
	writeOwned(t, spec, log, "mine\n")
	require.NoError(t, saveFiles(images, spec, []criu.WrittenFile{{Path: log, Size: -1, Append: true}}, 1<<20, func(string) {}))

	// The user swaps the log for a link to root's file, then for root's
	// file itself (a hard link, where the file system allows it).
	require.NoError(t, os.Remove(log))
	require.NoError(t, os.Symlink(rootFile, log))
	err := RestoreFiles(images, spec)
	require.ErrorIs(t, err, api.ErrForbidden)
	assert.Contains(t, err.Error(), "cannot open "+log)
	require.NoError(t, os.Remove(log))
	require.NoError(t, os.Link(rootFile, log))
	err = RestoreFiles(images, spec)
	require.ErrorIs(t, err, api.ErrForbidden)
	assert.Contains(t, err.Error(), "permission denied")
	assert.Equal(t, "root's data, not to be cut\n", readString(t, rootFile))

	// At the dump, root's file is not read for the job either.
	images2 := t.TempDir()
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("secret"), 0o600))
	err = saveFiles(images2, spec, []criu.WrittenFile{{Path: secret, Size: 6}}, 1<<20, func(string) {})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "which its owner (uid 4243) cannot read now")
	entries, _ := os.ReadDir(images2)
	assert.Empty(t, entries, "nothing of root's file is saved")
}

// A checkpoint of a job that writes no files, or only the kernel's (in
// /proc, /sys), has nothing to put back.
func TestRestoreFilesNone(t *testing.T) {
	_, images, spec := filesFixture(t)
	require.NoError(t, saveFiles(images, spec, nil, 1<<20, func(string) {}))
	require.NoError(t, RestoreFiles(images, spec))
	require.NoError(t, saveFiles(images, spec, []criu.WrittenFile{{Path: "/proc/version", Size: 0}, {Path: "/sys/devices/system/cpu/online", Size: 4096}}, 1<<20, func(string) {}))
	entries, err := os.ReadDir(images)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing kept of the kernel's files")
	require.NoError(t, RestoreFiles(images, spec))
}

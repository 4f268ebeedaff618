package pod

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cruz-hpc/cruz/internal/creds"
	"github.com/cruz-hpc/cruz/internal/criu"
)

// openAs opens u as owner, as CheckImageFiles does.
func openAs(o creds.Owner, u criu.FileUse) error {
	return asOwner(o, func() error { return openAsOwner(u) })
}

// Paths are opened with the owner's rights, never root's: links are
// followed as the owner, and root's files stay closed to it.
func TestOpenAsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("NOT RUN: taking another user's file system identity needs root")
	}
	const uid, gid = 4242, 4242 // no such user: nothing here is theirs by accident
	owner := creds.Owner{UID: uid, GID: gid}
	// Not t.TempDir(): its parent is root's 0700 directory.
	dir, err := os.MkdirTemp("/tmp", "cruz-openas-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	own := filepath.Join(dir, "own")
	require.NoError(t, os.WriteFile(own, nil, 0o644))
	require.NoError(t, os.Chown(own, uid, gid))
	rootFile := filepath.Join(dir, "root")
	require.NoError(t, os.WriteFile(rootFile, []byte("x"), 0o644))
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("x"), 0o600))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(rootFile, link))
	private := filepath.Join(dir, "private")
	require.NoError(t, os.Mkdir(private, 0o700))

	ownFifo := filepath.Join(dir, "fifo")
	require.NoError(t, unix.Mkfifo(ownFifo, 0o600))
	require.NoError(t, os.Chown(ownFifo, uid, gid))
	rootFifo := filepath.Join(dir, "rootfifo")
	require.NoError(t, unix.Mkfifo(rootFifo, 0o600))

	appendW := unix.O_WRONLY | unix.O_APPEND
	for _, c := range []struct {
		u    criu.FileUse
		want error
	}{
		{criu.FileUse{Path: own, Flags: appendW, Why: "open file"}, nil},
		{criu.FileUse{Path: own, Flags: unix.O_RDWR | unix.O_CREAT | unix.O_TRUNC, Why: "open file"}, nil},
		{criu.FileUse{Path: rootFile, Flags: unix.O_RDONLY, Why: "open file"}, nil},
		{criu.FileUse{Path: rootFile, Flags: appendW, Why: "open file"}, unix.EACCES},
		{criu.FileUse{Path: link, Flags: appendW, Why: "open file"}, unix.EACCES},
		{criu.FileUse{Path: link, Flags: unix.O_RDONLY, Why: "mapped file"}, nil},
		{criu.FileUse{Path: secret, Flags: unix.O_RDONLY, Why: "mapped file"}, unix.EACCES},
		{criu.FileUse{Path: private, Dir: true, Why: "working directory"}, unix.EACCES},
		{criu.FileUse{Path: dir, Dir: true, Why: "working directory"}, nil},
		{criu.FileUse{Path: secret, Exec: true, Why: "executable"}, unix.EACCES},
		{criu.FileUse{Path: "/bin/sh", Exec: true, Why: "executable"}, nil},
		{criu.FileUse{Path: filepath.Join(dir, "gone"), Flags: unix.O_RDONLY, Why: "open file"}, unix.ENOENT},
		// A FIFO held open for writing, with no reader at restore time.
		{criu.FileUse{Path: ownFifo, Flags: unix.O_WRONLY, Why: "open file"}, nil},
		{criu.FileUse{Path: ownFifo, Flags: unix.O_RDONLY, Why: "open file"}, nil},
		{criu.FileUse{Path: rootFifo, Flags: unix.O_WRONLY, Why: "open file"}, unix.EACCES},
	} {
		err := openAs(owner, c.u)
		if c.want == nil {
			assert.NoError(t, err, "%v", c.u)
		} else {
			assert.ErrorIs(t, err, c.want, "%v", c.u)
		}
	}
	// Nothing was created or truncated, and the caller's own thread is root
	// as before.
	_, err = os.Stat(filepath.Join(dir, "gone"))
	assert.True(t, os.IsNotExist(err))
	b, err := os.ReadFile(rootFile)
	require.NoError(t, err)
	assert.Equal(t, "x", string(b))
	require.NoError(t, unix.Access(secret, unix.R_OK))
}

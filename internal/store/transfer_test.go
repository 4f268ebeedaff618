package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Another node's agent finds the pod directories the coordinator made, by
// ids it validates, never by a path; symlinks and unknown ids are refused.
func TestPendingPodDirForOtherNodes(t *testing.T) {
	s := openTestStore(t)
	p, err := s.Begin("job1", Owner{UID: 1000, GID: 1000})
	require.NoError(t, err)
	dir, err := p.PodDir("rank0")
	require.NoError(t, err)

	got, err := s.PendingPodDir("job1", p.ID(), "rank0")
	require.NoError(t, err)
	assert.Equal(t, dir, got)

	for _, tc := range []struct{ job, id, pod, want string }{
		{"job1", p.ID(), "rank9", "was the checkpoint aborted"},
		{"job1", "../x", "rank0", "pending checkpoint id"},
		{"../job1", p.ID(), "rank0", "job id"},
		{"job1", p.ID(), "../rank0", "pod name"},
		{"job1", "ckpt-9999", "rank0", "was the checkpoint aborted"},
	} {
		_, err := s.PendingPodDir(tc.job, tc.id, tc.pod)
		require.Error(t, err, "%+v", tc)
		assert.Contains(t, err.Error(), tc.want, "%+v", tc)
	}
	// A symlink in place of a pod directory is not followed.
	require.NoError(t, os.Symlink(t.TempDir(), filepath.Join(filepath.Dir(dir), "rank1")))
	_, err = s.PendingPodDir("job1", p.ID(), "rank1")
	require.Error(t, err)
	require.NoError(t, p.Abort())
}

// A transfer (for a migration) is a temporary directory that can only be
// aborted; it takes no checkpoint number.
func TestTransfer(t *testing.T) {
	s := openTestStore(t)
	x, err := s.BeginTransfer("job1", Owner{UID: 1000, GID: 1000})
	require.NoError(t, err)
	assert.Regexp(t, `^xfer-[0-9a-f]{16}$`, x.ID())
	dir, err := x.PodDir("rank0")
	require.NoError(t, err)
	got, err := s.PendingPodDir("job1", x.ID(), "rank0")
	require.NoError(t, err)
	assert.Equal(t, dir, got)
	td, err := s.TransferDir("job1", x.ID())
	require.NoError(t, err)
	assert.Equal(t, filepath.Dir(dir), td)
	_, err = x.Commit(&Manifest{})
	assert.ErrorIs(t, err, errTransfer)
	require.NoError(t, x.Abort())
	assert.NoDirExists(t, td)

	p, err := s.Begin("job1", Owner{UID: 1000, GID: 1000})
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0001", p.ID(), "a transfer takes no checkpoint number")
	require.NoError(t, p.Abort())
}

// CleanDeleted finishes interrupted deletions but leaves checkpoints being
// written (which another node's agent may own) alone.
func TestCleanDeleted(t *testing.T) {
	s := openTestStore(t)
	p, err := s.Begin("job1", Owner{UID: 1000, GID: 1000})
	require.NoError(t, err)
	_, err = p.PodDir("rank0")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(s.Root(), ".del-job2.1"), 0o700))
	require.NoError(t, os.MkdirAll(filepath.Join(s.Root(), "job1", ".del-ckpt-0007"), 0o700))
	n, err := s.CleanDeleted()
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.NoDirExists(t, filepath.Join(s.Root(), ".del-job2.1"))
	assert.DirExists(t, filepath.Join(s.Root(), "job1", ".tmp-"+p.ID()), "a checkpoint being written stays")
	require.NoError(t, p.Abort())
}

package store

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Each job is charged to its owner: two users' jobs, one of them with a
// checkpoint being written, and root's own.
func TestJobsUsage(t *testing.T) {
	s := openTestStore(t)
	alice, bob := Owner{UID: 1001, GID: 1001}, Owner{UID: 1002, GID: 1002}
	commit(t, s, "a1", alice, defaultPods())
	commit(t, s, "a1", alice, defaultPods())
	commit(t, s, "b1", bob, defaultPods())
	commit(t, s, "r1", Owner{}, defaultPods())
	p, err := s.Begin("b2", bob)
	require.NoError(t, err)
	writePods(t, p, podFiles{"rank0": {"pages-1.img": "0123456789"}})
	written, err := p.Bytes()
	require.NoError(t, err)
	assert.Equal(t, int64(10), written, "the pending checkpoint counts what it wrote so far")

	all, err := s.JobsUsage()
	require.NoError(t, err)
	byJob := map[string]JobUsage{}
	for _, u := range all {
		byJob[u.Job] = u
	}
	require.Len(t, byJob, 4)
	assert.Equal(t, uint32(1001), byJob["a1"].UID)
	assert.Equal(t, 2, byJob["a1"].Checkpoints)
	assert.Equal(t, uint32(1002), byJob["b1"].UID)
	assert.Equal(t, uint32(1002), byJob["b2"].UID, "a job being written for the first time is its owner's")
	assert.Equal(t, 0, byJob["b2"].Checkpoints)
	assert.Equal(t, uint32(0), byJob["r1"].UID)
	// Two checkpoints take (about) twice one: the manifests differ only in
	// their ids, times and signatures.
	assert.InDelta(t, 2*byJob["b1"].Bytes, byJob["a1"].Bytes, 64)

	bobs, err := s.UserUsage(1002)
	require.NoError(t, err)
	assert.Equal(t, byJob["b1"].Bytes+byJob["b2"].Bytes, bobs)
	none, err := s.UserUsage(4242)
	require.NoError(t, err)
	assert.Zero(t, none)
	require.NoError(t, p.Abort())
}

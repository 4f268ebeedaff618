package agent

import (
	"context"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A checkpoint that would take its owner past the quota, judged by the
// job's last one, is refused before any node is asked anything; the job
// runs on and its last checkpoint stays the latest.
func TestCheckpointOverQuotaIsRefusedBeforeTheJobIsHeld(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	_, err := a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err)
	used, err := a.store.UserUsage(j.rec.UID)
	require.NoError(t, err)
	a.cfg.Store.Quota = used + 10 // room, but not for another checkpoint
	calls := len(fc.log())

	_, err = a.checkpointLocked(context.Background(), j, false)
	require.ErrorIs(t, err, api.ErrTooLarge)
	assert.ErrorContains(t, err, "checkpoint of job job1 refused: user tester")
	assert.ErrorContains(t, err, "has a checkpoint store quota of")
	assert.ErrorContains(t, err, "(store.quota)", "the message names the key")
	assert.ErrorContains(t, err, "the job runs on")
	assert.Len(t, fc.log(), calls, "no node was asked anything")
	assert.Equal(t, "ckpt-0001", latest(t, a, "job1"))
	assert.Empty(t, leftovers(t, a, "job1"))
	assert.Equal(t, api.StateRunning, j.state())
}

// A first checkpoint (nothing to judge by) whose images pass the quota is
// abandoned after the dump: the job was resumed, nothing is committed or
// left behind.
func TestCheckpointThatWritesPastTheQuotaIsAbandoned(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	a.cfg.Store.Quota = 10 // the fake images take more

	_, err := a.checkpointLocked(context.Background(), j, false)
	require.ErrorIs(t, err, api.ErrTooLarge)
	assert.ErrorContains(t, err, "quota of 10 B")
	assert.Equal(t, "", latest(t, a, "job1"))
	assert.Empty(t, leftovers(t, a, "job1"))
	for _, n := range []string{"n1", "n2"} {
		assert.Equal(t, []api.NodeOp{api.OpBlock, api.OpBlock, api.OpDump, api.OpResume, api.OpResume}, fc.opsOn(n), "node %s resumed its pods after the dump", n)
	}
	assert.Equal(t, api.StateRunning, j.state())
	used, err := a.store.UserUsage(j.rec.UID)
	require.NoError(t, err)
	assert.LessOrEqual(t, used, int64(10), "the abandoned images are gone (the job keeps the number it handed out)")
}

// Only the job's owner is charged: another user's checkpoints do not
// count against a quota, and are not touched.
func TestQuotaChargesTheOwnerOnly(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	other := addJob(t, a, fc, "other", map[string]string{"mpiexec": "n1", "r0": "n2"})
	other.rec.UID, other.rec.User = 4242, "someone"
	_, err := a.checkpointLocked(context.Background(), other, false)
	require.NoError(t, err)
	theirs, err := a.store.UserUsage(4242)
	require.NoError(t, err)
	require.Positive(t, theirs)

	j := addJob(t, a, fc, "job1", map[string]string{"mpiexec": "n1", "r0": "n2"})
	a.cfg.Store.Quota = theirs + 10 // one checkpoint fits; with theirs, two would not
	_, err = a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err, "the other user's checkpoints are not charged to this one")
	assert.Equal(t, "ckpt-0001", latest(t, a, "other"), "and stay")
}

// After an attempt abandoned for the quota, the next one is judged by what
// that attempt wrote, and refused before the job is held.
func TestCheckpointAfterAnAbandonedOneIsRefusedEarly(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	a.cfg.Store.Quota = 10
	_, err := a.checkpointLocked(context.Background(), j, false)
	require.ErrorContains(t, err, "this checkpoint wrote")
	calls := len(fc.log())
	_, err = a.checkpointLocked(context.Background(), j, false)
	require.ErrorIs(t, err, api.ErrTooLarge)
	assert.ErrorContains(t, err, "its last checkpoint (or attempt) took")
	assert.Len(t, fc.log(), calls, "no node was asked anything")
}

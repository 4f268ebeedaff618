package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/store"
	"github.com/stretchr/testify/require"
)

// TestStoreOwnerRefusals: the store's refusal of another owner's job
// directory reaches the caller as a forbidden request, before anything is
// done: a run of that job id, a checkpoint, cruz rm --checkpoints (the job
// stays, running), cruz checkpoints and a restart.
func TestStoreOwnerRefusals(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	cruzt2 := store.Owner{UID: 1002, GID: 1003}
	plant := func(job string) {
		t.Helper()
		p, err := a.store.JobFile(job, cruzt2, "output.log")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, []byte("cruzt2's\n"), 0o600))
	}

	plant("slurm-5-0")
	user := caller{UID: 1001, GID: 1002, User: "cruzt1"}
	_, err := a.run(context.Background(), user, api.RunRequest{NP: 1, Argv: []string{"/bin/true"}, Dir: "/", Plain: true}, "slurm-5-0")
	require.ErrorIs(t, err, api.ErrForbidden)
	require.EqualError(t, err, "job slurm-5-0's checkpoints belong to cruzt2 (uid 1002), not cruzt1 (uid 1001): ask an administrator to remove them (as root: cruz rm --checkpoints slurm-5-0, or rm -r "+filepath.Join(a.store.Root(), "slurm-5-0")+" if no agent knows the job)")
	require.Empty(t, a.jobList(), "no job made")

	// A job of root's (the test's user) whose id's directory is cruzt2's.
	j := addJob(t, a, fc, "job1", twoNodes)
	plant("job1")
	const refused = "job job1's checkpoints belong to cruzt2 (uid 1002), not root (uid 0)"
	_, err = a.checkpointLocked(context.Background(), j, false)
	require.ErrorIs(t, err, api.ErrForbidden)
	require.ErrorContains(t, err, refused)
	err = a.Remove(rootCaller, "job1", true)
	require.ErrorIs(t, err, api.ErrForbidden)
	require.EqualError(t, err, "delete checkpoints of job job1: "+refused)
	_, err = a.lookup(rootCaller, "job1")
	require.NoError(t, err, "the job is still there")
	require.True(t, j.hasPods(), "and still running")
	j.mu.Lock()
	j.rec.State = api.StateStopped // as if stopped at a checkpoint, elsewhere
	j.mu.Unlock()
	_, _, err = a.restart(context.Background(), rootCaller, j, "", func([]api.PodSpec) error { return nil }, nil)
	require.ErrorIs(t, err, api.ErrForbidden)
	b, err := os.ReadFile(filepath.Join(a.store.Root(), "job1", "output.log"))
	require.NoError(t, err)
	require.Equal(t, "cruzt2's\n", string(b), "cruzt2's file is untouched")
}

// TestRetentionDeletesOnlyTheOwnersCheckpoints: retention (keep 3) deletes
// the job's oldest checkpoint; in a directory whose owner record names
// another user (a store written by hand, or broken), it deletes nothing.
func TestRetentionDeletesOnlyTheOwnersCheckpoints(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	for _, other := range []bool{false, true} {
		id := map[bool]string{false: "job1", true: "job2"}[other]
		j := addJob(t, a, fc, id, twoNodes)
		for range 4 {
			_, err := a.checkpointLocked(context.Background(), j, false)
			require.NoError(t, err)
		}
		if other {
			rec := filepath.Join(a.store.Root(), id, ".owner")
			require.NoError(t, os.WriteFile(rec, []byte(`{"uid":1002,"gid":1003,"user":"cruzt2"}`), 0o600))
		}
		a.prune(j)
		list, _, err := a.store.List(id)
		require.NoError(t, err)
		var ids []string
		for _, m := range list {
			ids = append(ids, m.ID)
		}
		if other {
			require.Equal(t, []string{"ckpt-0001", "ckpt-0002", "ckpt-0003", "ckpt-0004"}, ids, "nothing deleted")
		} else {
			require.Equal(t, []string{"ckpt-0002", "ckpt-0003", "ckpt-0004"}, ids, "the oldest deleted")
		}
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStoreQuota: cruzt2's store quota (64 KiB) is less than one checkpoint
// of its job. Its first checkpoint is abandoned after the dump, its next
// refused before the job is held, each saying which quota and how much is
// used; its job runs on to the right end. cruzt1, with no quota, checkpoints
// meanwhile, and its checkpoints are untouched and restore. cruz df shows
// each user their own use (and quota), and root everyone's.
func TestStoreQuota(t *testing.T) {
	a := startAgent(t, agentOptions{storeTOML: `user_quotas = ["cruzt2=64KiB"]`})
	u1, u2 := testenv.LookupUser(t, "cruzt1"), testenv.LookupUser(t, "cruzt2")
	dir1, dir2 := testenv.TempDirFor(t, u1), testenv.TempDirFor(t, u2)
	const n = 300 // lines, 50 ms apart: room for the checkpoints on a busy machine
	run1 := a.startCruz(u1, dir1, "run", "--plain", "--name", "q1", "--interval", "off", "--", testenv.Bin(t, "counter"), fmt.Sprint(n), "50")
	run2 := a.startCruz(u2, dir2, "run", "--plain", "--name", "q2", "--interval", "off", "--", testenv.Bin(t, "counter"), fmt.Sprint(n), "50")
	run1.waitOutput(t, "line 3\n", 30*time.Second)
	run2.waitOutput(t, "line 3\n", 30*time.Second)

	id1 := a.checkpoint(u1, "q1")
	over := a.cruz(u2, "", "checkpoint", "q2")
	require.Equal(t, 1, over.Code, "stdout: %s", over.Stdout)
	assert.Contains(t, over.Stderr, `has a checkpoint store quota of 64.0 KiB (store.user_quotas "cruzt2=64KiB")`)
	assert.Contains(t, over.Stderr, "this checkpoint wrote", "the first is abandoned after its dump")
	assert.Contains(t, over.Stderr, "the job runs on")
	early := a.cruz(u2, "", "checkpoint", "q2")
	require.Equal(t, 1, early.Code, "stdout: %s", early.Stdout)
	assert.Contains(t, early.Stderr, "its last checkpoint (or attempt) took", "the next is refused before the job is held")
	assert.Equal(t, api.StateRunning, a.status(u2, "q2").State, "cruzt2's job runs on")
	t.Logf("abandoned: %s; refused: %s", strings.TrimSpace(over.Stderr), strings.TrimSpace(early.Stderr))

	// cruz df: each user sees their own.
	df := func(u testenv.User) api.StoreUsage {
		r := a.cruz(u, "", "df", "--json")
		require.Equal(t, 0, r.Code, r.Stderr)
		var su api.StoreUsage
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &su))
		return su
	}
	j1, j2 := a.status(u1, "q1").ID, a.status(u2, "q2").ID
	s2 := df(u2)
	require.Len(t, s2.Users, 1, "cruzt2 sees only its own use: %+v", s2)
	assert.Equal(t, "cruzt2", s2.Users[0].User)
	assert.Equal(t, int64(64<<10), s2.Users[0].Quota)
	assert.LessOrEqual(t, s2.Users[0].Bytes, int64(64<<10), "nothing over the quota is kept")
	assert.Zero(t, s2.Used, "nor the store's total, which would tell others' use")
	s1 := df(u1)
	require.Len(t, s1.Users, 1, "%+v", s1)
	require.Len(t, s1.Users[0].Jobs, 1)
	assert.Equal(t, j1, s1.Users[0].Jobs[0].Job)
	assert.Equal(t, 1, s1.Users[0].Jobs[0].Checkpoints)
	assert.Zero(t, s1.Users[0].Quota, "cruzt1 has no quota")
	rr := runCommand(t, exec.Command(testenv.Bin(t, "cruz"), "--socket", a.socket, "df", "--json"), time.Minute)
	require.Equal(t, 0, rr.Code, rr.Stderr)
	var sr api.StoreUsage
	require.NoError(t, json.Unmarshal([]byte(rr.Stdout), &sr))
	users := map[string]api.UserUsage{}
	for _, u := range sr.Users {
		users[u.User] = u
	}
	assert.Contains(t, users, "cruzt1", "root sees every user")
	assert.Contains(t, users, "cruzt2")
	assert.Equal(t, users["cruzt1"].Bytes+users["cruzt2"].Bytes, sr.Used)
	plain := a.cruz(u1, "", "df")
	require.Equal(t, 0, plain.Code, plain.Stderr)
	assert.Contains(t, plain.Stdout, j1)
	assert.NotContains(t, plain.Stdout, j2)

	// cruzt1's checkpoints still work: a stop-checkpoint and a restore of it.
	id2 := a.checkpoint(u1, "q1", "--stop")
	first := run1.wait(t, 30*time.Second)
	require.Equal(t, 75, first.Code, first.Stderr)
	assert.NotEqual(t, id1, id2)
	rest := a.cruz(u1, dir1, "restart", "q1")
	require.Equal(t, 0, rest.Code, rest.Stderr)
	assert.Equal(t, check.CounterLines(1, n), append(check.NonEmptyLines(first.Stdout), check.NonEmptyLines(rest.Stdout)...))
	out2 := run2.wait(t, time.Minute)
	require.Equal(t, 0, out2.Code, out2.Stderr)
	assert.Equal(t, check.CounterLines(1, n), check.NonEmptyLines(out2.Stdout), "cruzt2's job ran on to its end")

	r := a.cruz(u2, "", "checkpoints", "--json", "q2")
	require.Equal(t, 0, r.Code, r.Stderr)
	var l api.CheckpointList
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &l))
	assert.Empty(t, l.Checkpoints, "no checkpoint of cruzt2's was committed")
	entries, err := os.ReadDir(filepath.Join(a.store, j2))
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), ".tmp-"), "half-written %s left in the store", e.Name())
	}
	a.requireNoLeaks()
}

package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// get sends GET path to a's API as caller c; the status and the body.
func get(t *testing.T, a *Agent, c caller, path string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req = req.WithContext(context.WithValue(req.Context(), callerKey{}, c))
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// A job's events and checkpoints outlive a plain cruz rm in the store:
// its user and root read them there (marked as the store's), another user
// is refused; cruz rm --checkpoints removes them, and an event that comes
// after does not bring the job's directory back.
func TestEventsKeptInStoreAfterRemove(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	cruzt1 := caller{UID: 1001, GID: 1002, User: "cruzt1"}
	cruzt2 := caller{UID: 1002, GID: 1003, User: "cruzt2"}
	j := addJob(t, a, fc, "job1", twoNodes)
	j.mu.Lock()
	j.rec.UID, j.rec.GID = cruzt1.UID, cruzt1.GID
	j.mu.Unlock()
	a.event(j, api.Event{Kind: api.EventStarted, Message: "started on n1, n2"})
	_, err := a.Checkpoint(context.Background(), cruzt1, "job1", false, 0)
	require.NoError(t, err)

	code, body := get(t, a, cruzt1, "/v1/jobs/job1/events")
	require.Equal(t, http.StatusOK, code, string(body))
	var live api.EventList
	require.NoError(t, json.Unmarshal(body, &live))
	assert.False(t, live.FromStore, "the agent knows the job")
	require.Len(t, live.Events, 2)

	require.NoError(t, a.Remove(cruzt1, "job1", false))
	assert.NoDirExists(t, a.jobDir("job1"), "the run directory went")

	for _, c := range []caller{cruzt1, rootCaller} {
		code, body = get(t, a, c, "/v1/jobs/job1/events")
		require.Equal(t, http.StatusOK, code, string(body))
		var kept api.EventList
		require.NoError(t, json.Unmarshal(body, &kept))
		assert.True(t, kept.FromStore)
		require.Len(t, kept.Events, 2)
		assert.Equal(t, api.EventStarted, kept.Events[0].Kind)
		assert.Equal(t, "started on n1, n2", kept.Events[0].Message)
		assert.Equal(t, api.EventCheckpoint, kept.Events[1].Kind)
		assert.Equal(t, "ckpt-0001", kept.Events[1].Checkpoint)

		code, body = get(t, a, c, "/v1/jobs/job1/checkpoints")
		require.Equal(t, http.StatusOK, code, string(body))
		var cks api.CheckpointList
		require.NoError(t, json.Unmarshal(body, &cks))
		assert.True(t, cks.FromStore)
		require.Len(t, cks.Checkpoints, 1)
		assert.Equal(t, "ckpt-0001", cks.Checkpoints[0].ID)
	}

	const refused = `{"error":"job job1's checkpoints belong to cruzt1 (uid 1001), not cruzt2 (uid 1002) (root may read any job's)"}`
	for _, p := range []string{"/v1/jobs/job1/events", "/v1/jobs/job1/checkpoints"} {
		code, body = get(t, a, cruzt2, p)
		assert.Equal(t, http.StatusForbidden, code, p)
		assert.JSONEq(t, refused, string(body), p)
	}
	code, body = get(t, a, cruzt1, "/v1/jobs/nosuchjob/events")
	assert.Equal(t, http.StatusNotFound, code, string(body))
	assert.Contains(t, string(body), `job \"nosuchjob\" does not exist`)

	// With --checkpoints the job's directory goes, events and all.
	j2 := addJob(t, a, fc, "job2", twoNodes)
	a.event(j2, api.Event{Kind: api.EventStarted, Message: "x"})
	require.FileExists(t, filepath.Join(a.store.Root(), "job2", "events.jsonl"))
	require.NoError(t, a.Remove(rootCaller, "job2", true))
	a.event(j2, api.Event{Kind: api.EventExited, Message: "late"})
	assert.NoDirExists(t, filepath.Join(a.store.Root(), "job2"))
	code, _ = get(t, a, rootCaller, "/v1/jobs/job2/events")
	assert.Equal(t, http.StatusNotFound, code)
	_, err = os.Stat(a.jobDir("job2"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

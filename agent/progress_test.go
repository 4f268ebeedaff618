package agent

import (
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A watched checkpoint reports its phases in order, the pods of each node
// as it answers, and ends with the checkpoint's bytes.
func TestCheckpointReportsProgress(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	ctx, reports := collectProgress()
	m, err := a.checkpointLocked(ctx, j, false)
	require.NoError(t, err)
	got := reports()

	var phases []string
	dumped := 0
	for _, p := range got {
		assert.Equal(t, "checkpoint", p.Op)
		assert.Equal(t, "job1", p.Job)
		assert.Equal(t, 4, p.Pods)
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		if p.Phase == "dump" {
			dumped = max(dumped, p.PodsDone)
		}
	}
	assert.Equal(t, []string{"block", "dump", "resume", "commit", "done"}, phases)
	assert.Equal(t, 4, dumped, "every node's pods were counted as it answered")
	last := got[len(got)-1]
	assert.Equal(t, m.Bytes, last.Bytes)
	for i := 1; i < len(got); i++ {
		assert.GreaterOrEqual(t, got[i].ElapsedMS, got[i-1].ElapsedMS)
	}
}

// Nobody watching: nothing is reported, and nothing breaks.
func TestProgressUnwatched(t *testing.T) {
	p := newProgress(context.Background(), "checkpoint", "j", 2)
	assert.Nil(t, p)
	p.phase("dump")
	p.bytes(5)
	p.pollBytes(func() (int64, error) { return 0, nil })()
	assert.Equal(t, context.Background(), p.watchNodes(context.Background()))
}

// A watched restart reports the restore of every pod (counted as each
// node answers), the release, and done.
func TestRestartReportsProgress(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	_, err := a.checkpointLocked(context.Background(), j, true)
	require.NoError(t, err)
	require.Equal(t, api.StateStopped, j.state())

	ctx, reports := collectProgress()
	c := caller{UID: j.rec.UID, GID: j.rec.GID, User: "tester"}
	_, _, err = a.Restart(ctx, c, "job1", "", nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Remove(c, "job1", false) })
	got := reports()
	var phases []string
	restored := 0
	for _, p := range got {
		assert.Equal(t, "restart", p.Op)
		assert.Equal(t, 4, p.Pods)
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		if p.Phase == "restore" {
			restored = max(restored, p.PodsDone)
			assert.Positive(t, p.Bytes, "the bytes to read")
		}
	}
	assert.Equal(t, []string{"restore", "release", "done"}, phases)
	assert.Equal(t, 4, restored)
}

// collectProgress is a context whose operation's progress reports are
// kept, and what was reported so far.
func collectProgress() (context.Context, func() []api.Progress) {
	var mu sync.Mutex
	var got []api.Progress
	ctx := withProgress(context.Background(), func(p api.Progress) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, p)
	})
	return ctx, func() []api.Progress {
		mu.Lock()
		defer mu.Unlock()
		return append([]api.Progress(nil), got...)
	}
}

// A watched migration names the pod and its phase from its first report
// on, and goes through its phases in order.
func TestMigrateReportsProgress(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2", "n3")
	j := addJob(t, a, fc, "job1", twoNodes)
	ctx, reports := collectProgress()
	_, err := a.migrateLocked(ctx, j, "job1-r1", "n3")
	require.NoError(t, err)
	got := reports()
	require.NotEmpty(t, got)
	var phases []string
	for i, p := range got {
		assert.Equal(t, "migrate", p.Op)
		assert.Equal(t, "job1-r1", p.Pod, "report %d names the pod", i)
		assert.NotEmpty(t, p.Phase, "report %d names its phase", i)
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}
	assert.Equal(t, []string{"block", "dump", "restore", "release", "done"}, phases)
}

// A request for progress refused before anything was sent is answered
// with its status, not a stream.
func TestProgressRefusalKeepsItsStatus(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	addJob(t, a, fc, "job1", twoNodes)
	c := caller{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), User: "tester"}
	for _, tc := range []struct{ path, body string }{
		{"/v1/jobs/job1/restart", `{"progress":true}`}, // running: 409
		{"/v1/jobs/job1/migrate", `{"progress":true,"pod":"nope","to":"n2"}`},
	} {
		req := httptest.NewRequest("POST", tc.path, strings.NewReader(tc.body))
		req = req.WithContext(context.WithValue(req.Context(), callerKey{}, c))
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, req)
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"), "%s: %s", tc.path, rec.Body.String())
		assert.GreaterOrEqual(t, rec.Code, 400, "%s: %s", tc.path, rec.Body.String())
	}
}

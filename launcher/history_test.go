package launcher

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)

func ev(kind api.EventKind, msg string) api.Event {
	return api.Event{Time: t0, Kind: kind, Message: msg}
}

// cruz events -f prints the events so far, then each new one once, and
// returns when the job no longer runs, after one more look (the exited
// event comes just after the job's state).
func TestFollowEventsUntilTheJobEnds(t *testing.T) {
	log := []api.Event{ev(api.EventStarted, "on n1")}
	polls := 0
	fetch := func(context.Context) (api.EventList, error) {
		polls++
		switch polls {
		case 3:
			log = append(log, ev(api.EventCheckpoint, "ckpt-0001"))
		case 5:
			log = append(log, ev(api.EventExited, "status 0"))
		}
		return api.EventList{Events: append([]api.Event(nil), log...)}, nil
	}
	running := func(context.Context) (bool, error) { return polls < 4, nil }
	var out bytes.Buffer
	start := time.Now()
	require.NoError(t, followEvents(context.Background(), &out, fetch, running, 10*time.Millisecond))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3, out.String())
	assert.Contains(t, lines[0], "started")
	assert.Contains(t, lines[1], "checkpoint")
	assert.Contains(t, lines[2], "exited")
	assert.Equal(t, 5, polls, "one look after the job stopped running")
	assert.GreaterOrEqual(t, time.Since(start), 40*time.Millisecond, "paced by the interval, no busy loop")
}

// A job only the store knows (removed) is over: its events once, no wait.
// Ctrl-C (a cancelled context) ends a follow with no error; an agent's
// refusal ends it with the refusal.
func TestFollowEventsEnds(t *testing.T) {
	var out bytes.Buffer
	fetch := func(context.Context) (api.EventList, error) {
		return api.EventList{Events: []api.Event{ev(api.EventExited, "x")}, FromStore: true}, nil
	}
	never := func(context.Context) (bool, error) { panic("not asked") }
	require.NoError(t, followEvents(context.Background(), &out, fetch, never, time.Hour))
	assert.Equal(t, 1, strings.Count(out.String(), "exited"))

	ctx, cancel := context.WithCancel(context.Background())
	fetch = func(context.Context) (api.EventList, error) { return api.EventList{}, nil }
	polls := 0
	on := func(context.Context) (bool, error) {
		polls++
		if polls == 2 {
			cancel()
		}
		return true, nil
	}
	require.NoError(t, followEvents(ctx, &out, fetch, on, time.Millisecond))

	refused := api.Errorf(api.ErrForbidden, "job j belongs to uid 1001")
	fetch = func(context.Context) (api.EventList, error) { return api.EventList{}, refused }
	err := followEvents(context.Background(), &out, fetch, on, time.Millisecond)
	require.True(t, errors.Is(err, api.ErrForbidden), "%v", err)
}

// A history lists the kept checkpoints from their manifests and the
// deleted ones from the events, in checkpoint order.
func TestBuildHistory(t *testing.T) {
	cks := []api.Checkpoint{
		{ID: "ckpt-0010", Created: t0.Add(10 * time.Minute), Bytes: 4096, Phases: map[string]int64{"held": 40, "total": 90}},
		{ID: "ckpt-0003", Created: t0.Add(3 * time.Minute), Bytes: 2048, Stopped: true},
	}
	evs := []api.Event{
		ev(api.EventStarted, "on n1"),
		{Time: t0.Add(time.Minute), Kind: api.EventCheckpoint, Checkpoint: "ckpt-0001", Millis: 120},
		{Time: t0.Add(2 * time.Minute), Kind: api.EventCheckpoint, Checkpoint: "ckpt-0002"},
		{Time: t0.Add(2 * time.Minute), Kind: api.EventRecovered, Checkpoint: "ckpt-0002"},
		{Time: t0.Add(3 * time.Minute), Kind: api.EventStopped, Checkpoint: "ckpt-0003"},
		{Time: t0.Add(10 * time.Minute), Kind: api.EventCheckpoint, Checkpoint: "ckpt-0010"},
	}
	h := buildHistory(cks, evs)
	require.Equal(t, []historyEntry{
		{ID: "ckpt-0001", Created: t0.Add(time.Minute), Phases: map[string]int64{"total": 120}, Status: statusDeleted},
		{ID: "ckpt-0002", Created: t0.Add(2 * time.Minute), Status: statusDeleted},
		{ID: "ckpt-0003", Created: t0.Add(3 * time.Minute), Bytes: 2048, Status: statusKeptStopped},
		{ID: "ckpt-0010", Created: t0.Add(10 * time.Minute), Bytes: 4096, Phases: map[string]int64{"held": 40, "total": 90}, Status: statusKept},
	}, h)
	assert.Empty(t, buildHistory(nil, nil))
}

func TestEventsFollowUsage(t *testing.T) {
	code, out, stderr := runCLI(t, "events", "--json", "-f", "j")
	assert.Equal(t, ExitUsage, code)
	assert.Empty(t, out)
	assert.Contains(t, stderr, "--json and -f do not go together")
}

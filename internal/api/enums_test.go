package api

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the event table of docs/user-guide.md from EventKinds")

const (
	userGuide   = "../../docs/user-guide.md"
	eventsBegin = "<!-- event kinds: generated from internal/api/enums.go by `go test ./internal/api -update-docs` -->\n"
	eventsEnd   = "<!-- end of event kinds -->\n"
)

// eventTable is the user guide's table of event kinds.
func eventTable() string {
	var b strings.Builder
	b.WriteString("| Kind | What happened |\n|---|---|\n")
	for _, k := range EventKinds {
		b.WriteString("| `" + string(k.Kind) + "` | " + k.Says + " |\n")
	}
	return b.String()
}

// TestEventKindsDocumented keeps the user guide's list of event kinds the
// one the agent uses.
func TestEventKindsDocumented(t *testing.T) {
	b, err := os.ReadFile(userGuide)
	require.NoError(t, err)
	doc := string(b)
	start := strings.Index(doc, eventsBegin)
	end := strings.Index(doc, eventsEnd)
	require.True(t, start >= 0 && end > start, "docs/user-guide.md must hold the event table between %q and %q", eventsBegin, eventsEnd)
	want := eventTable()
	got := doc[start+len(eventsBegin) : end]
	if *updateDocs {
		doc = doc[:start+len(eventsBegin)] + want + doc[end:]
		require.NoError(t, os.WriteFile(userGuide, []byte(doc), 0o644))
		return
	}
	assert.Equal(t, want, got, "the event kinds in docs/user-guide.md are not the agent's: run go test ./internal/api -update-docs")
}

func TestEventKindsAreDistinct(t *testing.T) {
	seen := map[EventKind]bool{}
	for _, k := range EventKinds {
		assert.False(t, seen[k.Kind], "event kind %s listed twice", k.Kind)
		seen[k.Kind] = true
		assert.NotEmpty(t, k.Says)
	}
}

func TestErrorKindsMapToStatusesAndBack(t *testing.T) {
	for kind, status := range statusOfKind {
		err := Errorf(kind, "wrapped: %w", os.ErrNotExist)
		assert.Equal(t, status, HTTPStatus(err))
		assert.ErrorIs(t, err, kind)
		assert.ErrorIs(t, err, os.ErrNotExist, "the cause stays reachable")
		assert.ErrorIs(t, &Error{Status: status, Message: err.Error()}, kind, "an answer with the status is of the kind")
	}
	assert.Equal(t, 500, HTTPStatus(os.ErrClosed), "an error without a kind is internal")
	assert.NotErrorIs(t, &Error{Status: 404}, ErrConflict)
}

package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every refusal is logged by the agent in one line: the caller's uid and
// user, what was asked and why it was refused (the error the caller gets).
func TestRefusalsAreLoggedWithTheCaller(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	logs := &syncBuffer{}
	a.log = slog.New(slog.NewTextHandler(logs, nil))
	addJob(t, a, fc, "j1", map[string]string{"mpiexec": "n1", "r0": "n1"}) // the test's user's (not cruzt2's)
	other := caller{UID: 1002, GID: 1002, User: "cruzt2"}

	ask := func(c caller, method, path, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req = req.WithContext(context.WithValue(req.Context(), callerKey{}, c))
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	for _, c := range []struct{ method, path, body, why string }{
		{"DELETE", "/v1/jobs/j1", "", "job j1 belongs to user tester: you (uid 1002) can act only on your own jobs"},
		{"POST", "/v1/jobs/j1/restart", "{}", "job j1 belongs to user tester: you (uid 1002) can act only on your own jobs"},
		{"GET", "/v1/jobs/j1/attach", "", "job j1 belongs to user tester: you (uid 1002) can act only on your own jobs"},
		{"POST", "/v1/jobs/j1/migrate", `{"rank":0,"to":"n2"}`, "job j1 belongs to user tester: you (uid 1002) can act only on your own jobs"},
		{"POST", "/v1/drain", `{}`, "only root may drain a node"},
	} {
		logs.Reset()
		code, body := ask(other, c.method, c.path, c.body)
		require.Equal(t, http.StatusForbidden, code, "%s %s: %s", c.method, c.path, body)
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		require.Len(t, lines, 1, "one line per refusal: %q", logs.String())
		assert.Contains(t, lines[0], `level=WARN msg=refused uid=1002 user=cruzt2 what="`+c.method+" "+c.path+`" why="`+c.why)
	}

	// agent.slurm_only: cruz run refused, logged once.
	a.cfg.Agent.SlurmOnly = true
	logs.Reset()
	code, _ := ask(other, "POST", "/v1/jobs", `{"np":1,"argv":["/bin/true"],"dir":"/","plain":true}`)
	require.Equal(t, http.StatusForbidden, code)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Len(t, lines, 1, "%q", logs.String())
	assert.Contains(t, lines[0], `msg=refused uid=1002 user=cruzt2 what="POST /v1/jobs" why="this cluster runs jobs only under Slurm`)

	// Bad input is no refusal: information, with the same fields.
	logs.Reset()
	code, _ = ask(other, "GET", "/v1/jobs/nosuch", "")
	require.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, logs.String(), `level=INFO msg="request failed" uid=1002 user=cruzt2 what="GET /v1/jobs/nosuch" why=`)
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

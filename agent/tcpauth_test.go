package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNonceCacheRefusesReplay(t *testing.T) {
	c := newNonceCache(2*time.Minute, 10)
	t0 := time.Unix(1_800_000_000, 0)
	require.NoError(t, c.add("a", t0))
	require.NoError(t, c.add("b", t0.Add(time.Second)))
	assert.ErrorIs(t, c.add("a", t0.Add(time.Minute)), errReplay)
	assert.ErrorIs(t, c.add("b", t0.Add(2*time.Minute)), errReplay, "b expires a second later")
	// Expired: forgotten, and accepted again.
	require.NoError(t, c.add("a", t0.Add(2*time.Minute)))
	assert.Equal(t, 2, c.len())
	require.NoError(t, c.add("c", t0.Add(10*time.Minute)))
	assert.Equal(t, 1, c.len(), "every older entry was pruned")
}

func TestNonceCacheIsBounded(t *testing.T) {
	c := newNonceCache(2*time.Minute, 100)
	t0 := time.Unix(1_800_000_000, 0)
	for i := 0; i < 100; i++ {
		require.NoError(t, c.add(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Millisecond)))
	}
	assert.ErrorIs(t, c.add("full", t0.Add(time.Second)), errCacheFull)
	assert.ErrorIs(t, c.add("0", t0.Add(time.Second)), errReplay)
	assert.Equal(t, 100, c.len(), "a full cache does not grow")
	// Once the first entries expire there is room again.
	require.NoError(t, c.add("later", t0.Add(2*time.Minute+10*time.Millisecond)))
	assert.Equal(t, 90, c.len())
}

// authServer serves a handler that echoes the caller and the body, behind
// tcpAuth, as node1's agent, with a clock the test sets and the default
// limits.
func authServer(t *testing.T, key []byte, now *time.Time) (*httptest.Server, *syncBuffer) {
	return authServerWith(t, key, now, defaultTCPLimits, nil)
}

// authServerWith is authServer with limits lim, and with slow, if not nil,
// as the handler of /slow.
func authServerWith(t *testing.T, key []byte, now *time.Time, lim tcpLimits, slow http.HandlerFunc) (*httptest.Server, *syncBuffer) {
	t.Helper()
	logBuf := &syncBuffer{}
	a := &Agent{log: slog.New(slog.NewTextHandler(logBuf, nil)), node: "node1"}
	echo := a.withCaller(func(w http.ResponseWriter, r *http.Request, c caller) error {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"uid": c.UID, "gid": c.GID, "groups": c.Groups, "user": c.User, "body": string(b)})
		return nil
	})
	mux := http.NewServeMux()
	mux.Handle("/", echo)
	if slow != nil {
		mux.Handle("/slow", slow)
	}
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = newTCPServer(a.tcpAuth(key, newNonceCache(nonceTTL, 100), func() time.Time { return *now }, lim.body, mux), lim)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, logBuf
}

// errorOf is the message of an error answer.
func errorOf(t *testing.T, body string) string {
	t.Helper()
	var eb api.ErrorBody
	require.NoError(t, json.Unmarshal([]byte(body), &eb), body)
	return eb.Error
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTCPAuth(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	srv, logBuf := authServer(t, key, &now)
	id := api.Identity{UID: 1001, GID: 1002, Groups: []uint32{1002, 27}, User: "cruzt1"}

	send := func(req *http.Request) (int, string) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		return resp.StatusCode, string(b)
	}
	mk := func(method, path string, body []byte, k []byte, at time.Time) *http.Request {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		require.NoError(t, err)
		require.NoError(t, api.SignRequest(req, k, "node1", id, body, at))
		return req
	}

	// A good request reaches the handler as the signed caller, body intact.
	body := []byte(`{"stop":true}`)
	code, out := send(mk("POST", "/v1/x?y=1", body, key, now))
	require.Equal(t, http.StatusOK, code, out)
	assert.JSONEq(t, `{"uid":1001,"gid":1002,"groups":[1002,27],"user":"cruzt1","body":"{\"stop\":true}"}`, out)

	// Replayed verbatim: refused.
	req := mk("GET", "/v1/jobs", nil, key, now)
	code, _ = send(req)
	require.Equal(t, http.StatusOK, code)
	again, _ := http.NewRequest("GET", srv.URL+"/v1/jobs", nil)
	again.Header = req.Header.Clone()
	code, out = send(again)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Contains(t, out, "already used")

	refused := func(req *http.Request, reason string) {
		t.Helper()
		code, out := send(req)
		assert.Equal(t, http.StatusUnauthorized, code, out)
		assert.Contains(t, errorOf(t, out), reason)
	}
	plain, _ := http.NewRequest("GET", srv.URL+"/v1/jobs", nil)
	refused(plain, "header Cruz-Wire-Version is missing")
	refused(mk("GET", "/v1/jobs", nil, []byte("another key......................"), now), "signature does not match")
	refused(mk("GET", "/v1/jobs", nil, key, now.Add(-61*time.Second)), "off the agent's clock")
	refused(mk("GET", "/v1/jobs", nil, key, now.Add(61*time.Second)), "off the agent's clock")
	code, _ = send(mk("GET", "/v1/jobs", nil, key, now.Add(-59*time.Second)))
	assert.Equal(t, http.StatusOK, code, "within the allowed skew")

	// A signed request whose body was changed on the way.
	req = mk("POST", "/v1/x", body, key, now)
	req.Body = io.NopCloser(strings.NewReader(`{"stop":false}`))
	req.ContentLength = int64(len(`{"stop":false}`))
	refused(req, "the body is not the one signed (its SHA-256 differs from header Cruz-Body-SHA256)")
	// Or its body's hash with it.
	req = mk("POST", "/v1/x", body, key, now)
	req.Header.Set(api.HeaderBodyHash, api.BodyHash([]byte(`{"stop":false}`)))
	req.Body = io.NopCloser(strings.NewReader(`{"stop":false}`))
	req.ContentLength = int64(len(`{"stop":false}`))
	refused(req, "signature does not match")
	// Or its identity.
	req = mk("GET", "/v1/jobs", nil, key, now)
	req.Header.Set(api.HeaderUID, "0")
	refused(req, "signature does not match")
	// Or its path.
	req = mk("GET", "/v1/jobs", nil, key, now)
	req.URL.Path = "/v1/jobs/other"
	refused(req, "signature does not match")

	// Signed for another node: refused, naming both.
	other, _ := http.NewRequest("GET", srv.URL+"/v1/jobs", nil)
	require.NoError(t, api.SignRequest(other, key, "node2", id, nil, now))
	refused(other, `the request is signed for node "node2", this is node "node1" (sent to the wrong agent, or replayed from another node)`)
	// Of another wire version: 400, naming both.
	req = mk("GET", "/v1/jobs", nil, key, now)
	req.Header.Set(api.HeaderWire, "1")
	code, out = send(req)
	assert.Equal(t, http.StatusBadRequest, code, out)
	assert.Contains(t, errorOf(t, out), `the request is of wire version "1", this agent speaks version 2`)

	// Too big a body is refused without reaching the handler.
	big := make([]byte, maxSignedBody+1)
	code, out = send(mk("POST", "/v1/x", big, key, now))
	assert.Equal(t, http.StatusRequestEntityTooLarge, code)
	assert.Contains(t, out, "body of 4194305 bytes (Content-Length) is larger than the 4194304 allowed")
	// A chunked body (no length) too.
	req = mk("POST", "/v1/x", body, key, now)
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = -1
	code, out = send(req)
	assert.Equal(t, http.StatusLengthRequired, code, out)
	assert.Contains(t, out, "a body without Content-Length (chunked) is not accepted")

	log := logBuf.String()
	assert.Contains(t, log, "level=WARN msg=\"refused a TCP API request\" remote=127.0.0.1:")
	assert.Contains(t, log, "reason=\"header Cruz-Wire-Version is missing\"")
	assert.Contains(t, log, "already used")
}

package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request about a job another node knows is forwarded with its path as the
// user sent it: an escaped "/" in a job's name stays part of the name on the
// other agent (unescaped, it would name another route), and the forwarded
// request, signed for that node over real TCP, passes its checks.
func TestForwardKeepsEscapedPath(t *testing.T) {
	a1, _ := newTestAgent(t, "node1", "node2")
	a2, _ := newTestAgent(t, "node2", "node1")
	key := []byte("0123456789abcdef0123456789abcdef")
	now := func() time.Time { return time.Now() }
	srv2 := httptest.NewServer(a2.tcpAuth(key, newNonceCache(nonceTTL, 100), now, defaultTCPLimits.body, a2.Handler()))
	defer srv2.Close()
	a1.dial = func(node string, id api.Identity) (nodeConn, error) {
		require.Equal(t, "node2", node)
		return remoteConn{node: node, c: api.NewSignedClient(strings.TrimPrefix(srv2.URL, "http://"), node, key, id)}, nil
	}
	c := caller{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), User: "tester"}
	req := httptest.NewRequest("GET", "/v1/jobs/a%2Fb?at=node2", nil)
	req = req.WithContext(context.WithValue(req.Context(), callerKey{}, c))
	rec := httptest.NewRecorder()
	a1.Handler().ServeHTTP(rec, req)
	assert.Equal(t, http.StatusNotFound, rec.Code, rec.Body.String())
	var eb api.ErrorBody
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &eb), rec.Body.String())
	assert.Contains(t, eb.Error, `"a/b"`, "node2 was asked about job a/b")
}

// A checkpoint with progress of a job that another node coordinates is
// refused here before any stream starts, passed on without the progress
// flag, and its result comes back as the stream's one frame.
func TestForwardCheckpointWithProgress(t *testing.T) {
	a1, _ := newTestAgent(t, "node1", "node2")
	a2, fc2 := newTestAgent(t, "node2", "node1")
	addJob(t, a2, fc2, "job1", map[string]string{"mpiexec": "node2", "r0": "node1"})
	key := []byte("0123456789abcdef0123456789abcdef")
	now := func() time.Time { return time.Now() }
	srv2 := httptest.NewServer(a2.tcpAuth(key, newNonceCache(nonceTTL, 100), now, defaultTCPLimits.body, a2.Handler()))
	defer srv2.Close()
	a1.dial = func(node string, id api.Identity) (nodeConn, error) {
		return remoteConn{node: node, c: api.NewSignedClient(strings.TrimPrefix(srv2.URL, "http://"), node, key, id)}, nil
	}
	c := caller{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), User: "tester"}
	req := httptest.NewRequest("POST", "/v1/jobs/job1/checkpoint", strings.NewReader(`{"progress":true}`))
	req = req.WithContext(context.WithValue(req.Context(), callerKey{}, c))
	rec := httptest.NewRecorder()
	a1.Handler().ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	lines := strings.Split(strings.TrimSpace(rec.Body.String()), "\n")
	require.Len(t, lines, 1, rec.Body.String())
	var f api.Frame
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &f))
	require.NotNil(t, f.Checkpoint, lines[0])
	assert.Equal(t, "ckpt-0001", f.Checkpoint.ID)
}

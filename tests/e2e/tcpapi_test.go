package e2e

// The agent's TCP API (agent.listen): every request must be signed with the
// cluster key and says which user it acts for; anything else is refused and
// logged. A signed request acts exactly as that user would on the unix
// socket, owner checks included. Only 127.0.0.1 is used.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/version"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// freeLoopbackAddr returns 127.0.0.1:PORT with a port free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// hostname is the name of a standalone agent's node: the machine's.
func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	require.NoError(t, err)
	return h
}

func identity(u testenv.User) api.Identity {
	return api.Identity{UID: u.UID, GID: u.GID, Groups: u.Groups, User: u.Name}
}

// rawSigned sends GET path to addr, signed with key as id at time at, and
// returns the status, the body and the request (to replay it).
func rawSigned(t *testing.T, addr, path string, key []byte, id api.Identity, at time.Time) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	require.NoError(t, err)
	if key != nil {
		require.NoError(t, api.SignRequest(req, key, hostname(t), id, nil, at))
	}
	code, body := sendRaw(t, addr, path, req.Header)
	return code, body, req.Header
}

func sendRaw(t *testing.T, addr, path string, h http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	require.NoError(t, err)
	req.Header = h.Clone()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// readStream reads frames to the terminal one and returns the stdout and
// that frame.
func readStream(t *testing.T, s *api.Stream, until string) (string, *api.Frame) {
	t.Helper()
	var out bytes.Buffer
	for {
		f, err := s.Next()
		require.NoError(t, err, "stream ended early; stdout so far:\n%s", out.String())
		if f.Stream == "stdout" {
			out.Write(f.Data)
		}
		if f.Terminal() || (until != "" && strings.Contains(out.String(), until)) {
			return out.String(), f
		}
	}
}

func TestTCPAPI(t *testing.T) {
	addr := freeLoopbackAddr(t)
	a := startAgent(t, agentOptions{listen: addr})
	u1 := testenv.LookupUser(t, "cruzt1")
	u2 := testenv.LookupUser(t, "cruzt2")
	key, err := os.ReadFile(filepath.Join(a.dir, "key", "cluster.key"))
	require.NoError(t, err)
	require.Contains(t, a.log(), "listening tcp="+addr)

	// (a) No authentication at all.
	code, body, _ := rawSigned(t, addr, "/v1/jobs", nil, api.Identity{}, time.Now())
	assert.Equal(t, http.StatusUnauthorized, code, body)
	assert.Contains(t, body, `"error":`)
	assert.Contains(t, body, "header Cruz-Wire-Version is missing")

	// (b) Signed with another key.
	other := bytes.Repeat([]byte{0x5a}, len(key))
	code, body, _ = rawSigned(t, addr, "/v1/jobs", other, identity(u1), time.Now())
	assert.Equal(t, http.StatusUnauthorized, code, body)
	assert.Contains(t, body, "signature does not match")

	// (c) A good request, then the same request replayed verbatim.
	code, body, h := rawSigned(t, addr, "/v1/jobs", key, identity(u1), time.Now())
	require.Equal(t, http.StatusOK, code, body)
	assert.JSONEq(t, `{"jobs":[]}`, body)
	code, body = sendRaw(t, addr, "/v1/jobs", h)
	assert.Equal(t, http.StatusUnauthorized, code, body)
	assert.Contains(t, body, "already used")

	// (d) A request signed 10 minutes ago.
	code, body, _ = rawSigned(t, addr, "/v1/jobs", key, identity(u1), time.Now().Add(-10*time.Minute))
	assert.Equal(t, http.StatusUnauthorized, code, body)
	assert.Contains(t, body, "off the agent's clock")

	// The unix socket still works as before.
	_, err = api.NewClient(a.socket).Version(context.Background())
	require.NoError(t, err)

	// (e) Through NewSignedClient as cruzt1: a plain job to its end.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c1 := api.NewSignedClient(addr, hostname(t), key, identity(u1))
	v, err := c1.Version(ctx)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(v.Agent, version.Release+" (commit "), "the agent reports its release and commit: %q", v.Agent)
	dir := testenv.TempDirFor(t, u1)
	counter := testenv.Bin(t, "counter")
	s, err := c1.Run(ctx, api.RunRequest{Name: "short", Argv: []string{counter, "20", "20"}, Dir: dir, Plain: true})
	require.NoError(t, err)
	first, err := s.Next()
	require.NoError(t, err)
	require.NotNil(t, first.Job)
	assert.Equal(t, "cruzt1", first.Job.User)
	assert.Equal(t, u1.UID, first.Job.UID)
	out, end := readStream(t, s, "")
	s.Close()
	require.NotNil(t, end.Exit, "stream ended with %+v", end)
	assert.Equal(t, 0, end.Exit.Code)
	assert.Equal(t, check.CounterLines(1, 20), check.Lines(out))

	// A running job: checkpointed, stopped by a checkpoint, restarted.
	s, err = c1.Run(ctx, api.RunRequest{Name: "long", Argv: []string{counter, "150", "30"}, Dir: dir, Plain: true})
	require.NoError(t, err)
	first, err = s.Next()
	require.NoError(t, err)
	require.NotNil(t, first.Job)
	id := first.Job.ID
	_, f := readStream(t, s, "line 3\n")
	require.False(t, f.Terminal(), "the job ended early: %+v", f)
	ck, err := c1.Checkpoint(ctx, id, api.CheckpointRequest{})
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0001", ck.ID)
	j, err := c1.Job(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, api.StateRunning, j.State)
	assert.Equal(t, "cruzt1", j.User)

	// (f) Signed as cruzt2: cruzt1's job is not theirs.
	c2 := api.NewSignedClient(addr, hostname(t), key, identity(u2))
	_, err = c2.Checkpoint(ctx, id, api.CheckpointRequest{})
	var apiErr *api.Error
	require.True(t, errors.As(err, &apiErr), "cruzt2 checkpoints cruzt1's job: %v", err)
	assert.Equal(t, http.StatusForbidden, apiErr.Status)
	assert.Contains(t, apiErr.Message, "job "+id+" belongs to user cruzt1")
	assert.Contains(t, apiErr.Message, "only on your own jobs")
	err = c2.Remove(ctx, id, true)
	require.True(t, errors.As(err, &apiErr), "cruzt2 removes cruzt1's job: %v", err)
	assert.Equal(t, http.StatusForbidden, apiErr.Status)
	assert.Contains(t, apiErr.Message, "only on your own jobs")
	jobs, err := c2.Jobs(ctx)
	require.NoError(t, err)
	assert.Empty(t, jobs, "cruzt2 sees none of cruzt1's jobs")
	jobs, err = c1.Jobs(ctx)
	require.NoError(t, err)
	assert.Len(t, jobs, 2)

	ck, err = c1.Checkpoint(ctx, id, api.CheckpointRequest{Stop: true})
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0002", ck.ID)
	_, f = readStream(t, s, "")
	s.Close()
	require.NotNil(t, f.Stopped, "the run's stream ends with the stop: %+v", f)
	list, err := c1.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.Len(t, list.Checkpoints, 2)
	s, err = c1.Restart(ctx, id, api.RestartRequest{})
	require.NoError(t, err)
	out, f = readStream(t, s, "")
	s.Close()
	require.NotNil(t, f.Exit, "restarted job: %+v; output:\n%s", f, out)
	assert.Equal(t, 0, f.Exit.Code)
	assert.True(t, strings.HasSuffix(out, "line 150\n"), "restarted job's output:\n%s", out)
	require.NoError(t, c1.Remove(ctx, id, true))

	// (g) Every refused request was logged with its peer and reason.
	log := a.log()
	for _, reason := range []string{"header Cruz-Wire-Version is missing", "signature does not match", "already used", "off the agent's clock"} {
		assert.Regexp(t, `level=WARN msg="refused a TCP API request" remote=127\.0\.0\.1:\d+ .*`+reason, log)
	}
	assert.Equal(t, 4, strings.Count(log, "refused a TCP API request"), "one warning per refused request")
	a.requireNoLeaks()

	// (h) The nftables table that keeps pods from the port is there while
	// the agent runs, and gone once it stops.
	_, port, _ := net.SplitHostPort(addr)
	out2, err := exec.Command("nft", "list", "table", "bridge", "cruz_agent_guard").CombinedOutput()
	require.NoError(t, err, "%s", out2)
	assert.Contains(t, string(out2), `iifname "cz*" tcp dport `+port+" drop")
	a.stop()
	out2, err = exec.Command("nft", "list", "tables").CombinedOutput()
	require.NoError(t, err, "%s", out2)
	assert.NotContains(t, string(out2), "cruz_agent_guard", "the agent removed its guard when it stopped")
}

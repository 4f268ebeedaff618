package agent

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var testTCPKey = []byte("0123456789abcdef0123456789abcdef")

// rawRequest writes a POST to /v1/x with headers h and Content-Length n on
// a new connection, then body (possibly shorter than n), and returns the
// connection.
func rawRequest(t *testing.T, srv *httptest.Server, h http.Header, n int64, body string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "POST /v1/x HTTP/1.1\r\nHost: cruzd\r\nContent-Length: %d\r\n", n)
	require.NoError(t, h.Write(&b))
	b.WriteString("\r\n" + body)
	_, err = io.WriteString(c, b.String())
	require.NoError(t, err)
	return c
}

// answer reads the response on c, failing if it takes more than within.
func answer(t *testing.T, c net.Conn, within time.Duration) (int, string) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err, "no answer within %s", within)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, errorOf(t, string(b))
}

func signedHeaders(t *testing.T, body []byte, now time.Time) http.Header {
	t.Helper()
	req, err := http.NewRequest("POST", "http://cruzd/v1/x", nil)
	require.NoError(t, err)
	require.NoError(t, api.SignRequest(req, testTCPKey, "node1", api.Identity{UID: 1001, GID: 1001, User: "cruzt1"}, body, now))
	return req.Header
}

// The body is read only for a request whose signed headers pass, and only
// within the body timeout.
func TestTCPAuthChecksBeforeTheBody(t *testing.T) {
	now := time.Now()
	lim := defaultTCPLimits
	lim.body = 300 * time.Millisecond
	srv, logBuf := authServerWith(t, testTCPKey, &now, lim, nil)

	// A stranger announcing 4 MB and sending none: refused at once.
	c := rawRequest(t, srv, http.Header{"Cruz-Wire-Version": {"2"}}, 4_000_000, "")
	code, msg := answer(t, c, time.Second)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Contains(t, msg, "header Cruz-Node is missing")

	// Signed, announcing 100 MB: 413 without reading it.
	c = rawRequest(t, srv, signedHeaders(t, []byte("x"), now), 100<<20, "")
	code, msg = answer(t, c, time.Second)
	assert.Equal(t, http.StatusRequestEntityTooLarge, code)
	assert.Contains(t, msg, "body of 104857600 bytes (Content-Length) is larger than the 4194304 allowed")

	// Signed, sending 10 of its 100 bytes, then nothing: cut off after
	// the body timeout, counted from when the headers were accepted. The
	// pause stands for a busy machine: the signature's clock (now) stays
	// where the test pinned it, the body's deadline must not.
	time.Sleep(100 * time.Millisecond)
	body := strings.Repeat("b", 100)
	start := time.Now()
	c = rawRequest(t, srv, signedHeaders(t, []byte(body), now), 100, body[:10])
	code, msg = answer(t, c, 3*time.Second)
	took := time.Since(start)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, msg, "read the body of 100 bytes (within 300ms)")
	assert.GreaterOrEqual(t, took, 250*time.Millisecond)

	// The whole body, as signed: accepted.
	c = rawRequest(t, srv, signedHeaders(t, []byte(body), now), 100, body)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	assert.Contains(t, string(b), `"body":"bbbb`)
	assert.Equal(t, 3, strings.Count(logBuf.String(), "refused a TCP API request"))
}

// A request may run far longer than the read timeouts (a job's output
// stream does): its context is not cancelled when they pass.
func TestTCPServerKeepsLongRequests(t *testing.T) {
	now := time.Now()
	lim := defaultTCPLimits
	lim.header, lim.body = 200*time.Millisecond, 200*time.Millisecond
	srv, _ := authServerWith(t, testTCPKey, &now, lim, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			writeJSON(w, http.StatusOK, map[string]string{"ctx": r.Context().Err().Error()})
		case <-time.After(time.Second):
			writeJSON(w, http.StatusOK, map[string]string{"ctx": "alive"})
		}
	})
	for _, body := range []string{"", `{"a":1}`} {
		req, err := http.NewRequest("POST", srv.URL+"/slow", strings.NewReader(body))
		require.NoError(t, err)
		require.NoError(t, api.SignRequest(req, testTCPKey, "node1", api.Identity{UID: 1, GID: 1, User: "u"}, []byte(body), now))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.JSONEq(t, `{"ctx":"alive"}`, string(b), "body %q", body)
	}
}

// A client that never finishes its headers is cut off after the header
// timeout.
func TestTCPServerClosesSlowHeaders(t *testing.T) {
	now := time.Now()
	lim := defaultTCPLimits
	lim.header = 300 * time.Millisecond
	srv, _ := authServerWith(t, testTCPKey, &now, lim, nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET /v1/jobs HTTP/1.1\r\nHost: cruzd\r\nCruz-")
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	_, err = io.ReadAll(c)
	took := time.Since(start)
	require.NoError(t, err, "the agent closes the connection (EOF), the test's deadline does not pass")
	assert.GreaterOrEqual(t, took, 250*time.Millisecond)
	assert.Less(t, took, 2*time.Second)

	// Headers over the limit: 431.
	c2, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	defer c2.Close()
	_, err = io.WriteString(c2, "GET /v1/jobs HTTP/1.1\r\nHost: cruzd\r\nX: "+strings.Repeat("a", 70<<10)+"\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, c2.SetReadDeadline(time.Now().Add(3*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}

// Over the cap, a peer's new connections are closed at once; once one of
// its connections ends, it may open another. Other peers are not affected.
func TestPeerLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	logBuf := &syncBuffer{}
	l := newPeerLimitListener(ln, 3, slog.New(slog.NewTextHandler(logBuf, nil)))
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	closedAtOnce := func(c net.Conn) bool {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	var held []net.Conn
	for i := 0; i < 3; i++ {
		dial()
		held = append(held, <-accepted)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	assert.Equal(t, 3, l.openFrom(lo))
	for i := 0; i < 5; i++ {
		assert.True(t, closedAtOnce(dial()), "connection %d over the cap is closed", i+4)
	}
	assert.Equal(t, 3, l.openFrom(lo))
	assert.Equal(t, 1, strings.Count(logBuf.String(), "too many open from one address"), "one warning per burst:\n%s", logBuf)
	assert.Contains(t, logBuf.String(), "remote=127.0.0.1 max=3")

	// One ends (closed twice: counted once): room for one more.
	require.NoError(t, held[0].Close())
	_ = held[0].Close()
	assert.Equal(t, 2, l.openFrom(lo))
	c := dial()
	select {
	case a := <-accepted:
		held[0] = a
	case <-time.After(2 * time.Second):
		t.Fatal("a connection under the cap was not accepted")
	}
	_ = c
	assert.Equal(t, 3, l.openFrom(lo))
	assert.True(t, closedAtOnce(dial()))
	for _, h := range held {
		h.Close()
	}
	assert.Equal(t, 0, l.openFrom(lo))
	assert.Equal(t, 2, strings.Count(logBuf.String(), "too many open from one address"), "warned again for the next burst")
}

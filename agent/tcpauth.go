package agent

// The TCP API: the same handlers as the unix socket, but a TCP peer has no
// credentials the kernel vouches for, so every request must carry the
// identity it acts for, signed with the root-only cluster key (see
// api.SignRequest). Only holders of the key, i.e. the agents, can act for a
// user over TCP; an agent forwards a user's request after identifying the
// user on its own unix socket.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

const (
	// maxClockSkew is how far a request's time may be from the agent's.
	maxClockSkew = 60 * time.Second
	// nonceTTL is how long a nonce is remembered: 2 minutes, a little more
	// than the whole window (2 × maxClockSkew) in which its request is
	// accepted, so that a replay at the window's very edge is still caught.
	nonceTTL = 2*maxClockSkew + time.Second
	// maxNonces caps the replay cache; when full, requests are refused
	// rather than the cache grown.
	maxNonces = 100_000
	// maxSignedBody bounds a request's body (Content-Length).
	maxSignedBody = 4 << 20
)

// tcpLimits bound what a client of the TCP API can hold in the agent.
type tcpLimits struct {
	// header bounds the time to send a request's headers.
	header time.Duration
	// body bounds the time to send a body, once its headers are accepted.
	body time.Duration
	// idle closes a keep-alive connection that no request uses.
	idle time.Duration
	// maxHeaderBytes bounds a request's headers.
	maxHeaderBytes int
	// perPeer bounds the connections open at once from one address.
	perPeer int
}

var defaultTCPLimits = tcpLimits{
	header: 10 * time.Second,
	// 4 MiB (maxSignedBody) at 1 MB/s, a slow link.
	body: 5 * time.Second,
	idle: 2 * time.Minute,
	// Room for a user in some 5,000 groups (Cruz-Groups), far more than a
	// cluster's users have.
	maxHeaderBytes: 64 << 10,
	// An agent holds two long connections per job it coordinates whose
	// main pod is on the other node (its wait and its output stream), plus
	// a few short and idle ones per user: 512 leaves room for some 200 such
	// jobs, and bounds what one address costs (about 20 KiB each while its
	// headers are awaited).
	perPeer: 512,
}

var (
	errReplay    = errors.New("the nonce was already used (replayed request)")
	errCacheFull = errors.New("too many recent requests to remember their nonces; try again later")
)

// nonceCache remembers the nonces of the requests accepted in the last ttl,
// to refuse a replay. Entries expire in the order they were added.
type nonceCache struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	seen  map[string]time.Time // nonce -> expiry
	order []nonceEntry         // by expiry, oldest first
}

type nonceEntry struct {
	nonce  string
	expiry time.Time
}

func newNonceCache(ttl time.Duration, max int) *nonceCache {
	return &nonceCache{ttl: ttl, max: max, seen: map[string]time.Time{}}
}

// add records nonce as seen at now; it fails if it was seen within the ttl,
// or if the cache is full.
func (c *nonceCache) add(nonce string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(now)
	if _, ok := c.seen[nonce]; ok {
		return errReplay
	}
	if len(c.seen) >= c.max {
		return errCacheFull
	}
	exp := now.Add(c.ttl)
	c.seen[nonce] = exp
	c.order = append(c.order, nonceEntry{nonce, exp})
	return nil
}

func (c *nonceCache) prune(now time.Time) {
	n := 0
	for n < len(c.order) && !now.Before(c.order[n].expiry) {
		delete(c.seen, c.order[n].nonce)
		n++
	}
	if n == 0 {
		return
	}
	c.order = c.order[n:]
	// Let go of the backing array once mostly unused.
	if cap(c.order) > 1024 && len(c.order) < cap(c.order)/4 {
		c.order = append([]nonceEntry(nil), c.order...)
	}
}

func (c *nonceCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// tcpAuth authenticates every request by its signature with key, for this
// agent's node, and passes it on to next as the caller it is signed for; it
// refuses anything else (401, 411, 413 or 400) with a message that says why.
//
// Everything that needs no body is checked before a byte of the body is
// read: the wire version, the headers' syntax, the node name, the clock
// window, the signature (which covers the body's hash) and the body's
// declared length. Only then is the body read, within bodyTimeout, and
// checked against the signed hash. So a stranger costs the agent one
// header's worth of memory, for at most the server's ReadHeaderTimeout.
func (a *Agent) tcpAuth(key []byte, nonces *nonceCache, now func() time.Time, bodyTimeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(status int, reason error) {
			a.log.Warn("refused a TCP API request", "remote", r.RemoteAddr, "method", r.Method,
				"uri", r.RequestURI, "reason", reason.Error())
			// Close the connection after the answer: the server would
			// otherwise first read (and wait for) what is left of the body.
			w.Header().Set("Connection", "close")
			writeJSON(w, status, api.ErrorBody{Error: "cruzd TCP API: request refused: " + reason.Error()})
		}
		h, err := api.ParseSignedHeaders(r.Header)
		if err != nil {
			status := http.StatusUnauthorized
			if errors.Is(err, api.ErrWireVersion) {
				status = http.StatusBadRequest
			}
			refuse(status, err)
			return
		}
		if h.Node != a.node {
			refuse(http.StatusUnauthorized, fmt.Errorf("the request is signed for node %q, this is node %q (sent to the wrong agent, or replayed from another node)",
				h.Node, a.node))
			return
		}
		t := now()
		skew := t.Sub(time.Unix(h.Time, 0))
		if skew > maxClockSkew || skew < -maxClockSkew {
			refuse(http.StatusUnauthorized, fmt.Errorf("request time %d is %s off the agent's clock (at most %s allowed)",
				h.Time, skew.Round(time.Second), maxClockSkew))
			return
		}
		// r.RequestURI is the target as sent: escaping kept, as signed.
		if err := h.Verify(key, r.Method, r.RequestURI); err != nil {
			refuse(http.StatusUnauthorized, err)
			return
		}
		switch {
		case r.ContentLength < 0:
			// Agents always send a length; a chunked body could not be
			// bounded before reading it.
			refuse(http.StatusLengthRequired, errors.New("a body without Content-Length (chunked) is not accepted"))
			return
		case r.ContentLength > maxSignedBody:
			refuse(http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes (Content-Length) is larger than the %d allowed",
				r.ContentLength, maxSignedBody))
			return
		}
		rc := http.NewResponseController(w)
		// The wall clock, not now (the signature's clock, which tests
		// pin): the body has bodyTimeout from here on.
		_ = rc.SetReadDeadline(time.Now().Add(bodyTimeout))
		body := make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, body)
		// The rest of the request (a stream's handler can run for days)
		// has no read deadline: the connection's background read would
		// otherwise end the request's context when it passes.
		_ = rc.SetReadDeadline(time.Time{})
		if err != nil {
			refuse(http.StatusBadRequest, fmt.Errorf("read the body of %d bytes (within %s): %w", r.ContentLength, bodyTimeout, err))
			return
		}
		if err := h.CheckBody(body); err != nil {
			refuse(http.StatusUnauthorized, err)
			return
		}
		// Only a correctly signed request takes a place in the cache.
		if err := nonces.add(h.Nonce, t); err != nil {
			refuse(http.StatusUnauthorized, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		ctx := context.WithValue(context.WithValue(r.Context(), callerKey{}, caller(h.Identity)), peerKey{}, true)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// newTCPServer is the TCP API's server, bounded against clients that
// connect and then send slowly or not at all: headers must arrive within
// ReadHeaderTimeout, the whole request within ReadTimeout (tcpAuth lifts the
// deadline once the body is in), an idle keep-alive connection is closed
// after IdleTimeout, and headers are at most MaxHeaderBytes. No
// WriteTimeout: a job's output stream lasts as long as the job.
func newTCPServer(h http.Handler, lim tcpLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.header,
		ReadTimeout:       lim.header + lim.body,
		IdleTimeout:       lim.idle,
		MaxHeaderBytes:    lim.maxHeaderBytes,
	}
}

// listenTCP opens the TCP API's listener, if agent.listen is set, and
// returns its server (nil without one); the caller has guarded the port
// from pods (guardPods). The listener closes at once any connection over
// the cap from one address.
func (a *Agent) listenTCP() (*http.Server, net.Listener, error) {
	addr := a.cfg.Agent.Listen
	if addr == "" {
		return nil, nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s (agent.listen): %w", addr, err)
	}
	lim := defaultTCPLimits
	srv := newTCPServer(a.tcpAuth(a.key, newNonceCache(nonceTTL, maxNonces), time.Now, lim.body, a.Handler()), lim)
	return srv, newPeerLimitListener(ln, lim.perPeer, a.log), nil
}

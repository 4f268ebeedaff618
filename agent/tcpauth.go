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
	// maxSignedBody bounds the body read to check its hash.
	maxSignedBody = 4 << 20
)

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

// tcpAuth authenticates every request by its signature with key and passes
// it on to next as the caller it is signed for; it refuses anything else
// with 401. The body is read (at most maxSignedBody) to check its hash,
// then handed to next.
func (a *Agent) tcpAuth(key []byte, nonces *nonceCache, now func() time.Time, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(status int, reason error) {
			a.log.Warn("refused a TCP API request", "remote", r.RemoteAddr, "method", r.Method,
				"uri", r.RequestURI, "reason", reason.Error())
			writeJSON(w, status, api.ErrorBody{Error: "cruzd TCP API: request refused: " + reason.Error()})
		}
		h, err := api.ParseSignedHeaders(r.Header)
		if err != nil {
			refuse(http.StatusUnauthorized, err)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxSignedBody+1))
		if err != nil {
			refuse(http.StatusBadRequest, fmt.Errorf("read body: %w", err))
			return
		}
		if len(body) > maxSignedBody {
			refuse(http.StatusRequestEntityTooLarge, fmt.Errorf("body larger than %d bytes", maxSignedBody))
			return
		}
		if err := h.Verify(key, r.Method, r.RequestURI, body); err != nil {
			refuse(http.StatusUnauthorized, err)
			return
		}
		t := now()
		skew := t.Sub(time.Unix(h.Time, 0))
		if skew > maxClockSkew || skew < -maxClockSkew {
			refuse(http.StatusUnauthorized, fmt.Errorf("request time %d is %s off the agent's clock (at most %s allowed)",
				h.Time, skew.Round(time.Second), maxClockSkew))
			return
		}
		// Only a correctly signed request takes a place in the cache.
		if err := nonces.add(h.Nonce, t); err != nil {
			refuse(http.StatusUnauthorized, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		ctx := context.WithValue(context.WithValue(r.Context(), callerKey{}, caller(h.Identity)), peerKey{}, true)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// listenTCP opens the TCP API's listener, if agent.listen is set, and
// returns its server (nil without one).
func (a *Agent) listenTCP() (*http.Server, net.Listener, error) {
	addr := a.cfg.Agent.Listen
	if addr == "" {
		return nil, nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s (agent.listen): %w", addr, err)
	}
	srv := &http.Server{
		Handler:           a.tcpAuth(a.key, newNonceCache(nonceTTL, maxNonces), time.Now, a.Handler()),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return srv, ln, nil
}

package agent

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
)

// peerLimitListener caps the TCP API's connections open at once per peer
// address: over the cap, a new connection is closed as soon as it is
// accepted, before any of it is read, so that one address cannot hold the
// agent's memory or file descriptors. (The kernel's accept queue still takes
// it first; what is bounded is what the agent keeps.)
type peerLimitListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu      sync.Mutex
	open    map[netip.Addr]int
	refused map[netip.Addr]bool // warned since it was last under the cap
}

func newPeerLimitListener(ln net.Listener, max int, log *slog.Logger) *peerLimitListener {
	return &peerLimitListener{Listener: ln, max: max, log: log, open: map[netip.Addr]int{}, refused: map[netip.Addr]bool{}}
}

// Accept returns the next connection whose address is under the cap.
func (l *peerLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerAddr(c)
		l.mu.Lock()
		if l.open[ip] >= l.max {
			warn := !l.refused[ip]
			l.refused[ip] = true
			l.mu.Unlock()
			_ = c.Close()
			if warn {
				// Once per burst: a flood must not flood the log too.
				l.log.Warn("refusing TCP API connections: too many open from one address", "remote", ip.String(), "max", l.max)
			}
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, release: sync.OnceFunc(func() { l.release(ip) })}, nil
	}
}

func (l *peerLimitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open[ip]--
	if l.open[ip] <= 0 {
		delete(l.open, ip)
	}
	if l.open[ip] < l.max {
		delete(l.refused, ip)
	}
}

// openFrom is how many connections from ip are open.
func (l *peerLimitListener) openFrom(ip netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[ip]
}

func peerAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// limitedConn gives its place back when closed (once, however often Close
// is called).
type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

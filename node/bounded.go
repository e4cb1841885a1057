package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-project/rbee/internal/bodydeadline"
	"github.com/rbee-project/rbee/internal/peercred"
	"github.com/rbee-project/rbee/node/jobs"
)

// HTTP connection limits. Streams (SSE, chunked inference) may run for
// minutes, so there is no whole-response write timeout and no
// whole-request read timeout; instead each phase a client controls has its
// own bound.
const (
	// headerTimeout bounds reading a request's headers.
	headerTimeout = 10 * time.Second
	// DefaultHTTPBodyTimeout bounds reading a request's body: a job or a
	// prompt of at most a few MiB arrives well within a minute even on a
	// slow link; a client that trickles bytes to hold the connection does
	// not.
	DefaultHTTPBodyTimeout = 60 * time.Second
	// DefaultHTTPIdleTimeout closes keep-alive connections idle this long.
	DefaultHTTPIdleTimeout = 120 * time.Second
	// DefaultHTTPStallTimeout bounds each write of a response (in pieces
	// of stallChunk): a client that stops reading (or whose machine
	// stopped) fills the socket buffers, and the piece that then waits
	// this long for room fails and closes the connection. Before, the handler waited in that write
	// for ever, and with it the worker's slot its stream held.
	DefaultHTTPStallTimeout = 60 * time.Second
	// stallChunk is the most a connection writes under one stall
	// deadline, so a large write is bounded by its progress, not its size.
	stallChunk = 64 << 10
	// DefaultMaxConnsPerClient caps open connections per client address.
	// Every local client shares 127.0.0.1, so the cap leaves room for a
	// benchmark's 64 concurrent streams and the keep-alive connections
	// their clients hold, while 500 trickling connections from one
	// address are refused.
	DefaultMaxConnsPerClient = 256
	// maxRemoteConns caps the open connections of all remote clients
	// together. The per-client cap alone let a LAN machine with many
	// addresses (an IPv6 host picks them from its /64 at will) open
	// connections until the node ran out of file descriptors (20,000
	// here), and then out of sockets for raft, gossip and libp2p too.
	maxRemoteConns = 4096
)

// bounded sets the body read deadline (Config.HTTPBodyTimeout) of every
// request that has a body and lifts it once the body is read
// (internal/bodydeadline).
func (n *Node) bounded(next http.Handler) http.Handler {
	return bodydeadline.Handler(n.cfg.HTTPBodyTimeout, next)
}

// clientClosedMsg answers a request whose client closed its side of the
// connection before the answer.
const clientClosedMsg = "the request was cancelled: the client closed its side of the connection (sent FIN, as nc -N does) before the answer came; keep it open until the answer has arrived"

// answerGone answers a request that ended because its client closed the
// connection, without an answer written, with a 400 (code cancelled).
// net/http cancels a request's context when its connection's read side
// meets EOF, which a client that only half-closes (shuts down its write
// side and waits for the answer) also causes; the handlers then stop,
// writing nothing, and net/http answered "200 OK" with an empty body: a
// success with no answer. A client that is really gone never reads it.
func answerGone(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gw := &goneWriter{ResponseWriter: w}
		next.ServeHTTP(gw, r)
		if !gw.wrote && r.Context().Err() != nil {
			writeError(w, http.StatusBadRequest, jobs.CodeCancelled, clientClosedMsg)
		}
	})
}

// goneWriter records whether anything of an answer was written.
type goneWriter struct {
	http.ResponseWriter
	wrote bool
}

func (g *goneWriter) WriteHeader(code int) {
	g.wrote = true
	g.ResponseWriter.WriteHeader(code)
}

func (g *goneWriter) Write(b []byte) (int, error) {
	g.wrote = true
	return g.ResponseWriter.Write(b)
}

func (g *goneWriter) Flush() {
	g.wrote = true
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (g *goneWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// connCounts counts open connections per client across the API's
// listeners (HTTP and HTTPS), so a client's cap is one cap. A client is a
// remote IP, or on loopback, where every local user shares the address,
// a local user.
type connCounts struct {
	max int
	// maxRemote caps remote connections (all but loopback) together;
	// remote counts them.
	maxRemote int
	mu        sync.Mutex
	per       map[string]int
	remote    int
	// lookups bounds the owner lookups running at once: each reads the
	// kernel's socket tables, milliseconds when they are long.
	lookups chan struct{}
	// held are the remote connections by client, so that when remote
	// clients together are at their cap a newcomer takes the slot of a
	// connection that is idle or has not sent a whole request yet, of the
	// client holding the most (takeRemote).
	held map[string]map[*countedConn]struct{}
}

// ownerLookups is how many loopback connections may look up their owner
// at once; the others wait in their own goroutines, never in Accept.
const ownerLookups = 2

func newConnCounts(perClient int) *connCounts {
	return &connCounts{max: perClient, maxRemote: max(maxRemoteConns, perClient), per: map[string]int{}, lookups: make(chan struct{}, ownerLookups),
		held: map[string]map[*countedConn]struct{}{}}
}

// takeRemote counts c, a new connection of remote client, false when the
// client is at its cap. When remote clients together are at theirs, c
// takes the slot of a connection not serving a request (idle, or still
// without a whole request: a slow or silent one) of the client holding
// the most connections, if that client holds at least two more than this
// one would: that victim is returned, for the caller to close. Before,
// the newcomer was refused, so a LAN host with 16 addresses that held
// 4,096 silent or idle connections kept every other LAN client out.
func (c *connCounts) takeRemote(client string, cc *countedConn) (victim *countedConn, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.per[client] >= c.max {
		return nil, false
	}
	if c.remote >= c.maxRemote {
		var holder string
		if victim, holder = c.evictable(c.per[client]); victim == nil {
			return nil, false
		}
		delete(c.held[holder], victim) // its Close gives its slot back
	}
	c.per[client]++
	c.remote++
	if c.held[client] == nil {
		c.held[client] = map[*countedConn]struct{}{}
	}
	c.held[client][cc] = struct{}{}
	return victim, true
}

// evictable is a connection not serving a request of the remote client
// holding the most connections, more than has+1, and that client; nil
// when there is none. Called with c.mu held.
func (c *connCounts) evictable(has int) (*countedConn, string) {
	most, top := has+1, ""
	for k, conns := range c.held {
		if n := c.per[k]; n > most && len(conns) > 0 {
			most, top = n, k
		}
	}
	if top == "" {
		return nil, ""
	}
	for cc := range c.held[top] {
		if !cc.busy.Load() {
			return cc, top
		}
	}
	return nil, ""
}

// releaseRemote gives back the slot of cc, a connection of remote client.
func (c *connCounts) releaseRemote(client string, cc *countedConn) {
	c.mu.Lock()
	if m := c.held[client]; m != nil {
		delete(m, cc)
		if len(m) == 0 {
			delete(c.held, client)
		}
	}
	c.mu.Unlock()
	c.release(client, true)
}

// take counts a new connection of client (remote: not on loopback), false
// when the client, or remote clients together, are at the cap.
func (c *connCounts) take(client string, remote bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.per[client] >= c.max || remote && c.remote >= c.maxRemote {
		return false
	}
	c.per[client]++
	if remote {
		c.remote++
	}
	return true
}

func (c *connCounts) release(client string, remote bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.per[client]--; c.per[client] <= 0 {
		delete(c.per, client)
	}
	if remote {
		c.remote--
	}
}

// remoteClient is the client a remote address counts as: the address
// (an IPv4-mapped IPv6 one as IPv4).
//
// Each address is a client, IPv6 ones too: on a LAN every host's SLAAC
// address shares the segment's /64 (and link-local ones fe80::/64), so
// counting by prefix made all of a LAN's IPv6 clients one client. A host
// that takes many addresses is bounded by maxRemoteConns.
func remoteClient(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.String()
}

// limitListener caps the open connections per client. A connection over
// the cap is closed at once; on a plain HTTP listener it is answered 429
// first (a TLS client could not read that answer). A remote connection is
// counted in Accept, by its IP. A loopback one is counted on its first
// Read, in the connection's own goroutine, once its user is known: the
// lookup reads /proc/net/tcp, which a local user can make long, and must
// not hold up Accept for everyone.
//
// Every write of an accepted connection must make progress within stall
// (see DefaultHTTPStallTimeout).
type limitListener struct {
	net.Listener
	counts *connCounts
	answer bool
	stall  time.Duration
}

func newLimitListener(ln net.Listener, counts *connCounts, answer bool, stall time.Duration) *limitListener {
	return &limitListener{Listener: ln, counts: counts, answer: answer, stall: stall}
}

// tooManyConnsBody answers a connection over the cap.
const tooManyConnsBody = `{"error":{"code":"too_many_connections","message":"too many open connections from this address"}}`

// tooManyConns is the whole HTTP answer to a connection over the cap.
var tooManyConns = fmt.Sprintf("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(tooManyConnsBody), tooManyConnsBody)

// errOverCap fails the first Read of a loopback connection over its
// user's cap.
var errOverCap = errors.New("too many open connections from this user")

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cc := &countedConn{Conn: c, l: l}
		ta, ok := c.RemoteAddr().(*net.TCPAddr)
		if ok && ta.IP.IsLoopback() {
			return cc, nil // counted on its first Read (admit)
		}
		key := c.RemoteAddr().String()
		if ok {
			key = remoteClient(ta.IP)
		}
		cc.mu.Lock()
		cc.key, cc.remote = key, true // before takeRemote lists it
		cc.mu.Unlock()
		victim, ok := l.counts.takeRemote(key, cc)
		if !ok {
			l.refuse(c)
			continue
		}
		if victim != nil {
			_ = victim.Close()
		}
		cc.admit.Do(func() {}) // counted already
		return cc, nil
	}
}

// refuse answers (plain HTTP) and closes a connection over its cap.
func (l *limitListener) refuse(c net.Conn) {
	if l.answer {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, tooManyConns)
	}
	_ = c.Close()
}

// countedConn holds a slot of its client's cap until its first Close. A
// loopback connection takes it on its first Read, once its user is known
// (PeerUID then tells the guard who it is, with no second lookup).
type countedConn struct {
	net.Conn
	l     *limitListener
	admit sync.Once
	err   error // the admission's failure (over the cap)

	// busy: net/http serves a request on it (http.StateActive); a
	// connection idle between requests or without a whole request yet
	// may give its slot to another remote client (takeRemote).
	busy atomic.Bool

	mu       sync.Mutex
	key      string // the client counted ("" until counted)
	remote   bool   // key was counted as a remote client
	closed   bool
	uid      uint32
	uidKnown bool

	// wmu guards writeDL, the write deadline set from outside (net/http
	// bounds the TLS handshake with one); a stall deadline never extends it.
	wmu     sync.Mutex
	writeDL time.Time
}

func (c *countedConn) Read(p []byte) (int, error) {
	c.admit.Do(c.count)
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// count finds a loopback connection's user and takes a slot of its cap
// (the IP's, when the user cannot be told).
func (c *countedConn) count() {
	key := "127.0.0.1"
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		key = ta.IP.String()
	}
	c.l.counts.lookups <- struct{}{}
	uid, err := peercred.LoopbackUID(c.LocalAddr(), c.RemoteAddr())
	<-c.l.counts.lookups
	if err == nil {
		key = fmt.Sprintf("uid:%d", uid)
		c.mu.Lock()
		c.uid, c.uidKnown = uid, true
		c.mu.Unlock()
	}
	if !c.l.counts.take(key, false) {
		c.err = errOverCap
		c.l.refuse(c.Conn)
		return
	}
	c.setKey(key, false)
}

// setKey records the slot taken for key, giving it back at once when
// the connection was closed meanwhile.
func (c *countedConn) setKey(key string, remote bool) {
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.key, c.remote = key, remote
	}
	c.mu.Unlock()
	if closed {
		c.l.counts.release(key, remote)
	}
}

// Write writes p in chunks of at most stallChunk, each of which must go
// out within the listener's stall timeout: a client that stops reading
// fails the write instead of holding it (and the handler) for ever.
func (c *countedConn) Write(p []byte) (int, error) {
	if c.l.stall <= 0 {
		return c.Conn.Write(p)
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), stallChunk)]
		dl := time.Now().Add(c.l.stall)
		c.wmu.Lock()
		if !c.writeDL.IsZero() && c.writeDL.Before(dl) {
			dl = c.writeDL
		}
		c.wmu.Unlock()
		_ = c.Conn.SetWriteDeadline(dl)
		n, err := c.Conn.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// SetWriteDeadline records t (see Write) and sets it.
func (c *countedConn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	c.writeDL = t
	c.wmu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline records the write half of t (see Write) and sets both.
func (c *countedConn) SetDeadline(t time.Time) error {
	c.wmu.Lock()
	c.writeDL = t
	c.wmu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	key, remote := c.key, c.remote
	c.key, c.closed = "", true
	c.mu.Unlock()
	switch {
	case key != "" && remote:
		c.l.counts.releaseRemote(key, c)
	case key != "":
		c.l.counts.release(key, remote)
	}
	return err
}

// connState is the API servers' http.Server.ConnState: it marks a
// connection busy while net/http serves a request on it.
func connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*countedConn); ok {
		cc.busy.Store(st == http.StateActive)
	}
}

// PeerUID is the uid of the process at the other end of a loopback
// connection, once its first Read found it.
func (c *countedConn) PeerUID() (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.uid, c.uidKnown
}

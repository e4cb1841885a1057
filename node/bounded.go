package node

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/peercred"
)

// HTTP connection limits. Streams (SSE, chunked inference) may run for
// minutes, so there is no write timeout and no whole-request read timeout;
// instead each phase a client controls has its own bound.
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
	// DefaultMaxConnsPerClient caps open connections per client address.
	// Every local client shares 127.0.0.1, so the cap leaves room for a
	// benchmark's 64 concurrent streams and the keep-alive connections
	// their clients hold, while 500 trickling connections from one
	// address are refused.
	DefaultMaxConnsPerClient = 256
)

// bounded sets the body read deadline of every request that has a body and
// lifts it once the body is read, so a response may then stream for as long
// as it needs.
func (n *Node) bounded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(n.cfg.HTTPBodyTimeout)); err != nil {
			next.ServeHTTP(w, r)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline when the body has been read to its
// end. After any other error (the deadline itself) the deadline stays, so
// the server's drain of the rest cannot wait on the client either.
type deadlineBody struct {
	io.ReadCloser
	once sync.Once
	lift func()
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.lift)
	}
	return n, err
}

// connCounts counts open connections per remote IP across the API's
// listeners (HTTP and HTTPS), so a client's cap is one cap.
type connCounts struct {
	max int
	mu  sync.Mutex
	per map[string]int
}

func newConnCounts(max int) *connCounts { return &connCounts{max: max, per: map[string]int{}} }

// take counts a new connection from ip, false when ip is at the cap.
func (c *connCounts) take(ip string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.per[ip] >= c.max {
		return false
	}
	c.per[ip]++
	return true
}

func (c *connCounts) release(ip string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.per[ip]--; c.per[ip] <= 0 {
		delete(c.per, ip)
	}
}

// limitListener caps the open connections per remote IP. A connection over
// the cap is closed at once; on a plain HTTP listener it is answered 429
// first (a TLS client could not read that answer).
type limitListener struct {
	net.Listener
	counts *connCounts
	answer bool
}

func newLimitListener(ln net.Listener, counts *connCounts, answer bool) *limitListener {
	return &limitListener{Listener: ln, counts: counts, answer: answer}
}

// tooManyConnsBody answers a connection over the cap.
const tooManyConnsBody = `{"error":{"code":"too_many_connections","message":"too many open connections from this address"}}`

// tooManyConns is the whole HTTP answer to a connection over the cap.
var tooManyConns = fmt.Sprintf("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(tooManyConnsBody), tooManyConnsBody)

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cc := &countedConn{Conn: c}
		key := cc.client()
		if !l.counts.take(key) {
			if l.answer {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = io.WriteString(c, tooManyConns)
			}
			_ = c.Close()
			continue
		}
		cc.release = func() { l.counts.release(key) }
		return cc, nil
	}
}

// client is who the cap counts c against: its remote IP, or on loopback,
// where every local user shares one address, its user (so that one local
// user holding connections cannot lock out the others, the node's own
// workers and CLI among them).
func (c *countedConn) client() string {
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return c.RemoteAddr().String()
	}
	if ta.IP.IsLoopback() {
		if uid, err := peercred.LoopbackUID(c.LocalAddr(), c.RemoteAddr()); err == nil {
			c.uid, c.uidKnown = uid, true
			return fmt.Sprintf("uid:%d", uid)
		}
	}
	return ta.IP.String()
}

// countedConn gives its slot back once, on the first Close. It carries the
// loopback client's uid, looked up once at accept (PeerUID).
type countedConn struct {
	net.Conn
	once     sync.Once
	release  func()
	uid      uint32
	uidKnown bool
}

// PeerUID is the uid of the process at the other end of a loopback
// connection, when the accept could tell.
func (c *countedConn) PeerUID() (uint32, bool) { return c.uid, c.uidKnown }

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

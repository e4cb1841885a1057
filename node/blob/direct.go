package blob

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/rbee-project/rbee/internal/listen"
	"github.com/rbee-project/rbee/internal/pinnedtls"
	"github.com/rbee-project/rbee/p2p"
)

// The direct path carries the bytes of a transfer over one TLS 1.3
// connection to the serving node's blob port instead of the libp2p stream.
// The libp2p stream (private network + Noise + yamux) still carries the
// request and the head, so only a cluster member learns the offer: the
// port, the fingerprint of the listener's certificate and a one-time
// token. The receiver pins that fingerprint, so no one in between can
// read or change the bytes; the token, sent first inside TLS, is the
// receiver's proof that it asked over libp2p. The gain is the cipher:
// the stream pays XSalsa20 (the private network) and ChaCha20-Poly1305
// (Noise) on both sides, TLS pays AES-GCM, which this hardware does in
// a fraction of the time (see the package's DESIGN.md for the figures).
// When the port cannot be reached the receiver says so on the stream and
// the bytes come over it, as before.

// Timeouts and bounds of the direct path.
const (
	// directDial bounds the TCP connect: on a LAN it takes a millisecond;
	// a firewall that drops the SYN costs this once per peer (see
	// directRetry).
	directDial = 3 * time.Second
	// directHandshake bounds the TLS handshake plus the token exchange:
	// a millisecond of CPU on each side, so 5 s is a loaded machine's
	// margin, and a connection that holds a handshake slot without
	// finishing is cut soon.
	directHandshake = 5 * time.Second
	// directChoice bounds the serving side's wait for the receiver's
	// choice: a dial, a handshake and a margin.
	directChoice = directDial + directHandshake + 5*time.Second
	// tokenTTL is how long an offer waits to be claimed: the head's write
	// (idle) and the receiver's choice come first, and the serving side
	// takes the offer back after the choice anyway, so this only bounds
	// an offer whose stream died. Past it the file is closed.
	tokenTTL = idle + directChoice
	// maxOffers bounds the files held open for receivers, and so the
	// transfers in progress on the port (each claims an offer).
	maxOffers = 64
	// maxHandshakes bounds connections that have not presented a valid
	// token yet. Only addresses with an offer outstanding are let in at
	// all, so strangers elsewhere on the LAN never take a slot.
	maxHandshakes = 16
	// directRetry is how long a receiver that could not reach a peer's
	// blob port uses the stream for that peer before it tries again.
	directRetry = 2 * time.Minute
	// tokenLen is the size of a token: 256 random bits.
	tokenLen = 32
)

// errUnreachable: the blob port did not take the connection (no route,
// a firewall, nothing listening). Only this makes a receiver use the
// stream for a while: a refused or cut handshake may be a busy port.
var errUnreachable = errors.New("blob: direct: the blob port is unreachable")

// Status bytes the serving side sends after the token.
const (
	statusOK      byte = 0
	statusUnknown byte = 1
)

// Choice bytes the receiver sends on the libp2p stream after an offer.
const (
	choiceStream byte = 'S'
)

// Offer is the head's invitation to fetch the bytes directly.
type Offer struct {
	// Port is the blob listener's TCP port on the serving node's address
	// as the receiver's libp2p connection sees it.
	Port int `json:"port"`
	// CertSHA256 is the hex sha256 of the listener's certificate (DER).
	CertSHA256 string `json:"cert_sha256"`
	// Token (hex) claims this transfer once, within tokenTTL.
	Token string `json:"token"`
}

// Listener serves the direct path on one TCP port. New with Listen, run
// with Serve, stop with Close. Safe for concurrent use.
type Listener struct {
	ln   net.Listener
	cert tls.Certificate
	fp   string
	log  *slog.Logger
	hs   chan struct{} // handshake slots

	mu     sync.Mutex
	offers map[[32]byte]*offer // by sha256 of the token
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	ttl     time.Duration // tokenTTL; tests shorten it
	claimed atomic.Uint64
}

type offer struct {
	rc    io.ReadCloser
	ip    string // the receiver's address as the libp2p connection saw it
	timer *time.Timer
}

// Listen binds addr (host:port; port 0 picks one) with a fresh
// self-signed certificate.
func Listen(addr string, log *slog.Logger) (*Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cert, fp, err := pinnedtls.SelfSigned("rbee-blob")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("blob: listen %s: %w", addr, err)
	}
	return &Listener{ln: ln, cert: cert, fp: fp, log: log, hs: make(chan struct{}, maxHandshakes),
		offers: map[[32]byte]*offer{}, conns: map[net.Conn]struct{}{}, ttl: tokenTTL}, nil
}

// Claimed counts the offers claimed on this port since Listen.
func (l *Listener) Claimed() uint64 { return l.claimed.Load() }

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Serve accepts connections until Close; it returns nil after Close. A
// failure to accept other than a temporary one (no file descriptors
// left, say) is retried with a backoff, as net/http does; Serve ends
// only with Close.
func (l *Listener) Serve() error {
	for {
		c, err := listen.Accept(l.ln, nil, func(err error, in time.Duration) {
			l.log.Warn("blob: accept failed", "err", err, "retry_in", in)
		})
		if err != nil {
			return nil // closed
		}
		if !l.expected(c.RemoteAddr()) {
			_ = c.Close()
			continue
		}
		select {
		case l.hs <- struct{}{}:
		default:
			_ = c.Close()
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			<-l.hs
			_ = c.Close()
			return nil
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer func() {
				l.mu.Lock()
				delete(l.conns, c)
				l.mu.Unlock()
				l.wg.Done()
			}()
			l.serve(c)
		}()
	}
}

// expected says whether a connection comes from an address that has an
// offer outstanding.
func (l *Listener) expected(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.IP.String()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.offers {
		if o.ip == ip {
			return true
		}
	}
	return false
}

// Close stops accepting, voids every offer, cuts the transfers in
// progress (their receivers resume from another holder or later) and
// waits for their goroutines.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	offers := l.offers
	l.offers = map[[32]byte]*offer{}
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	err := l.ln.Close()
	for _, o := range offers {
		o.timer.Stop()
		_ = o.rc.Close()
	}
	l.wg.Wait()
	return err
}

// offer holds rc for the receiver at ip that will claim it with the
// returned token; the listener owns rc from here on, unless offer fails.
func (l *Listener) offer(rc io.ReadCloser, ip net.IP) (Offer, [32]byte, error) {
	var tok [tokenLen]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return Offer{}, [32]byte{}, err
	}
	key := sha256.Sum256(tok[:])
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || len(l.offers) >= maxOffers {
		return Offer{}, key, errors.New("blob: no direct offer now")
	}
	o := &offer{rc: rc, ip: ip.String()}
	o.timer = time.AfterFunc(l.ttl, func() {
		if rc, ok := l.take(key); ok {
			_ = rc.Close()
		}
	})
	l.offers[key] = o
	port := 0
	if a, ok := l.ln.Addr().(*net.TCPAddr); ok {
		port = a.Port
	}
	return Offer{Port: port, CertSHA256: l.fp, Token: hex.EncodeToString(tok[:])}, key, nil
}

// take removes an offer and hands its file back; false when it was
// claimed, expired or never existed.
func (l *Listener) take(key [32]byte) (io.ReadCloser, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	o, ok := l.offers[key]
	if !ok {
		return nil, false
	}
	delete(l.offers, key)
	o.timer.Stop()
	return o.rc, true
}

// serve is one connection: TLS, the token, then the file in sealed
// frames (sealed.go). It holds a handshake slot until the token is
// checked.
func (l *Listener) serve(c net.Conn) {
	defer c.Close()
	released := false
	release := func() {
		if !released {
			released = true
			<-l.hs
		}
	}
	defer release()
	_ = c.SetDeadline(time.Now().Add(directHandshake))
	// No session tickets: nothing may follow the server's handshake
	// flight but frames, which the receiver reads past TLS.
	tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{l.cert}, MinVersion: tls.VersionTLS13,
		SessionTicketsDisabled: true})
	var tok [tokenLen]byte
	if _, err := io.ReadFull(tc, tok[:]); err != nil { // runs the handshake
		return
	}
	s, err := newSealer(tc.ConnectionState())
	if err != nil {
		return
	}
	rc, ok := l.take(sha256.Sum256(tok[:]))
	release()
	_ = c.SetDeadline(time.Time{})
	if !ok {
		l.log.Debug("blob: direct connection with an unknown token refused", "remote", c.RemoteAddr().String())
		_ = sendFrames(c, s, statusUnknown, nil)
		return
	}
	defer rc.Close()
	l.claimed.Add(1)
	if err := sendFrames(c, s, statusOK, rc); err != nil {
		l.log.Debug("blob: direct transfer failed", "remote", c.RemoteAddr().String(), "err", err)
	}
}

// remoteIP is the serving node's address as stream s sees it.
func remoteIP(s network.Stream) (net.IP, error) {
	ip, err := p2p.RemoteIP(s)
	if err != nil {
		return nil, fmt.Errorf("blob: direct: %w", err)
	}
	return ip.AsSlice(), nil
}

// dialDirect claims offer o of the node at ip: the offer's port, the
// pinned certificate, the token, the status frame.
func dialDirect(ctx context.Context, ip net.IP, o *Offer) (*directConn, error) {
	tok, err := hex.DecodeString(o.Token)
	if err != nil || len(tok) != tokenLen {
		return nil, errors.New("blob: direct: bad token")
	}
	pinned, err := pinnedtls.Client(o.CertSHA256)
	if err != nil {
		return nil, errors.New("blob: direct: bad certificate fingerprint")
	}
	if o.Port <= 0 || o.Port > 65535 {
		return nil, errors.New("blob: direct: bad port")
	}
	d := net.Dialer{Timeout: directDial}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), strconv.Itoa(o.Port)))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	_ = c.SetDeadline(time.Now().Add(directHandshake))
	// TLS and then the frames read through one buffer: whatever it holds
	// past the handshake is the frames'.
	r := bufio.NewReaderSize(c, handshakeBuffer)
	tc := tls.Client(readConn{Conn: c, r: r}, pinned)
	fail := func(err error) (*directConn, error) {
		_ = c.Close()
		return nil, fmt.Errorf("blob: direct: %w", err)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(err)
	}
	s, err := newSealer(tc.ConnectionState())
	if err != nil {
		return fail(err)
	}
	if _, err := tc.Write(tok); err != nil {
		return fail(err)
	}
	dc := &directConn{c: c, r: r, s: s}
	var st [1 + tagLen]byte
	p, err := dc.readFrame(st[:], 1)
	if err != nil {
		return fail(err)
	}
	if p[0] != statusOK {
		return fail(errors.New("the peer refused the token"))
	}
	_ = c.SetDeadline(time.Time{})
	return dc, nil
}

// readConn reads the socket through the handshake's buffer.
type readConn struct {
	net.Conn
	r *bufio.Reader
}

func (c readConn) Read(p []byte) (int, error) { return c.r.Read(p) }

package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/listen"
	"github.com/rbee-project/rbee/internal/pinnedtls"
	"github.com/rbee-project/rbee/internal/reqbody"
	"github.com/rbee-project/rbee/internal/spinconn"
)

// The direct stage port. A group's head reaches a shard on another node
// through the two nodes (node/shardlink) unless this port lets it connect
// straight to the shard worker: the shard's node asks its worker for an
// offer (POST /v1/shard/direct, with the worker's secret, naming the head
// node's address), passes it to the head's node over the authenticated
// libp2p link protocol, and the head worker connects to the port with
// TLS 1.3, accepts only the certificate whose sha256 the offer names, and
// sends the offer's token. Then the connection carries the stage protocol
// as /v1/shard's upgraded one does. An offer is good for one connection,
// from its address, within stageOfferTTL; the port closes any other
// connection before TLS, and shakes hands with at most
// stageHandshakes at once.
const (
	// stageOfferTTL is how long an offer waits for its connection: the
	// head connects as soon as the offer reaches it (milliseconds).
	stageOfferTTL = 30 * time.Second
	// stageOffersMax bounds the offers outstanding: a group has at most
	// as many links as KV heads, and a head reconnects one at a time.
	stageOffersMax = 64
	// stageHandshakes bounds the TLS handshakes in progress.
	stageHandshakes = 16
	// stageHandshakeTimeout bounds the handshake and the token.
	stageHandshakeTimeout = 5 * time.Second
	// stageTokenLen is the token's length on the wire: 32 random bytes in
	// hex.
	stageTokenLen = 64
	// stageAccepted is the byte the port answers a good token with, so a
	// refused connection fails at the dial, not at the first exchange.
	stageAccepted = 1
)

// StageOffer is a direct stage port's answer to POST /v1/shard/direct:
// where the head connects (the port; the host is the shard node's
// address), the sha256 of the port's certificate (hex) and the one-time
// token it sends after the handshake.
type StageOffer struct {
	Port        int    `json:"port"`
	Fingerprint string `json:"fingerprint"`
	Token       string `json:"token"`
}

// stageOfferRequest names the address the offer's connection comes from.
type stageOfferRequest struct {
	ClientIP string `json:"client_ip"`
}

type stageOfferEntry struct {
	ip    netip.Addr
	until time.Time
}

// stagePort is the direct stage port of a shard worker.
type stagePort struct {
	ln    net.Listener
	tls   *tls.Config
	fp    string
	port  int
	admit stageAdmit
	log   *slog.Logger
	slots chan struct{}

	mu         sync.Mutex
	offers     map[string]stageOfferEntry
	handshakes listen.Conns // raw connections in their handshake: close cuts them
	wg         sync.WaitGroup
}

// stageAdmit admits one stage connection: it returns what serves it, or
// false when the worker cannot serve one now (loading, draining, not a
// stage). A serve function that was returned must be called.
type stageAdmit func() (serve func(net.Conn), ok bool)

// newStagePort listens on addr (host:port; port 0 picks one) with a fresh
// self-signed certificate.
// maxStageOfferBytes bounds a stage offer request body: a client address
// and a few fields.
const maxStageOfferBytes = 4 << 10

func newStagePort(addr string, admit stageAdmit, log *slog.Logger) (*stagePort, error) {
	cert, fp, err := pinnedtls.SelfSigned("rbee-stage")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("worker: stage port: %w", err)
	}
	p := &stagePort{ln: ln, fp: fp, port: ln.Addr().(*net.TCPAddr).Port, admit: admit, log: log,
		slots: make(chan struct{}, stageHandshakes), offers: map[string]stageOfferEntry{},
		tls: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// offer issues a one-time token for a connection from ip.
func (p *stagePort) offer(ip netip.Addr) (StageOffer, error) {
	var raw [stageTokenLen / 2]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return StageOffer{}, err
	}
	tok := hex.EncodeToString(raw[:])
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for t, o := range p.offers {
		if now.After(o.until) {
			delete(p.offers, t)
		}
	}
	if len(p.offers) >= stageOffersMax {
		return StageOffer{}, errors.New("too many direct stage offers outstanding")
	}
	p.offers[tok] = stageOfferEntry{ip: ip.Unmap(), until: now.Add(stageOfferTTL)}
	return StageOffer{Port: p.port, Fingerprint: p.fp, Token: tok}, nil
}

// expects reports whether a live offer waits for a connection from ip.
func (p *stagePort) expects(ip netip.Addr) bool {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.offers {
		if o.ip == ip && now.Before(o.until) {
			return true
		}
	}
	return false
}

// claim takes the offer of tok for a connection from ip.
func (p *stagePort) claim(tok string, ip netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for t, o := range p.offers {
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
			if o.ip != ip || time.Now().After(o.until) {
				return false
			}
			delete(p.offers, t)
			return true
		}
	}
	return false
}

func (p *stagePort) accept() {
	defer p.wg.Done()
	for {
		c, err := listen.Accept(p.ln, nil, func(err error, in time.Duration) {
			p.log.Warn("stage port accept; retrying", "err", err, "in", in)
		})
		if err != nil {
			return
		}
		ip := remoteIP(c)
		if !ip.IsValid() || !p.expects(ip) {
			_ = c.Close()
			continue
		}
		select {
		case p.slots <- struct{}{}:
		default:
			_ = c.Close() // handshakes at their bound
			continue
		}
		if !p.handshakes.Add(c) {
			<-p.slots
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.slots }()
			p.handshake(c, ip)
		}()
	}
}

// handshake runs TLS and takes the token; a good one, on a worker that
// admits a stage connection now, is acknowledged and the connection handed
// to the stage server. Anything else closes it without the acknowledgement.
func (p *stagePort) handshake(raw net.Conn, ip netip.Addr) {
	defer p.handshakes.Remove(raw)
	_ = raw.SetDeadline(time.Now().Add(stageHandshakeTimeout))
	// Exchanges follow each other closely: reads poll before they sleep.
	c := tls.Server(spinconn.Wrap(raw, spinconn.DefaultSpin), p.tls)
	var tok [stageTokenLen]byte
	if err := c.Handshake(); err != nil {
		_ = raw.Close()
		return
	}
	if _, err := io.ReadFull(c, tok[:]); err != nil || !p.claim(string(tok[:]), ip) {
		_ = raw.Close()
		return
	}
	serve, ok := p.admit()
	if !ok {
		_ = raw.Close()
		return
	}
	if _, err := c.Write([]byte{stageAccepted}); err != nil {
		_ = raw.Close() // serve then ends at once
	}
	_ = raw.SetDeadline(time.Time{})
	serve(c)
}

// close stops accepting, cuts the handshakes in progress and waits for
// them; connections already handed on end with the stage server.
func (p *stagePort) close() {
	p.handshakes.Close()
	_ = p.ln.Close()
	p.wg.Wait()
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// handleShardDirect answers POST /v1/shard/direct (the secret was checked
// by the middleware): an offer of the direct stage port for a connection
// from the body's client_ip, 404 no_direct without a port.
func (s *Server) handleShardDirect(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	p := s.stagePort
	s.mu.Unlock()
	if p == nil {
		writeError(w, &apiError{status: http.StatusNotFound, typ: errTypeInvalid, code: "no_direct", msg: "this worker has no direct stage port"})
		return
	}
	var req stageOfferRequest
	if err := json.NewDecoder(reqbody.Reader(w, r, maxStageOfferBytes)).Decode(&req); reqbody.TooLarge(err) {
		writeError(w, &apiError{status: http.StatusRequestEntityTooLarge, typ: errTypeInvalid, code: "request_too_large",
			msg: fmt.Sprintf("request body exceeds %d bytes", maxStageOfferBytes)})
		return
	} else if err != nil {
		writeError(w, &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "bad_request", msg: "body: " + err.Error()})
		return
	}
	ip, err := netip.ParseAddr(req.ClientIP)
	if err != nil {
		writeError(w, &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "bad_request", msg: "client_ip: " + err.Error()})
		return
	}
	o, err := p.offer(ip)
	if err != nil {
		writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: errTypeUnavailable, code: "unavailable", msg: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(o)
}

// admitStage admits a stage connection the direct port authenticated: it
// counts as a request in flight, as handleShard's upgraded one does, and
// the returned function serves it.
func (s *Server) admitStage() (func(net.Conn), bool) {
	m, _, _, err := s.admit()
	if err != nil {
		return nil, false
	}
	ss, ok := m.(stageServer)
	if !ok {
		s.reqs.Done()
		return nil, false
	}
	return func(c net.Conn) {
		go func() {
			defer s.reqs.Done()
			_ = ss.ServeStage(s.hardCtx, c)
		}()
	}, true
}

// RequestStageOffer asks a shard worker (its base URL and secret, on its
// node) for a direct stage port offer for a connection from clientIP. It
// returns ok false, with no error, when the worker has no direct port.
func RequestStageOffer(ctx context.Context, baseURL, secret string, clientIP netip.Addr) (StageOffer, bool, error) {
	body, _ := json.Marshal(stageOfferRequest{ClientIP: clientIP.String()})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/shard/direct", bytes.NewReader(body))
	if err != nil {
		return StageOffer{}, false, err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return StageOffer{}, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return StageOffer{}, false, nil
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return StageOffer{}, false, fmt.Errorf("worker: stage offer: %s: %s", resp.Status, b)
	}
	var o StageOffer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&o); err != nil {
		return StageOffer{}, false, fmt.Errorf("worker: stage offer: %w", err)
	}
	if o.Port <= 0 || o.Port > 65535 || len(o.Fingerprint) != 64 || len(o.Token) != stageTokenLen {
		return StageOffer{}, false, errors.New("worker: stage offer is malformed")
	}
	return o, true, nil
}

// DialStageDirect connects to a direct stage port at addr (host:port) as
// the offer says: TLS 1.3 with exactly the certificate of fingerprint,
// then the token. The connection then carries the stage protocol.
func DialStageDirect(ctx context.Context, addr string, o StageOffer) (net.Conn, error) {
	pinned, err := pinnedtls.Client(o.Fingerprint)
	if err != nil || len(o.Token) != stageTokenLen {
		return nil, errors.New("worker: malformed stage offer")
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("worker: direct stage port %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	// Exchanges follow each other closely: reads poll before they sleep.
	c := tls.Client(spinconn.Wrap(raw, spinconn.DefaultSpin), pinned)
	if err := c.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("worker: direct stage port %s: TLS: %w", addr, err)
	}
	var ack [1]byte
	_, err = io.WriteString(c, o.Token)
	if err == nil {
		_, err = io.ReadFull(c, ack[:])
	}
	if err == nil && ack[0] != stageAccepted {
		err = fmt.Errorf("answer byte %d", ack[0])
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("worker: direct stage port %s did not accept the offer's token: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

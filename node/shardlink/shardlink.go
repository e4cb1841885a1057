// Package shardlink bridges the stage connections of a sharded worker
// group between nodes. A group's head worker dials each of its other
// shards' stage endpoint (GET /v1/shard, upgraded to the shard protocol).
// The head's node gives it, for each shard, a loopback URL of its own and
// a token of that link (valid until the group's links are removed); a
// connection there opens a libp2p stream (Protocol) to the shard's node,
// which checks that the dialing node heads the worker's group, connects it
// to its local shard worker with that worker's secret and then copies
// bytes both ways. A shard on the head's
// own node is connected directly. Worker secrets never leave their node.
package shardlink

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/rbee-project/rbee/internal/listen"
	"github.com/rbee-project/rbee/p2p"
	"github.com/rbee-project/rbee/worker"
	"github.com/rbee-project/rbee/worker/shard"
)

// Protocol is the libp2p protocol of a stage link: one request frame
// (JSON linkReq), one answer frame (JSON linkResp), then the raw bytes of
// the shard protocol both ways until either side closes.
const Protocol protocol.ID = "/rbee/shard-link/1.0.0"

// Frame caps and deadlines. A request names a worker id; an answer is at
// most an error message. The handshake includes the remote node's
// loopback dial and HTTP upgrade to its worker: milliseconds, so 10 s is
// a node that does not answer.
const (
	maxFrame         = 4 << 10
	handshakeTimeout = 10 * time.Second
	// copyBuf sizes each direction's copy buffer: an exchange is one
	// hidden state (dim × 4 bytes, 8 KiB for a 2048-wide model) plus a
	// header, so one read usually moves a whole frame.
	copyBuf = 64 << 10
	// Memory is what one link holds on a node: a copy buffer each way.
	Memory = 2 * copyBuf
	// directOfferTimeout bounds asking a local shard worker for a direct
	// port offer (a loopback request: milliseconds).
	directOfferTimeout = 2 * time.Second
)

// Errors of the bridge.
var (
	// ErrUnknownLink: a connection to the bridge presented no token it
	// issued.
	ErrUnknownLink = errors.New("shardlink: unknown link token")
	// ErrNoWorker: the shard's node runs no such worker.
	ErrNoWorker = errors.New("shardlink: no such shard worker on this node")
	// ErrClosed: the bridge is closed.
	ErrClosed = errors.New("shardlink: closed")
	// ErrNotHead: the node that asked for a link does not head a group
	// the worker is another shard of.
	ErrNotHead = errors.New("shardlink: the asking node does not head this shard's group")
)

// Host is the libp2p side the bridge needs (a *p2p.Host).
type Host interface {
	Dial(ctx context.Context, id peer.ID, proto protocol.ID) (net.Conn, error)
	Handle(proto protocol.ID, fn func(s network.Stream))
	RemoveHandler(proto protocol.ID)
}

// Workers finds this node's workers: the secret and port of a supervised
// worker.
type Workers interface {
	Secret(workerID string) (secret string, port int, ok bool)
}

// Groups says who may link to a local worker (the node's registry).
type Groups interface {
	// HeadNode is the node id of the head of the starting or ready group
	// that lists workerID as one of its other shards; ok false when there
	// is none.
	HeadNode(workerID string) (nodeID string, ok bool)
}

// Config configures a Bridge.
type Config struct {
	// LocalID is this node's peer id: links to its own shards are direct.
	LocalID string
	Host    Host
	Workers Workers
	// Groups authorizes the links other nodes open (required): only the
	// node of a group's head reaches that group's other shards.
	Groups Groups
	Logger *slog.Logger
}

// link is one head-to-shard link the bridge issued.
type link struct {
	token    string
	owner    string // the group
	nodeID   string
	workerID string
}

// Bridge serves the loopback side (head workers dial it) and the libp2p
// side (other nodes' bridges open links to this node's shards). Its
// methods are safe for concurrent use.
type Bridge struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	links  []link
	conns  listen.Conns // open connections: Close ends them
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc

	// offered counts the direct stage port offers this node's shard
	// workers made to other nodes' heads; redirected those its head
	// workers were sent to; bridged the links to other nodes' shards this
	// node carried for its heads itself.
	offered, redirected, bridged atomic.Uint64
}

// Counts are a bridge's link counters.
type Counts struct {
	// Offered: offers of a direct stage port this node's shard workers
	// made to other nodes' heads.
	Offered uint64
	// Redirected: links this node's heads were sent to another node's
	// shard worker's direct stage port for.
	Redirected uint64
	// Bridged: links to other nodes' shards this node carried for its
	// heads (through libp2p), direct or not asked for, or refused.
	Bridged uint64
}

// Counts returns the bridge's link counters.
func (b *Bridge) Counts() Counts {
	return Counts{Offered: b.offered.Load(), Redirected: b.redirected.Load(), Bridged: b.bridged.Load()}
}

// New returns a bridge; Start opens it.
func New(cfg Config) *Bridge {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bridge{cfg: cfg, log: log}
}

// Start listens on a loopback port for head workers and handles Protocol
// on the host.
func (b *Bridge) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("shardlink: listen: %w", err)
	}
	b.mu.Lock()
	b.ln = ln
	b.ctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	b.mu.Unlock()
	b.cfg.Host.Handle(Protocol, b.handleStream)
	b.wg.Add(1)
	go b.accept(ln)
	return nil
}

// Close stops both sides and ends every open link.
func (b *Bridge) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	ln := b.ln
	b.conns.Close()
	if b.cancel != nil {
		b.cancel()
	}
	b.mu.Unlock()
	b.cfg.Host.RemoveHandler(Protocol)
	if ln != nil {
		_ = ln.Close()
	}
	b.wg.Wait()
}

// Add issues a link from a head worker of group to the shard worker
// workerID on node nodeID: the head dials url (its stage URL) with token
// (its stage secret).
func (b *Bridge) Add(group, nodeID, workerID string) (url, token string, err error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", err
	}
	token = hex.EncodeToString(raw[:])
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.ln == nil {
		return "", "", ErrClosed
	}
	b.links = append(b.links, link{token: token, owner: group, nodeID: nodeID, workerID: workerID})
	return "http://" + b.ln.Addr().String(), token, nil
}

// Remove forgets the links of group (its head is gone or re-planned).
// Open connections are not cut: they end with the head's.
func (b *Bridge) Remove(group string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.links[:0]
	for _, l := range b.links {
		if l.owner != group {
			kept = append(kept, l)
		}
	}
	b.links = kept
}

// Groups returns the groups the bridge has links for.
func (b *Bridge) Groups() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, l := range b.links {
		if !seen[l.owner] {
			seen[l.owner] = true
			out = append(out, l.owner)
		}
	}
	return out
}

func (b *Bridge) lookup(token string) (link, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.links {
		if subtle.ConstantTimeCompare([]byte(l.token), []byte(token)) == 1 {
			return l, true
		}
	}
	return link{}, false
}

// accept serves head workers until the bridge closes; an accept error
// (not the listener's close) is retried with backoff.
func (b *Bridge) accept(ln net.Listener) {
	defer b.wg.Done()
	for {
		c, err := listen.Accept(ln, b.ctx.Done(), func(err error, in time.Duration) {
			b.log.Warn("shard link accept; retrying", "err", err, "in", in)
		})
		if err != nil {
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.serveHead(c)
		}()
	}
}

// serveHead answers a head worker's GET /v1/shard: it checks the token,
// connects the link and switches the connection to the shard protocol.
func (b *Bridge) serveHead(c net.Conn) {
	if !b.conns.Add(c) {
		_ = c.Close()
		return
	}
	defer b.conns.Remove(c)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReader(io.LimitReader(c, maxFrame))
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	refuse := func(status int, msg string) {
		_, _ = io.WriteString(c, "HTTP/1.1 "+strconv.Itoa(status)+" "+http.StatusText(status)+
			"\r\nContent-Type: text/plain\r\nContent-Length: "+strconv.Itoa(len(msg))+"\r\nConnection: close\r\n\r\n"+msg)
	}
	token, _ := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	l, ok := b.lookup(token)
	switch {
	case req.Method != http.MethodGet || req.URL.Path != "/v1/shard":
		refuse(http.StatusNotFound, "not a stage link")
		return
	case !ok:
		refuse(http.StatusUnauthorized, ErrUnknownLink.Error())
		return
	case !strings.EqualFold(req.Header.Get("Upgrade"), shard.ProtocolID):
		refuse(http.StatusUpgradeRequired, "Upgrade: "+shard.ProtocolID+" required")
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, handshakeTimeout)
	remote, redirect, err := b.open(ctx, l, req.Header.Get(worker.StageDirectHeader) == "1")
	cancel()
	if err != nil {
		b.log.Warn("shard link", "group", l.owner, "worker", l.workerID, "err", err)
		refuse(http.StatusBadGateway, err.Error())
		return
	}
	if redirect != nil {
		body, _ := json.Marshal(redirect)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+string(body))
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+shard.ProtocolID+"\r\n\r\n"); err != nil {
		abort(remote)
		return
	}
	_ = c.SetDeadline(time.Time{})
	if l.nodeID != b.cfg.LocalID {
		b.bridged.Add(1)
	}
	// The head's request was the whole first message: nothing of the
	// shard protocol is buffered in br (the head waits for the 101).
	b.splice(c, remote)
}

// open connects a link: directly to a shard worker on this node, else
// over libp2p through the shard's node. With direct (the head asked for
// it) a remote shard's worker may answer with an offer of its direct
// stage port instead: open returns where the head connects to it.
func (b *Bridge) open(ctx context.Context, l link, direct bool) (net.Conn, *worker.StageRedirect, error) {
	if l.nodeID == b.cfg.LocalID {
		c, err := b.dialLocal(ctx, l.workerID)
		return c, nil, err
	}
	pid, err := peer.Decode(l.nodeID)
	if err != nil {
		return nil, nil, fmt.Errorf("shard node %q: %w", l.nodeID, err)
	}
	s, err := b.cfg.Host.Dial(ctx, pid, Protocol)
	if err != nil {
		return nil, nil, fmt.Errorf("reach the shard's node over p2p: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := p2p.WriteJSON(s, linkReq{WorkerID: l.workerID, Direct: direct}); err != nil {
		abort(s)
		return nil, nil, err
	}
	var resp linkResp
	if err := p2p.ReadJSON(s, maxFrame, &resp); err != nil {
		abort(s)
		return nil, nil, fmt.Errorf("shard node's answer: %w", err)
	}
	if resp.Error != "" {
		// A refusal is a clean end of the exchange.
		_ = s.Close()
		return nil, nil, fmt.Errorf("shard node: %s", resp.Error)
	}
	if resp.Direct != nil {
		st, ok := s.(network.Stream)
		if !ok {
			_ = s.Close()
			return nil, nil, fmt.Errorf("shardlink: link stream is a %T", s)
		}
		ip, err := p2p.RemoteIP(st)
		_ = s.Close()
		if err != nil {
			return nil, nil, err
		}
		b.redirected.Add(1)
		return nil, &worker.StageRedirect{Addr: net.JoinHostPort(ip.String(), strconv.Itoa(resp.Direct.Port)), Offer: *resp.Direct}, nil
	}
	_ = s.SetDeadline(time.Time{})
	return s, nil, nil
}

// dialLocal opens the stage protocol on a worker of this node.
func (b *Bridge) dialLocal(ctx context.Context, workerID string) (net.Conn, error) {
	secret, port, ok := b.cfg.Workers.Secret(workerID)
	if !ok || port == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoWorker, workerID)
	}
	rwc, err := worker.DialWorkerStage(ctx, "http://127.0.0.1:"+strconv.Itoa(port), secret)
	if err != nil {
		return nil, err
	}
	c, ok := rwc.(net.Conn)
	if !ok {
		_ = rwc.Close()
		return nil, fmt.Errorf("shardlink: stage connection is a %T", rwc)
	}
	return c, nil
}

// abort ends a connection after an error: Reset for a libp2p stream (the
// other side sees an error, not a clean end), Close otherwise.
func abort(c io.Closer) {
	if r, ok := c.(interface{ Reset() error }); ok {
		_ = r.Reset()
		return
	}
	_ = c.Close()
}

// enter counts a handler in the bridge's WaitGroup; false once closed.
func (b *Bridge) enter() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.ctx == nil {
		return false
	}
	b.wg.Add(1)
	return true
}

type linkReq struct {
	WorkerID string `json:"worker_id"`
	// Direct: the head can connect to the worker's direct stage port;
	// answer with an offer when the worker has one.
	Direct bool `json:"direct,omitempty"`
}

type linkResp struct {
	Error string `json:"error,omitempty"`
	// Direct is the worker's direct stage port offer (for the head node's
	// address); the stream then ends. Without it the stream carries the
	// link, as for a request without Direct.
	Direct *worker.StageOffer `json:"direct,omitempty"`
}

// handleStream serves Protocol: connect the named local shard worker and
// copy bytes both ways. Only the node that heads the worker's group (a
// starting or ready group that lists the worker as another shard) is
// served; any other is answered the refusal and closed, as is a worker
// this node does not run. Errors reset the stream. The handler counts in
// the bridge's WaitGroup: Close waits for it.
func (b *Bridge) handleStream(s network.Stream) {
	if !b.enter() {
		_ = s.Reset()
		return
	}
	defer b.wg.Done()
	_ = s.SetDeadline(time.Now().Add(handshakeTimeout))
	var req linkReq
	if err := p2p.ReadJSON(s, maxFrame, &req); err != nil {
		_ = s.Reset()
		return
	}
	var local net.Conn
	err := b.authorize(s.Conn().RemotePeer().String(), req.WorkerID)
	if err == nil && req.Direct {
		if o, ok := b.directOffer(s, req.WorkerID); ok {
			if p2p.WriteJSON(s, linkResp{Direct: &o}) != nil {
				_ = s.Reset()
				return
			}
			b.offered.Add(1)
			_ = s.Close()
			return
		}
	}
	if err == nil {
		dctx, cancel := context.WithTimeout(b.ctx, handshakeTimeout)
		local, err = b.dialLocal(dctx, req.WorkerID)
		cancel()
	}
	if err != nil {
		if p2p.WriteJSON(s, linkResp{Error: err.Error()}) != nil {
			_ = s.Reset()
			return
		}
		_ = s.Close()
		return
	}
	if err := p2p.WriteJSON(s, linkResp{}); err != nil {
		abort(local)
		_ = s.Reset()
		return
	}
	_ = s.SetDeadline(time.Time{})
	conn := &streamConn{Stream: s}
	if !b.conns.Add(conn) {
		_ = local.Close()
		_ = s.Reset()
		return
	}
	defer b.conns.Remove(conn)
	b.splice(local, conn)
}

// directOffer asks local shard worker workerID for an offer of its direct
// stage port, for a connection from the address stream s comes from;
// false when it has none or it fails (the link then goes through the
// nodes).
func (b *Bridge) directOffer(s network.Stream, workerID string) (worker.StageOffer, bool) {
	secret, port, ok := b.cfg.Workers.Secret(workerID)
	if !ok || port == 0 {
		return worker.StageOffer{}, false
	}
	ip, err := p2p.RemoteIP(s)
	if err != nil {
		return worker.StageOffer{}, false // not an IP transport
	}
	// Short: the stream's handshake deadline must leave room for the
	// ordinary link when this fails.
	ctx, cancel := context.WithTimeout(b.ctx, directOfferTimeout)
	defer cancel()
	o, ok, err := worker.RequestStageOffer(ctx, "http://127.0.0.1:"+strconv.Itoa(port), secret, ip)
	if err != nil {
		b.log.Warn("shard link: direct stage port offer; going through the nodes", "worker", workerID, "err", err)
	}
	return o, ok && err == nil
}

// authorize checks that node remote heads the group of local worker
// workerID.
func (b *Bridge) authorize(remote, workerID string) error {
	if b.cfg.Groups == nil {
		return fmt.Errorf("%w: this node knows no groups", ErrNotHead)
	}
	head, ok := b.cfg.Groups.HeadNode(workerID)
	if !ok || head != remote {
		return fmt.Errorf("%w: worker %s", ErrNotHead, workerID)
	}
	return nil
}

// streamConn closes a stream for the splice: Close on a clean end.
type streamConn struct{ network.Stream }

// splice copies both ways until one side ends, then closes both. Stage
// traffic has its own per-exchange deadlines in the shard protocol, so no
// idle timeout is set here.
func (b *Bridge) splice(a, c io.ReadWriteCloser) {
	if !b.conns.Add(c) {
		_ = a.Close()
		_ = c.Close()
		return
	}
	defer b.conns.Remove(c)
	done := make(chan struct{}, 2)
	cp := func(dst io.Writer, src io.Reader) {
		buf := make([]byte, copyBuf)
		_, _ = io.CopyBuffer(dst, src, buf)
		done <- struct{}{}
	}
	go cp(a, c)
	go cp(c, a)
	<-done
	_ = a.Close()
	_ = c.Close()
	<-done
}

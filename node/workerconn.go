package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/p2p"
)

// protoWorkerHTTP carries one HTTP request to a worker on another node:
// a request frame, then a response-head frame and body frames; an empty
// frame ends the body. The requester resetting the stream cancels the
// request on the worker.
const protoWorkerHTTP protocol.ID = "/rbee/worker-http/1.0.0"

// protoWorkerHTTP11 is protoWorkerHTTP with liveness: after the request
// frame every frame of the serving node starts with a type byte (frameHead
// + the head's JSON, frameData + body bytes, frameEnd), and while it has
// nothing else to write it sends a frameKeepalive every keepaliveEvery, so
// the requester tells a quiet node (a long prompt, a full queue) from a
// node that dropped off without a FIN or RST (see streamWatch).
const protoWorkerHTTP11 protocol.ID = "/rbee/worker-http/1.1.0"

// Frame types of protoWorkerHTTP11.
const (
	frameHead      byte = 'h'
	frameData      byte = 'd'
	frameEnd       byte = 'e'
	frameKeepalive byte = 'k'
)

// Liveness of worker streams. keepaliveEvery is far below streamIdle so
// that a node under load misses several keepalives before its streams are
// given up (a loaded 2-core machine was seen to miss 1.4 s of them); a node
// gossip suspects gets suspectIdle, four keepalives: if it is alive after
// all, its keepalives still arrive. A silent drop so ends a stream after
// suspectIdle (gossip suspects within a second), and after streamIdle at
// the latest, where libp2p's own keepalive took 38 s.
const (
	keepaliveEvery = 500 * time.Millisecond
	streamIdle     = 4 * time.Second
	suspectIdle    = 2 * time.Second
	// watchEvery is how often a stream's watcher looks.
	watchEvery = 200 * time.Millisecond
)

// Frame caps and chunking of proxied worker traffic: a request's body is
// an API body (maxRequestBytes) plus what the node adds to it (its
// extension: a resumed stream's tokens), base64 in the frame's JSON; body
// chunks are what one Read of the worker's response returned (SSE events
// are small), capped at 64 KiB.
const (
	maxWorkerBody     = 2 * maxRequestBytes
	maxWorkerReqFrame = (maxWorkerBody+2)/3*4 + 4096
	maxHeadFrame      = 64 << 10
	bodyChunk         = 64 << 10
)

// workerPaths are the worker endpoints other nodes may reach.
var workerPaths = map[string]bool{"/v1/infer": true, "/v1/chat/completions": true, "/v1/completions": true,
	"/v1/embeddings": true, "/health": true, "/v1/info": true}

type workerReq struct {
	WorkerID string `json:"worker_id"`
	Method   string `json:"method"`
	Path     string `json:"path"`
	Body     []byte `json:"body,omitempty"`
}

type workerRespHead struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type"`
	Error       string `json:"error,omitempty"`
}

// workerHTTP is the client for workers on this machine: no overall
// timeout (responses stream), but a bounded connect.
func newWorkerHTTP() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// workerCaller is the relay's Caller: this node's worker connections.
type workerCaller struct{ n *Node }

func (c workerCaller) CallWorker(ctx context.Context, t router.Target, method, path string, body []byte) (*http.Response, error) {
	return c.n.callWorker(ctx, t, method, path, body)
}

// callWorker sends an HTTP request to a worker, directly when it is local,
// else over libp2p through its node. The response body streams.
func (n *Node) callWorker(ctx context.Context, t router.Target, method, path string, body []byte) (*http.Response, error) {
	if t.Local {
		return n.callLocalWorker(ctx, t.Registry.ID, method, path, body)
	}
	if len(body) > maxWorkerBody {
		// The request's fault, not the worker's: an answer (413), so that
		// no other worker is tried and none counts as failed.
		msg, _ := json.Marshal(map[string]any{"error": map[string]string{"type": "invalid_request_error", "code": "request_too_large",
			"message": fmt.Sprintf("the request for a worker on %s is %d bytes, over %d", t.NodeName, len(body), maxWorkerBody)}})
		return &http.Response{StatusCode: http.StatusRequestEntityTooLarge, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(bytes.NewReader(msg)), ContentLength: int64(len(msg))}, nil
	}
	pid, err := peer.Decode(t.Registry.NodeID)
	if err != nil {
		return nil, err
	}
	s, err := n.host.NewStream(ctx, pid, protoWorkerHTTP11, protoWorkerHTTP)
	if err != nil {
		return nil, fmt.Errorf("reach %s over p2p: %w", t.NodeName, err)
	}
	typed := s.Protocol() == protoWorkerHTTP11
	w := n.watchStream(s, t.Registry.NodeID, typed)
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	fail := func(err error) (*http.Response, error) {
		stop()
		w.close()
		_ = s.Reset()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, w.explain(err)
	}
	_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := p2p.WriteJSON(s, workerReq{WorkerID: t.Registry.ID, Method: method, Path: path, Body: body}); err != nil {
		return fail(fmt.Errorf("send to %s: %w", t.NodeName, err))
	}
	_ = s.SetWriteDeadline(time.Time{})
	_ = s.CloseWrite()
	b := &frameBody{s: s, typed: typed, w: w}
	hb, err := b.frame(frameHead)
	if err != nil {
		return fail(fmt.Errorf("response from %s: %w", t.NodeName, err))
	}
	var head workerRespHead
	if err := json.Unmarshal(hb, &head); err != nil {
		return fail(fmt.Errorf("response from %s: %w", t.NodeName, err))
	}
	if head.Error != "" {
		stop()
		w.close()
		_ = s.Close()
		return nil, fmt.Errorf("worker %s on %s: %s", t.Registry.ID, t.NodeName, head.Error)
	}
	b.stop = stop
	h := http.Header{}
	h.Set("Content-Type", head.ContentType)
	return &http.Response{StatusCode: head.Status, Status: strconv.Itoa(head.Status) + " " + http.StatusText(head.Status),
		Header: h, Body: b}, nil
}

// streamWatch resets a worker stream whose node went quiet: with
// keepalives (protoWorkerHTTP11), after streamIdle without a frame, or
// suspectIdle while gossip does not see the node alive; without (an older
// node), only the latter.
type streamWatch struct {
	last   atomic.Int64 // unix nanos of the last frame
	idle   atomic.Int64 // how long it was quiet when reset; 0 while not
	done   chan struct{}
	closed sync.Once
}

func (n *Node) watchStream(s network.Stream, nodeID string, keepalives bool) *streamWatch {
	return watchQuiet(s, func(idle time.Duration) bool {
		return (keepalives && idle > streamIdle) || (idle > suspectIdle && !n.memberAlive(nodeID))
	})
}

// watchGone resets a stream to a node once gossip declares that node dead
// or gone and the stream has been quiet for suspectIdle: for protocols
// without keepalives whose other side may rightly be silent for long (a
// forwarded job), and toward nodes that may be suspect and still answer.
func (n *Node) watchGone(s network.Stream, nodeID string) *streamWatch {
	return watchQuiet(s, func(idle time.Duration) bool {
		if idle <= suspectIdle {
			return false
		}
		m, ok := n.gsp.Member(nodeID)
		return !ok || m.State == gossip.StateDead || m.State == gossip.StateLeft
	})
}

// watchQuiet resets s once quiet(time since the last touch) says so.
func watchQuiet(s network.Stream, quiet func(idle time.Duration) bool) *streamWatch {
	w := &streamWatch{done: make(chan struct{})}
	w.touch()
	go every(w.done, watchEvery, func() bool {
		idle := time.Duration(time.Now().UnixNano() - w.last.Load())
		if quiet(idle) {
			w.idle.Store(int64(idle))
			_ = s.Reset()
			return false
		}
		return true
	})
	return w
}

// every calls fn every d until it returns false or done is closed.
func every(done <-chan struct{}, d time.Duration, fn func() bool) {
	tk := time.NewTicker(d)
	defer tk.Stop()
	for {
		select {
		case <-done:
			return
		case <-tk.C:
		}
		if !fn() {
			return
		}
	}
}

func (w *streamWatch) touch() { w.last.Store(time.Now().UnixNano()) }

func (w *streamWatch) close() { w.closed.Do(func() { close(w.done) }) }

// explain names the silence behind err when the watcher reset the stream.
func (w *streamWatch) explain(err error) error {
	if idle := time.Duration(w.idle.Load()); idle > 0 {
		return fmt.Errorf("%w: its node sent nothing for %v (dropped off)", err, idle.Round(time.Millisecond))
	}
	return err
}

// memberAlive reports whether gossip sees the node alive.
func (n *Node) memberAlive(nodeID string) bool {
	m, ok := n.gsp.Member(nodeID)
	return ok && m.State == gossip.StateAlive
}

// callLocalWorker calls a worker process of this node on loopback, at the
// port its process manager gave it and with its secret: a worker answers
// nobody else. Requests that arrive from other nodes over libp2p come here
// too, so the secret never leaves this machine.
func (n *Node) callLocalWorker(ctx context.Context, workerID, method, path string, body []byte) (*http.Response, error) {
	return n.sup.Call(ctx, workerID, method, path, body)
}

// frameBody reads a proxied response body from frames.
type frameBody struct {
	s     network.Stream
	typed bool // protoWorkerHTTP11 framing
	w     *streamWatch
	stop  func() bool
	buf   []byte
	eof   bool
	err   error
}

// frame reads the next frame that is not a keepalive; with typed framing
// it must be of type want (frameData also accepts frameEnd, returned as an
// empty frame) and comes without its type byte.
func (b *frameBody) frame(want byte) ([]byte, error) {
	for {
		f, err := p2p.ReadFrame(b.s, max(bodyChunk, maxHeadFrame)+1)
		if err != nil {
			return nil, err
		}
		b.w.touch()
		if !b.typed {
			return f, nil
		}
		if len(f) == 0 {
			return nil, errors.New("empty frame")
		}
		switch {
		case f[0] == frameKeepalive:
			continue
		case f[0] == want, want == frameData && f[0] == frameEnd && len(f) == 1:
			return f[1:], nil
		}
		return nil, fmt.Errorf("unexpected frame type %q", f[0])
	}
}

func (b *frameBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		if b.err != nil {
			return 0, b.err
		}
		f, err := b.frame(frameData)
		if err != nil {
			b.err = fmt.Errorf("worker stream broke: %w", b.w.explain(err))
			return 0, b.err
		}
		if len(f) == 0 {
			b.eof = true
			return 0, io.EOF
		}
		b.buf = f
	}
	k := copy(p, b.buf)
	b.buf = b.buf[k:]
	return k, nil
}

func (b *frameBody) Close() error {
	b.stop()
	b.w.close()
	if b.eof {
		return b.s.Close()
	}
	return b.s.Reset()
}

// frameWriter writes the serving side's frames of a worker stream: plain
// (protoWorkerHTTP) or typed, with keepalives while nothing else is
// written (protoWorkerHTTP11). Safe for concurrent use.
type frameWriter struct {
	s     network.Stream
	typed bool
	mu    sync.Mutex
	last  time.Time
	err   error
	done  chan struct{}
}

// newFrameWriter starts the keepalives of a typed stream; close stops them.
func newFrameWriter(s network.Stream, typed bool) *frameWriter {
	fw := &frameWriter{s: s, typed: typed, last: time.Now(), done: make(chan struct{})}
	if typed {
		go every(fw.done, keepaliveEvery/2, func() bool {
			fw.mu.Lock()
			quiet := time.Since(fw.last) >= keepaliveEvery
			fw.mu.Unlock()
			return !quiet || fw.write(frameKeepalive, nil, streamIdle) == nil
		})
	}
	return fw
}

func (fw *frameWriter) close() { close(fw.done) }

// write sends one frame of type typ (the type byte only when typed).
func (fw *frameWriter) write(typ byte, b []byte, deadline time.Duration) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.err != nil {
		return fw.err
	}
	if fw.typed {
		b = append([]byte{typ}, b...)
	}
	_ = fw.s.SetWriteDeadline(time.Now().Add(deadline))
	fw.err = p2p.WriteFrame(fw.s, b)
	fw.last = time.Now()
	return fw.err
}

func (fw *frameWriter) head(h workerRespHead) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return fw.write(frameHead, b, 5*time.Second)
}

// handleWorkerHTTP serves protoWorkerHTTP, handleWorkerHTTP11 its typed
// version with keepalives.
func (n *Node) handleWorkerHTTP(s network.Stream)   { n.serveWorkerHTTP(s, false) }
func (n *Node) handleWorkerHTTP11(s network.Stream) { n.serveWorkerHTTP(s, true) }

// serveWorkerHTTP calls a local worker on loopback and streams the answer
// back.
func (n *Node) serveWorkerHTTP(s network.Stream, typed bool) {
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req workerReq
	if err := p2p.ReadJSON(s, maxWorkerReqFrame, &req); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	fw := newFrameWriter(s, typed)
	defer fw.close()
	fail := func(msg string) {
		if fw.head(workerRespHead{Error: msg}) != nil {
			_ = s.Reset()
			return
		}
		_ = s.Close()
	}
	if !workerPaths[req.Path] || (req.Method != http.MethodGet && req.Method != http.MethodPost) {
		fail("path not allowed: " + req.Path)
		return
	}
	if _, ok := n.sup.Local(req.WorkerID); !ok {
		fail("no such worker on " + n.cfg.Name)
		return
	}
	ctx, cancel := watchRequester(n.ctx, s)
	defer cancel()
	done := n.router.Track(req.WorkerID)
	defer done()
	var body []byte
	if req.Method == http.MethodPost {
		body = req.Body
	}
	resp, err := n.callLocalWorker(ctx, req.WorkerID, req.Method, req.Path, body)
	if err != nil {
		fail(err.Error())
		return
	}
	defer resp.Body.Close()
	if err := fw.head(workerRespHead{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type")}); err != nil {
		_ = s.Reset()
		return
	}
	if err := p2p.Pump(resp.Body, bodyChunk, 30*time.Second, s, func(b []byte) error { return fw.write(frameData, b, 30*time.Second) }); err != nil {
		_ = s.Reset()
		return
	}
	if err := fw.write(frameEnd, nil, 5*time.Second); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/rbee-project/rbee/p2p"
)

// protoWorkerHTTP carries one HTTP request to a worker on another node:
// a request frame, then a response-head frame and body frames; an empty
// frame ends the body. The requester resetting the stream cancels the
// request on the worker.
const protoWorkerHTTP protocol.ID = "/rbee/worker-http/1.0.0"

// Frame caps and chunking of proxied worker traffic: requests are bounded
// like the API body; body chunks are what one Read of the worker's
// response returned (SSE events are small), capped at 64 KiB.
const (
	maxWorkerReqFrame = maxRequestBytes + 4096
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

// callWorker sends an HTTP request to a worker, directly when it is local,
// else over libp2p through its node. The response body streams.
func (n *Node) callWorker(ctx context.Context, t Target, method, path string, body []byte) (*http.Response, error) {
	if t.Local {
		return n.callLocalWorker(ctx, t.Registry.ID, method, path, body)
	}
	pid, err := peer.Decode(t.Registry.NodeID)
	if err != nil {
		return nil, err
	}
	s, err := n.host.NewStream(ctx, pid, protoWorkerHTTP)
	if err != nil {
		return nil, fmt.Errorf("reach %s over p2p: %w", t.NodeName, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := p2p.WriteJSON(s, workerReq{WorkerID: t.Registry.ID, Method: method, Path: path, Body: body}); err != nil {
		stop()
		_ = s.Reset()
		return nil, fmt.Errorf("send to %s: %w", t.NodeName, err)
	}
	_ = s.SetWriteDeadline(time.Time{})
	_ = s.CloseWrite()
	var head workerRespHead
	if err := p2p.ReadJSON(s, maxHeadFrame, &head); err != nil {
		stop()
		_ = s.Reset()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("response from %s: %w", t.NodeName, err)
	}
	if head.Error != "" {
		stop()
		_ = s.Close()
		return nil, fmt.Errorf("worker %s on %s: %s", t.Registry.ID, t.NodeName, head.Error)
	}
	h := http.Header{}
	h.Set("Content-Type", head.ContentType)
	return &http.Response{StatusCode: head.Status, Status: strconv.Itoa(head.Status) + " " + http.StatusText(head.Status),
		Header: h, Body: &frameBody{s: s, stop: stop}}, nil
}

// callLocalWorker calls a worker process of this node on loopback, at the
// port its process manager gave it and with its secret: a worker answers
// nobody else. Requests that arrive from other nodes over libp2p come here
// too, so the secret never leaves this machine.
func (n *Node) callLocalWorker(ctx context.Context, workerID, method, path string, body []byte) (*http.Response, error) {
	var secret string
	var port int
	ok := false
	if n.procs != nil {
		secret, port, ok = n.procs.Secret(workerID)
	}
	if !ok {
		return nil, fmt.Errorf("worker %s is not a worker process of %s", workerID, n.cfg.Name)
	}
	if st, _, isEngine := n.localEngine(workerID); isEngine {
		return n.callEngine(ctx, st, port, secret, method, path, body)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1:"+strconv.Itoa(port)+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	return n.workerClient.Do(req)
}

// frameBody reads a proxied response body from frames.
type frameBody struct {
	s    network.Stream
	stop func() bool
	buf  []byte
	eof  bool
	err  error
}

func (b *frameBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		if b.err != nil {
			return 0, b.err
		}
		f, err := p2p.ReadFrame(b.s, bodyChunk)
		if err != nil {
			b.err = fmt.Errorf("worker stream broke: %w", err)
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
	if b.eof {
		return b.s.Close()
	}
	return b.s.Reset()
}

// pump copies r to write in reads of up to chunk bytes as they come (a
// streaming response is relayed without waiting for a full buffer), with a
// write deadline per chunk. io.EOF ends it without error.
func pump(r io.Reader, chunk int, idle time.Duration, s network.Stream, write func([]byte) error) error {
	buf := make([]byte, chunk)
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			_ = s.SetWriteDeadline(time.Now().Add(idle))
			if err := write(buf[:k]); err != nil {
				return err
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
	}
}

// handleWorkerHTTP serves protoWorkerHTTP: it calls a local worker on
// loopback and streams the answer back.
func (n *Node) handleWorkerHTTP(s network.Stream) {
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req workerReq
	if err := p2p.ReadJSON(s, maxWorkerReqFrame, &req); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	fail := func(msg string) {
		_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if p2p.WriteJSON(s, workerRespHead{Error: msg}) != nil {
			_ = s.Reset()
			return
		}
		_ = s.Close()
	}
	if !workerPaths[req.Path] || (req.Method != http.MethodGet && req.Method != http.MethodPost) {
		fail("path not allowed: " + req.Path)
		return
	}
	if _, ok := n.localHeartbeat(req.WorkerID); !ok {
		fail("no such worker on " + n.cfg.Name)
		return
	}
	ctx, cancel := watchRequester(n.ctx, s)
	defer cancel()
	done := n.track(req.WorkerID)
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
	if err := p2p.WriteJSON(s, workerRespHead{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type")}); err != nil {
		_ = s.Reset()
		return
	}
	if err := pump(resp.Body, bodyChunk, 30*time.Second, s, func(b []byte) error { return p2p.WriteFrame(s, b) }); err != nil {
		_ = s.Reset()
		return
	}
	if err := p2p.WriteFrame(s, nil); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

package consensus

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// rpcTransport is raft's NetworkTransport with the sending side made
// here. hashicorp/raft gives every outgoing connection it pools a 256 KB
// send buffer (and a 4 KB read buffer) for as long as the connection
// lives. The leader keeps one or two connections to every follower, so
// at 100 nodes those buffers were 46 MB of its 58 MB live heap (a heap
// profile from `rbee bench scale --mem-profile`), and the leader's RSS
// grew by about 256 KB per node.
//
// Here an idle pooled connection holds nothing but the stream: the
// encoding buffer, the msgpack encoder and decoder and the read buffer
// are taken from pools for one RPC and given back after it, so what they
// cost follows the RPCs in flight, not the connections. A request goes
// out in one write, as from raft's buffer.
//
// The bytes on the wire are NetworkTransport's, so either side may run
// either code: a request is the RPC's type byte and the msgpack-encoded
// arguments (InstallSnapshot's followed by the snapshot), a response the
// error string and the msgpack-encoded response. Receiving (listening,
// the consumer channel, the heartbeat fast path) stays raft's.
//
// Safe for concurrent use; connections are pooled per target as raft
// pools them (at most maxPool idle ones).
type rpcTransport struct {
	*raft.NetworkTransport
	stream  raft.StreamLayer
	timeout time.Duration // I/O deadline of one RPC; 0: none
	scale   int64         // a snapshot's deadline is timeout per this many bytes
	maxPool int
	encode  *codec.MsgpackHandle
	decode  *codec.MsgpackHandle

	encoders sync.Pool // *rpcEncoder
	decoders sync.Pool // *rpcDecoder

	mu       sync.Mutex
	pool     map[raft.ServerAddress][]idleConn
	shutdown bool
	stop     chan struct{} // closed by Close: ends the sweeper
}

// idleConn is a pooled connection and when it was put back.
type idleConn struct {
	net.Conn
	since time.Time
}

// rpcIdleTimeout: a pooled connection unused this long is closed. A
// follower the leader talks to sends or receives an RPC at least every
// few seconds (a non-voter's heartbeat spacing is 2 s on lan), so only
// connections nobody uses any more go: those of a leadership that ended,
// of an election, to a server that left. Each also holds, on the server
// it reaches, raft's 256 KB receive buffer and a goroutine, which raft
// would keep for as long as this side pools the connection.
const rpcIdleTimeout = time.Minute

// The RPC types of NetworkTransport's wire format (its unexported
// rpcAppendEntries… constants, in that order).
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

// rpcKeepBuffer: an encoding buffer that grew past this (a large batch
// of entries) is dropped after its RPC instead of pooled, so the pool
// holds small buffers. A heartbeat or an idle append is a few hundred
// bytes; a batch of registry entries (up to raft's MaxAppendEntries) up
// to tens of KB.
const rpcKeepBuffer = 256 << 10

// rpcEncoder encodes one request into buf, which then goes to the
// connection in one write, as NetworkTransport's 256 KB buffer sends a
// request of up to that size.
type rpcEncoder struct {
	buf bytes.Buffer
	enc *codec.Encoder
}

type rpcDecoder struct {
	r   *bufio.Reader
	dec *codec.Decoder
}

// newRPCTransport makes raft's NetworkTransport from cfg, for receiving,
// and sends with cfg's Stream, Timeout, MaxPool, TimeoutScale and time
// format. A ServerAddressProvider is not supported: raft addresses here
// are peer ids, resolved by the stream layer.
func newRPCTransport(cfg *raft.NetworkTransportConfig) (*rpcTransport, error) {
	if cfg.ServerAddressProvider != nil {
		return nil, errors.New("consensus: rpcTransport does not support a ServerAddressProvider")
	}
	t := raft.NewNetworkTransportWithConfig(cfg) // fills in MaxPool, TimeoutScale defaults
	r := &rpcTransport{NetworkTransport: t, stream: cfg.Stream, timeout: cfg.Timeout, scale: int64(t.TimeoutScale),
		maxPool: cfg.MaxPool,
		// As NetworkTransport: requests in the time format it is told to
		// use (the old one by default, which every raft version reads);
		// responses with a plain handle, which reads both.
		encode: &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: !cfg.MsgpackUseNewTimeFormat}},
		decode: &codec.MsgpackHandle{},
		pool:   map[raft.ServerAddress][]idleConn{}, stop: make(chan struct{})}
	if r.maxPool <= 0 {
		r.maxPool = 3 // NetworkTransport's default
	}
	if r.scale <= 0 {
		r.scale = raft.DefaultTimeoutScale
	}
	r.encoders.New = func() any {
		e := &rpcEncoder{}
		e.enc = codec.NewEncoder(&e.buf, r.encode)
		return e
	}
	r.decoders.New = func() any {
		rd := bufio.NewReader(nil)
		return &rpcDecoder{r: rd, dec: codec.NewDecoder(rd, r.decode)}
	}
	go r.sweep(rpcIdleTimeout)
	return r, nil
}

// sweep closes connections pooled for longer than idle, every idle/2,
// until Close.
func (r *rpcTransport) sweep(idle time.Duration) {
	t := time.NewTicker(idle / 2)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.closeIdle(time.Now().Add(-idle))
		}
	}
}

// closeIdle closes the pooled connections put back before cutoff.
func (r *rpcTransport) closeIdle(cutoff time.Time) {
	var old []idleConn
	r.mu.Lock()
	for target, conns := range r.pool {
		keep := conns[:0]
		for _, c := range conns {
			if c.since.Before(cutoff) {
				old = append(old, c)
			} else {
				keep = append(keep, c)
			}
		}
		clear(conns[len(keep):])
		if len(keep) == 0 {
			delete(r.pool, target)
		} else {
			r.pool[target] = keep
		}
	}
	r.mu.Unlock()
	for _, c := range old {
		_ = c.Close()
	}
}

// AppendEntriesPipeline: no pipelines (heartbeatThrottle offers none
// either); raft then sends every append through AppendEntries.
func (r *rpcTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// AppendEntries implements raft.Transport.
func (r *rpcTransport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return r.call(target, rpcAppendEntries, args, resp)
}

// RequestVote implements raft.Transport.
func (r *rpcTransport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return r.call(target, rpcRequestVote, args, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (r *rpcTransport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return r.call(target, rpcRequestPreVote, args, resp)
}

// TimeoutNow implements raft.Transport.
func (r *rpcTransport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return r.call(target, rpcTimeoutNow, args, resp)
}

// InstallSnapshot implements raft.Transport: the request, then the
// snapshot's bytes, on a connection closed afterwards (as raft does), with
// a deadline scaled by the snapshot's size as NetworkTransport scales it.
func (r *rpcTransport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	conn, err := r.conn(target)
	if err != nil {
		return err
	}
	defer conn.Close()
	if r.timeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(max(r.timeout, r.timeout*time.Duration(args.Size/r.scale))))
	}
	if err := r.send(conn, rpcInstallSnapshot, args, data); err != nil {
		return err
	}
	_, err = r.receive(conn, resp)
	return err
}

// Close closes the pooled connections and then raft's transport (its
// listener and the connections it serves). Raft calls it on shutdown.
// Safe to call more than once.
func (r *rpcTransport) Close() error {
	r.mu.Lock()
	if !r.shutdown {
		close(r.stop)
	}
	r.shutdown = true
	r.mu.Unlock()
	r.closePooled()
	return r.NetworkTransport.Close()
}

// CloseStreams closes the pooled connections, then the streams raft's
// transport serves (NetworkTransport.CloseStreams).
func (r *rpcTransport) CloseStreams() {
	r.closePooled()
	r.NetworkTransport.CloseStreams()
}

// closePooled closes every pooled connection.
func (r *rpcTransport) closePooled() {
	r.mu.Lock()
	pool := r.pool
	r.pool = map[raft.ServerAddress][]idleConn{}
	r.mu.Unlock()
	for _, conns := range pool {
		for _, c := range conns {
			_ = c.Close()
		}
	}
}

// call makes one request/response RPC on a pooled connection.
func (r *rpcTransport) call(target raft.ServerAddress, rpcType uint8, args, resp any) error {
	conn, err := r.conn(target)
	if err != nil {
		return err
	}
	if r.timeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(r.timeout))
	}
	if err := r.send(conn, rpcType, args, nil); err != nil {
		conn.Close()
		return err
	}
	clean, err := r.receive(conn, resp)
	if clean {
		r.put(target, conn)
	} else {
		conn.Close()
	}
	return err
}

// send writes a request: the type byte and args in one write, then data
// if not nil.
func (r *rpcTransport) send(conn net.Conn, rpcType uint8, args any, data io.Reader) error {
	e := r.encoders.Get().(*rpcEncoder)
	e.buf.Reset()
	e.enc.Reset(&e.buf)
	e.buf.WriteByte(rpcType)
	if err := e.enc.Encode(args); err != nil {
		// The codec keeps a failed Encode's error and half-done state:
		// this encoder is not pooled again.
		return err
	}
	_, err := conn.Write(e.buf.Bytes())
	if e.buf.Cap() <= rpcKeepBuffer {
		r.encoders.Put(e)
	}
	if err == nil && data != nil {
		_, err = io.Copy(conn, data)
	}
	return err
}

// receive reads a response into resp. clean reports whether the
// connection may carry another RPC: the response was read whole and
// nothing followed it.
func (r *rpcTransport) receive(conn net.Conn, resp any) (clean bool, err error) {
	d := r.decoders.Get().(*rpcDecoder)
	d.r.Reset(conn)
	d.dec.Reset(d.r)
	var rpcErr string
	if err := d.dec.Decode(&rpcErr); err != nil {
		return false, err
	}
	if err := d.dec.Decode(resp); err != nil {
		return false, err
	}
	clean = d.r.Buffered() == 0
	d.r.Reset(nil)
	r.decoders.Put(d) // only a decoder that read whole messages goes back
	if rpcErr != "" {
		return clean, errors.New(rpcErr)
	}
	return clean, nil
}

// conn returns an idle pooled connection to target, or dials one.
func (r *rpcTransport) conn(target raft.ServerAddress) (net.Conn, error) {
	r.mu.Lock()
	if r.shutdown {
		r.mu.Unlock()
		return nil, raft.ErrTransportShutdown
	}
	if conns := r.pool[target]; len(conns) > 0 {
		c := conns[len(conns)-1].Conn
		conns[len(conns)-1] = idleConn{}
		if len(conns) == 1 {
			delete(r.pool, target)
		} else {
			r.pool[target] = conns[:len(conns)-1]
		}
		r.mu.Unlock()
		return c, nil
	}
	r.mu.Unlock()
	return r.stream.Dial(target, r.timeout)
}

// put pools conn for target, or closes it when the pool is full or the
// transport is shut down.
func (r *rpcTransport) put(target raft.ServerAddress, conn net.Conn) {
	r.mu.Lock()
	if !r.shutdown && len(r.pool[target]) < r.maxPool {
		r.pool[target] = append(r.pool[target], idleConn{Conn: conn, since: time.Now()})
		conn = nil
	}
	r.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

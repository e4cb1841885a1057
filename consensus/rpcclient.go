package consensus

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// The RPC types of raft's NetworkTransport wire format: a request is the
// type byte and the msgpack-encoded request; the answer is an error
// string (empty: none) and the msgpack-encoded response. They are
// unexported constants of hashicorp/raft, and part of its wire format.
const (
	rpcAppendEntries  uint8 = 0
	rpcRequestVote    uint8 = 1
	rpcTimeoutNow     uint8 = 3
	rpcRequestPreVote uint8 = 4
)

// rpcSendBuffer is the write buffer of one outgoing raft connection.
// hashicorp/raft gives each 256 KB (a constant), for as long as the
// connection stays pooled: with a connection kept per voter that was 1 MB
// of a 100-node leader's 3.9 MB live heap, for heartbeats of about 100
// bytes. 16 KB holds a heartbeat, a vote or an append of a dozen registry
// writes in one flush; a larger append (up to 64 entries) is written in
// several, which costs a few more frames on the stream, not a round trip.
const rpcSendBuffer = 16 << 10

// rpcClient sends the RPCs that go often and are small (appends and
// heartbeats, votes, pre-votes, timeout-now) in raft's NetworkTransport
// wire format, so that every server, of this version or an earlier one,
// answers them with its NetworkTransport, but with buffers sized for
// what they carry (rpcSendBuffer). It keeps at most one idle connection
// a peer: one that comes back while another is pooled is closed, as
// NetworkTransport does with MaxPool 1. Snapshots stay with
// NetworkTransport, which closes their connection after each.
//
// Every RPC gets timeout as its I/O deadline. Safe for concurrent use.
type rpcClient struct {
	dial    func(raft.ServerAddress, time.Duration) (net.Conn, error)
	timeout time.Duration
	enc     *codec.MsgpackHandle
	dec     *codec.MsgpackHandle

	mu     sync.Mutex
	idle   map[raft.ServerAddress]*rpcConn
	closed bool
}

// rpcConn is one outgoing connection with its buffered codec.
type rpcConn struct {
	target raft.ServerAddress
	conn   net.Conn
	w      *bufio.Writer
	enc    *codec.Encoder
	dec    *codec.Decoder
}

func newRPCClient(dial func(raft.ServerAddress, time.Duration) (net.Conn, error), timeout time.Duration) *rpcClient {
	return &rpcClient{
		dial:    dial,
		timeout: timeout,
		// As NetworkTransport encodes by default (MsgpackUseNewTimeFormat
		// unset): servers of earlier versions decode it, and every
		// go-msgpack v2 decoder reads both time formats.
		enc:  &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}},
		dec:  &codec.MsgpackHandle{},
		idle: map[raft.ServerAddress]*rpcConn{},
	}
}

// call sends one RPC to target and decodes its answer into resp. An
// error string in the answer is returned as an error, and the connection
// is kept; any failure to write or read closes it.
func (c *rpcClient) call(target raft.ServerAddress, rpcType uint8, args, resp any) error {
	conn, err := c.get(target)
	if err != nil {
		return err
	}
	if c.timeout > 0 {
		_ = conn.conn.SetDeadline(time.Now().Add(c.timeout))
	}
	var rpcErr string
	err = conn.w.WriteByte(rpcType)
	if err == nil {
		err = conn.enc.Encode(args)
	}
	if err == nil {
		err = conn.w.Flush()
	}
	if err == nil {
		err = conn.dec.Decode(&rpcErr)
	}
	if err == nil {
		err = conn.dec.Decode(resp)
	}
	if err != nil {
		_ = conn.conn.Close()
		return err
	}
	c.put(conn)
	if rpcErr != "" {
		return errors.New(rpcErr)
	}
	return nil
}

// get takes target's idle connection, or dials one.
func (c *rpcClient) get(target raft.ServerAddress) (*rpcConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, raft.ErrTransportShutdown
	}
	conn := c.idle[target]
	delete(c.idle, target)
	c.mu.Unlock()
	if conn != nil {
		return conn, nil
	}
	nc, err := c.dial(target, c.timeout)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(nc, rpcSendBuffer)
	return &rpcConn{target: target, conn: nc, w: w,
		enc: codec.NewEncoder(w, c.enc),
		// Answers are a few dozen bytes: bufio's default 4 KB.
		dec: codec.NewDecoder(bufio.NewReader(nc), c.dec)}, nil
}

// put keeps conn as its target's idle connection, or closes it when
// there is one already or the client is closed.
func (c *rpcClient) put(conn *rpcConn) {
	c.mu.Lock()
	keep := !c.closed && c.idle[conn.target] == nil
	if keep {
		c.idle[conn.target] = conn
	}
	c.mu.Unlock()
	if !keep {
		_ = conn.conn.Close()
	}
}

// idleConns is the number of connections kept for reuse.
func (c *rpcClient) idleConns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle)
}

// close closes the idle connections; later calls fail with
// raft.ErrTransportShutdown. Calls in flight end by their deadline or
// their answer, and their connections are then closed.
func (c *rpcClient) close() {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = map[raft.ServerAddress]*rpcConn{}
	c.mu.Unlock()
	for _, conn := range idle {
		_ = conn.conn.Close()
	}
}

// transport is raft's NetworkTransport, which serves the RPCs that reach
// this server and sends snapshots, with the RPCs this server sends made
// by an rpcClient.
type transport struct {
	*raft.NetworkTransport
	client *rpcClient
}

func newTransport(t *raft.NetworkTransport, client *rpcClient) *transport {
	return &transport{NetworkTransport: t, client: client}
}

// AppendEntries implements raft.Transport.
func (t *transport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return t.client.call(target, rpcAppendEntries, args, resp)
}

// RequestVote implements raft.Transport.
func (t *transport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.client.call(target, rpcRequestVote, args, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (t *transport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.client.call(target, rpcRequestPreVote, args, resp)
}

// TimeoutNow implements raft.Transport.
func (t *transport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.client.call(target, rpcTimeoutNow, args, resp)
}

// Close closes the client's connections and the NetworkTransport.
func (t *transport) Close() error {
	t.client.close()
	return t.NetworkTransport.Close()
}

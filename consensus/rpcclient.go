package consensus

import (
	"bufio"
	"errors"
	"io"
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
	rpcAppendEntries   uint8 = 0
	rpcRequestVote     uint8 = 1
	rpcInstallSnapshot uint8 = 2
	rpcTimeoutNow      uint8 = 3
	rpcRequestPreVote  uint8 = 4
)

// rpcSendBuffer is the write buffer of one outgoing raft connection.
// hashicorp/raft gives each 256 KB (a constant), for as long as the
// connection stays pooled: with a connection kept per voter that was 1 MB
// of a 100-node leader's 3.9 MB live heap, for heartbeats of about 100
// bytes. 16 KB holds a heartbeat, a vote or an append of a dozen registry
// writes in one flush; a larger append (up to 64 entries) is written in
// several, which costs a few more frames on the stream, not a round trip.
const rpcSendBuffer = 16 << 10

// rpcClient sends raft's RPCs to other servers in raft's NetworkTransport
// wire format, so that every server, of this version (rpcServer) or an
// earlier one (NetworkTransport), answers them, with buffers sized for
// what they carry (rpcSendBuffer). It keeps at most one idle connection
// a peer: one that comes back while another is kept is closed, as
// NetworkTransport does with MaxPool 1. A snapshot goes on a connection
// of its own, closed after it.
//
// A kept connection unused for keepIdle (raftIdleAfter) is closed: a
// peer that left, or one this server asked for a vote, does not keep its
// buffers here for ever (a follower's leader uses its connection every
// heartbeat). Every RPC gets timeout as its I/O deadline, a snapshot
// timeout per snapshotTimeoutScale bytes. Safe for concurrent use.
type rpcClient struct {
	dial     func(raft.ServerAddress, time.Duration) (net.Conn, error)
	timeout  time.Duration
	keepIdle time.Duration
	enc      *codec.MsgpackHandle
	dec      *codec.MsgpackHandle

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
	idle   *time.Timer // while kept: closes it after keepIdle
	kept   time.Time   // when it was last kept (guarded by rpcClient.mu)
}

func newRPCClient(dial func(raft.ServerAddress, time.Duration) (net.Conn, error), timeout time.Duration) *rpcClient {
	return &rpcClient{
		dial:     dial,
		timeout:  timeout,
		keepIdle: raftIdleAfter,
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
	rpcErr, err := conn.roundTrip(rpcType, args, nil, resp)
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

// snapshotTimeoutScale: a snapshot's deadline is the RPC timeout for
// every this many bytes (NetworkTransport's default TimeoutScale).
const snapshotTimeoutScale = 256 << 10

// installSnapshot sends a snapshot's request and then its data, on a
// connection of its own that is closed after it.
func (c *rpcClient) installSnapshot(target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return raft.ErrTransportShutdown
	}
	conn, err := c.open(target)
	if err != nil {
		return err
	}
	defer conn.conn.Close()
	if c.timeout > 0 {
		timeout := max(c.timeout, c.timeout*time.Duration(args.Size/snapshotTimeoutScale))
		_ = conn.conn.SetDeadline(time.Now().Add(timeout))
	}
	rpcErr, err := conn.roundTrip(rpcInstallSnapshot, args, data, resp)
	if err == nil && rpcErr != "" {
		err = errors.New(rpcErr)
	}
	return err
}

// roundTrip writes a request (its type, args, then data when not nil)
// and reads the answer: the error string raft answered with, and resp.
func (conn *rpcConn) roundTrip(rpcType uint8, args any, data io.Reader, resp any) (rpcErr string, err error) {
	err = conn.w.WriteByte(rpcType)
	if err == nil {
		err = conn.enc.Encode(args)
	}
	if err == nil && data != nil {
		_, err = io.Copy(conn.w, data)
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
	return rpcErr, err
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
	if conn != nil {
		conn.idle.Stop()
	}
	c.mu.Unlock()
	if conn != nil {
		return conn, nil
	}
	return c.open(target)
}

// open dials target.
func (c *rpcClient) open(target raft.ServerAddress) (*rpcConn, error) {
	nc, err := c.dial(target, c.timeout)
	if err != nil {
		return nil, err
	}
	w, enc, dec := newConnCodec(nc, c)
	return &rpcConn{target: target, conn: nc, w: w, enc: enc, dec: dec}, nil
}

// newConnCodec buffers nc for c's RPCs: requests through a writer of
// rpcSendBuffer, answers (a few dozen bytes) through bufio's default 4 KB.
func newConnCodec(nc net.Conn, c *rpcClient) (*bufio.Writer, *codec.Encoder, *codec.Decoder) {
	w := bufio.NewWriterSize(nc, rpcSendBuffer)
	return w, codec.NewEncoder(w, c.enc), codec.NewDecoder(bufio.NewReader(nc), c.dec)
}

// put keeps conn as its target's idle connection, or closes it when
// there is one already or the client is closed.
func (c *rpcClient) put(conn *rpcConn) {
	c.mu.Lock()
	keep := !c.closed && c.idle[conn.target] == nil
	if keep {
		c.idle[conn.target] = conn
		conn.kept = time.Now()
		if conn.idle == nil {
			conn.idle = time.AfterFunc(c.keepIdle, func() { c.dropIdle(conn) })
		} else {
			conn.idle.Reset(c.keepIdle)
		}
	}
	c.mu.Unlock()
	if !keep {
		_ = conn.conn.Close()
	}
}

// dropIdle closes conn if it is still kept and was not used for
// keepIdle (a timer that fired while get took it, running only after put
// kept it again, finds it kept lately and leaves it).
func (c *rpcClient) dropIdle(conn *rpcConn) {
	c.mu.Lock()
	kept := c.idle[conn.target] == conn && time.Since(conn.kept) >= c.keepIdle
	if kept {
		delete(c.idle, conn.target)
	}
	c.mu.Unlock()
	if kept {
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
// raft.ErrTransportShutdown. Calls in flight end by their deadline (a
// snapshot's, longer by its size) or their answer, and their connections
// are then closed. Raft closes its transport only after its own
// goroutines ended, so none is in flight then.
func (c *rpcClient) close() {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = map[raft.ServerAddress]*rpcConn{}
	c.mu.Unlock()
	for _, conn := range idle {
		conn.idle.Stop()
		_ = conn.conn.Close()
	}
}

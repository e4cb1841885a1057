package consensus

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// raftRPCTimeout is the I/O deadline of one raft RPC (rpcClient sets it
// before every request); a snapshot's is longer by its size.
const raftRPCTimeout = 10 * time.Second

// raftIdleAfter is how long an outgoing raft connection may sit unused
// before its stream is closed (see idleConn). Three RPC deadlines: a
// stream is never closed while an answer could still come on it.
const raftIdleAfter = 3 * raftRPCTimeout

// errReadIdle: raft read from a connection it had not written to since
// the stream was closed for idleness, which its RPCs never do (every read
// waits for the answer to a request on the same connection).
var errReadIdle = errors.New("consensus: read on an idle raft connection with no request sent")

// idleConn is an outgoing raft connection whose stream is closed once it
// sat unused for idle, and opened again by the next write.
//
// A kept connection (rpcClient's) lives as long as the transport, and
// the accepting side of each holds a read buffer (16 KB, rpcServer's; 256
// KB on servers of earlier versions, hashicorp/raft's NetworkTransport)
// and a goroutine until the stream ends. The connections a candidate opened for one election's votes sat
// idle for ever on every peer: 1.3 MB of the leader's 10 MB live heap at
// 100 nodes. Closing the stream ends the peer's handler and frees its
// buffer; this side's small buffers stay with the kept connection, which
// the next RPC reuses.
//
// A stream is closed only while no read or write is in progress and none
// happened for idle, which is longer than an RPC's deadline: raft reads
// only the answer to the request it just wrote on the same connection, so
// no answer is ever pending on a closed stream. Deadlines set while there
// is no stream apply to the next one. Safe for concurrent use.
type idleConn struct {
	dial func(ctx context.Context) (net.Conn, error)
	idle time.Duration

	mu     sync.Mutex
	s      net.Conn // nil: closed for idleness (or Close)
	local  net.Addr
	remote net.Addr
	last   time.Time // end of the latest read or write
	busy   int       // reads and writes in progress
	closed bool
	rd, wd time.Time // deadlines, applied to a new stream
	timer  *time.Timer
}

// newIdleConn wraps s, a stream dial opened; dial opens the next one.
func newIdleConn(s net.Conn, dial func(ctx context.Context) (net.Conn, error), idle time.Duration) *idleConn {
	c := &idleConn{dial: dial, idle: idle, s: s, local: s.LocalAddr(), remote: s.RemoteAddr(), last: time.Now()}
	c.mu.Lock() // check, when idle is tiny, waits for the timer's field
	c.timer = time.AfterFunc(idle, c.check)
	c.mu.Unlock()
	return c
}

// check closes the stream if it has been idle long enough, else looks again
// when it could be.
func (c *idleConn) check() {
	c.mu.Lock()
	if c.closed || c.s == nil {
		c.mu.Unlock()
		return
	}
	if c.busy > 0 {
		c.timer.Reset(c.idle)
		c.mu.Unlock()
		return
	}
	if wait := c.idle - time.Since(c.last); wait > 0 {
		c.timer.Reset(wait)
		c.mu.Unlock()
		return
	}
	s := c.s
	c.s = nil
	c.mu.Unlock()
	// Outside the lock: a close that waits on a stalled session must not
	// hold up raft setting a deadline on the connection.
	_ = s.Close()
}

// stream returns the current stream, opening one first if it was closed
// for idleness and open is set, and counts an operation in progress.
func (c *idleConn) stream(open bool) (net.Conn, error) {
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return nil, net.ErrClosed
		}
		if c.s != nil {
			c.busy++
			s := c.s
			c.mu.Unlock()
			return s, nil
		}
		if !open {
			c.mu.Unlock()
			return nil, errReadIdle
		}
		deadline := c.wd
		c.mu.Unlock()
		if deadline.IsZero() {
			deadline = time.Now().Add(raftRPCTimeout)
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		s, err := c.dial(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.s != nil || c.closed {
			_ = s.Close() // another write opened one first, or Close
			continue
		}
		c.s = s
		if !c.rd.IsZero() {
			_ = s.SetReadDeadline(c.rd)
		}
		if !c.wd.IsZero() {
			_ = s.SetWriteDeadline(c.wd)
		}
		c.last = time.Now()
		c.timer.Reset(c.idle)
	}
}

func (c *idleConn) done() {
	c.mu.Lock()
	c.busy--
	c.last = time.Now()
	c.mu.Unlock()
}

func (c *idleConn) Read(p []byte) (int, error) {
	s, err := c.stream(false)
	if err != nil {
		return 0, err
	}
	defer c.done()
	return s.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	s, err := c.stream(true)
	if err != nil {
		return 0, err
	}
	defer c.done()
	return s.Write(p)
}

// Close closes the stream, if one is open, and the connection for good.
func (c *idleConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.timer.Stop()
	if c.s == nil {
		return nil
	}
	err := c.s.Close()
	c.s = nil
	return err
}

func (c *idleConn) LocalAddr() net.Addr  { return c.local }
func (c *idleConn) RemoteAddr() net.Addr { return c.remote }

func (c *idleConn) SetDeadline(t time.Time) error      { return c.setDeadline(t, true, true) }
func (c *idleConn) SetReadDeadline(t time.Time) error  { return c.setDeadline(t, true, false) }
func (c *idleConn) SetWriteDeadline(t time.Time) error { return c.setDeadline(t, false, true) }

// setDeadline keeps t as the read and/or write deadline, for the stream
// open now and for the next one.
func (c *idleConn) setDeadline(t time.Time, read, write bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if read {
		c.rd = t
	}
	if write {
		c.wd = t
	}
	switch {
	case c.s == nil:
		return nil
	case read && write:
		return c.s.SetDeadline(t)
	case read:
		return c.s.SetReadDeadline(t)
	}
	return c.s.SetWriteDeadline(t)
}

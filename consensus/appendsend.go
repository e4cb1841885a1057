package consensus

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// appendSender sends AppendEntries RPCs to non-voters, in raft's
// NetworkTransport wire format, without raft's per-connection buffers.
//
// hashicorp/raft gives every outgoing connection it pools a 256 KB send
// buffer (and a 4 KB read buffer) for as long as the connection lives.
// Every rbee node is a raft server, so the leader keeps one or two
// connections to every follower: at 100 nodes those buffers were 46 MB
// of its 58 MB live heap (a heap profile from `rbee bench scale
// --mem-profile`: 185 buffers for 99 followers), and its RSS grew by
// about 0.5 MB per node.
//
// Here an idle pooled connection holds nothing but the stream: the
// encoding buffer, the msgpack encoder and decoder and the read buffer
// are taken from free lists for one RPC and given back after it, so what they
// cost follows the RPCs in flight, not the connections. A request goes
// out in one write (raft's buffer sends one of up to 256 KB in one); a
// response is read as raft reads it. The receiving side is raft's, unchanged.
//
// Only non-voters' appends (their heartbeats and replication) come here
// (heartbeatThrottle.send); voters, votes and snapshots keep raft's
// transport. A transport of this kind for every RPC (stop 24, reverted in
// 01babb4) halved the leader's RSS but, while 500 workers spawned at 100
// nodes, the leader changed 26–57 times against 13–14 with raft's
// transport. A non-voter's RPCs cannot cost the leader its leadership: it
// never votes and its answers do not count for the lease.
//
// Safe for concurrent use; connections are pooled per target as raft
// pools them (at most maxPool idle ones), and closed when idle for
// appendIdleTimeout.
type appendSender struct {
	stream  raft.StreamLayer
	timeout time.Duration // I/O deadline of one RPC; 0: none
	maxPool int
	encode  *codec.MsgpackHandle
	decode  *codec.MsgpackHandle

	// Free lists of encoders and decoders, at most appendFree each. Not
	// sync.Pools: those are emptied within two GCs, and a leader's heap
	// is small enough that it collects often, so many RPCs would build a
	// new codec.
	encoders chan *rpcEncoder
	decoders chan *rpcDecoder

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

// appendIdleTimeout: a pooled connection unused this long is closed. The
// leader sends a non-voter a heartbeat every 2 s on lan, so only
// connections nobody uses any more go: those of a leadership that ended,
// to a server that left or became a voter. Each also holds, on the
// server it reaches, raft's 256 KB receive buffer and a goroutine, which
// raft would keep for as long as this side pools the connection.
const appendIdleTimeout = time.Minute

// rpcAppendEntries is the type byte of an AppendEntries request in
// NetworkTransport's wire format (its unexported rpcAppendEntries).
const rpcAppendEntries uint8 = 0

// appendFree: encoders and decoders kept for reuse, each. More RPCs than
// this are in flight at once only in a burst (every non-voter's
// goroutine sends when an entry is stored); what they build beyond it is
// garbage after their RPC.
const appendFree = 16

// rpcKeepBuffer: an encoding buffer that grew past this (a large batch
// of entries) is dropped after its RPC instead of kept, so the free list
// holds at most appendFree × 64 KB. A heartbeat or an idle append is a
// few hundred bytes; a batch of registry entries (up to raft's
// MaxAppendEntries) up to tens of KB.
const rpcKeepBuffer = 64 << 10

// rpcEncoder encodes one request into buf, which then goes to the
// connection in one write.
type rpcEncoder struct {
	buf bytes.Buffer
	enc *codec.Encoder
}

type rpcDecoder struct {
	r   *bufio.Reader
	dec *codec.Decoder
}

// newAppendSender sends over stream with timeout as each RPC's I/O
// deadline, keeping at most maxPool idle connections per server.
// newTimeFormat is NetworkTransportConfig.MsgpackUseNewTimeFormat of the
// raft transport beside it: what raft's own client would send. Close
// ends its sweeper.
func newAppendSender(stream raft.StreamLayer, timeout time.Duration, maxPool int, newTimeFormat bool) *appendSender {
	s := &appendSender{stream: stream, timeout: timeout, maxPool: max(maxPool, 1),
		// As NetworkTransport: requests in the time format it is told to
		// use (the old one by default, which every raft version reads);
		// responses with a plain handle, which reads both.
		encode: &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: !newTimeFormat}},
		decode: &codec.MsgpackHandle{},
		pool:   map[raft.ServerAddress][]idleConn{}, stop: make(chan struct{}),
		encoders: make(chan *rpcEncoder, appendFree), decoders: make(chan *rpcDecoder, appendFree)}
	go s.sweep(appendIdleTimeout)
	return s
}

// sweep closes connections pooled for longer than idle, every idle/2,
// until Close.
func (s *appendSender) sweep(idle time.Duration) {
	t := time.NewTicker(idle / 2)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.closeIdle(time.Now().Add(-idle))
		}
	}
}

// closeIdle closes the pooled connections put back before cutoff.
func (s *appendSender) closeIdle(cutoff time.Time) {
	var old []idleConn
	s.mu.Lock()
	for target, conns := range s.pool {
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
			delete(s.pool, target)
		} else {
			s.pool[target] = keep
		}
	}
	s.mu.Unlock()
	for _, c := range old {
		_ = c.Close()
	}
}

// AppendEntries makes one AppendEntries RPC to target on a pooled
// connection, as raft.NetworkTransport.AppendEntries does.
func (s *appendSender) AppendEntries(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	conn, err := s.conn(target)
	if err != nil {
		return err
	}
	if s.timeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(s.timeout))
	}
	if err := s.send(conn, rpcAppendEntries, args); err != nil {
		_ = conn.Close()
		return err
	}
	clean, err := s.receive(conn, resp)
	if clean {
		s.put(target, conn)
	} else {
		_ = conn.Close()
	}
	return err
}

// Close closes the pooled connections; RPCs after it fail with
// raft.ErrTransportShutdown. Safe to call more than once.
func (s *appendSender) Close() {
	s.mu.Lock()
	if !s.shutdown {
		close(s.stop)
	}
	s.shutdown = true
	s.mu.Unlock()
	s.closePooled()
}

// closePooled closes every pooled connection.
func (s *appendSender) closePooled() {
	s.mu.Lock()
	pool := s.pool
	s.pool = map[raft.ServerAddress][]idleConn{}
	s.mu.Unlock()
	for _, conns := range pool {
		for _, c := range conns {
			_ = c.Close()
		}
	}
}

// send writes a request, the type byte and args, in one write.
func (s *appendSender) send(conn net.Conn, rpcType uint8, args any) error {
	var e *rpcEncoder
	select {
	case e = <-s.encoders:
	default:
		e = &rpcEncoder{}
		e.enc = codec.NewEncoder(&e.buf, s.encode)
	}
	e.buf.Reset()
	e.enc.Reset(&e.buf)
	e.buf.WriteByte(rpcType)
	if err := e.enc.Encode(args); err != nil {
		// Dropped rather than kept: a failed Encode is an encoding bug,
		// not worth reasoning about what state it leaves.
		return err
	}
	_, err := conn.Write(e.buf.Bytes())
	if e.buf.Cap() <= rpcKeepBuffer {
		select {
		case s.encoders <- e:
		default:
		}
	}
	return err
}

// receive reads a response into resp. clean reports whether the
// connection may carry another RPC: the response was read whole and
// nothing followed it.
func (s *appendSender) receive(conn net.Conn, resp any) (clean bool, err error) {
	var d *rpcDecoder
	select {
	case d = <-s.decoders:
	default:
		d = &rpcDecoder{r: bufio.NewReader(nil)}
		d.dec = codec.NewDecoder(d.r, s.decode)
	}
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
	select { // only a decoder that read whole messages goes back
	case s.decoders <- d:
	default:
	}
	if rpcErr != "" {
		return clean, errors.New(rpcErr)
	}
	return clean, nil
}

// conn returns an idle pooled connection to target, or dials one.
func (s *appendSender) conn(target raft.ServerAddress) (net.Conn, error) {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil, raft.ErrTransportShutdown
	}
	if conns := s.pool[target]; len(conns) > 0 {
		c := conns[len(conns)-1].Conn
		conns[len(conns)-1] = idleConn{}
		if len(conns) == 1 {
			delete(s.pool, target)
		} else {
			s.pool[target] = conns[:len(conns)-1]
		}
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	return s.stream.Dial(target, s.timeout)
}

// put pools conn for target, or closes it when the pool is full or the
// sender is closed.
func (s *appendSender) put(target raft.ServerAddress, conn net.Conn) {
	s.mu.Lock()
	if !s.shutdown && len(s.pool[target]) < s.maxPool {
		s.pool[target] = append(s.pool[target], idleConn{Conn: conn, since: time.Now()})
		conn = nil
	}
	s.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

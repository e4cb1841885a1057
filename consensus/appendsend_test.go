package consensus

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tcpStream is a raft.StreamLayer over TCP on loopback.
type tcpStream struct{ net.Listener }

func (s tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// tcpSender is an appendSender over TCP on loopback.
func tcpSender(t *testing.T, stream raft.StreamLayer) *appendSender {
	t.Helper()
	if stream == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = ln.Close() })
		stream = tcpStream{ln}
	}
	s := newAppendSender(stream, 5*time.Second, 3, false)
	t.Cleanup(s.Close)
	return s
}

// pooled is how many idle connections to target s keeps.
func pooled(s *appendSender, target raft.ServerAddress) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pool[target])
}

// Appends the sender makes reach raft's NetworkTransport as the same
// request (log entries and times included), and raft's answers, errors
// included, come back as they were sent, on one pooled connection.
func TestAppendSenderSpeaksRaftsWireFormat(t *testing.T) {
	server := tcpTransport(t)
	client := tcpSender(t, nil)
	target := server.LocalAddr()

	var mu sync.Mutex
	var got []*raft.AppendEntriesRequest
	consume(t, server, func(rpc raft.RPC) {
		c := rpc.Command.(*raft.AppendEntriesRequest)
		mu.Lock()
		got = append(got, c)
		mu.Unlock()
		if c.Term == 13 {
			rpc.Respond(&raft.AppendEntriesResponse{Term: 13}, io.ErrUnexpectedEOF)
			return
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: c.Term, LastLog: 42, Success: true}, nil)
	})

	at := time.Date(2026, 12, 6, 7, 0, 0, 123456789, time.UTC)
	append1 := &raft.AppendEntriesRequest{Term: 7, PrevLogEntry: 9, PrevLogTerm: 6, LeaderCommitIndex: 9,
		Entries: []*raft.Log{{Index: 10, Term: 7, Type: raft.LogCommand, Data: []byte("a registry write"), AppendedAt: at},
			{Index: 11, Term: 7, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{7}, 300_000), AppendedAt: at}}}
	var resp raft.AppendEntriesResponse
	require.NoError(t, client.AppendEntries(target, append1, &resp))
	assert.Equal(t, raft.AppendEntriesResponse{Term: 7, LastLog: 42, Success: true}, resp)

	// A heartbeat (with the leader's address, as raft sends it) takes
	// raft's fast path on the server and is answered the same way.
	var fast atomic.Int64
	server.SetHeartbeatHandler(func(rpc raft.RPC) {
		fast.Add(1)
		rpc.Respond(&raft.AppendEntriesResponse{Term: rpc.Command.(*raft.AppendEntriesRequest).Term, Success: true}, nil)
	})
	beat := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte("leader")}, Term: 8}
	require.NoError(t, client.AppendEntries(target, beat, &resp))
	assert.Equal(t, raft.AppendEntriesResponse{Term: 8, Success: true}, resp)
	assert.Equal(t, int64(1), fast.Load())
	server.SetHeartbeatHandler(nil)

	// An error the server answers with comes back as the error, and the
	// connection stays usable.
	err := client.AppendEntries(target, &raft.AppendEntriesRequest{Term: 13, PrevLogEntry: 1}, &resp)
	require.Error(t, err)
	assert.Equal(t, io.ErrUnexpectedEOF.Error(), err.Error())
	assert.Equal(t, uint64(13), resp.Term)
	assert.Equal(t, 1, pooled(client, target), "the RPCs, one after another, shared one pooled connection")

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 2, "the heartbeat went to the heartbeat handler, not the consumer")
	a := got[0]
	assert.Equal(t, append1.Term, a.Term)
	assert.Equal(t, append1.PrevLogEntry, a.PrevLogEntry)
	assert.Equal(t, append1.LeaderCommitIndex, a.LeaderCommitIndex)
	require.Len(t, a.Entries, 2)
	for i, e := range a.Entries {
		assert.Equal(t, append1.Entries[i].Index, e.Index)
		assert.Equal(t, append1.Entries[i].Type, e.Type)
		assert.Equal(t, append1.Entries[i].Data, e.Data)
		assert.True(t, at.Equal(e.AppendedAt), "AppendedAt %v", e.AppendedAt)
	}
}

// Concurrent appends to one server each get a connection; exactly
// maxPool stay pooled afterwards, and after Close none, and appends fail.
func TestAppendSenderPool(t *testing.T) {
	server := tcpTransport(t)
	client := tcpSender(t, nil)
	target := server.LocalAddr()
	const n = 6 // more than maxPool
	arrived := make(chan raft.RPC, n)
	consume(t, server, func(rpc raft.RPC) { arrived <- rpc })
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			errs <- client.AppendEntries(target, &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1}, &raft.AppendEntriesResponse{})
		})
	}
	// All n are in flight at once, each on its own connection, before any
	// is answered.
	var held []raft.RPC
	for range n {
		held = append(held, <-arrived)
	}
	for _, rpc := range held {
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, client.maxPool, pooled(client, target))

	client.Close()
	client.Close() // a second Close (raft's shutdown, then Consensus.Close)
	assert.Zero(t, pooled(client, target))
	err := client.AppendEntries(target, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
	assert.ErrorIs(t, err, raft.ErrTransportShutdown)
}

// rawServer accepts connections on loopback and runs serve on each.
func rawServer(t *testing.T, serve func(net.Conn)) raft.ServerAddress {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return raft.ServerAddress(ln.Addr().String())
}

// readAppend reads one AppendEntries request from c, byte by byte (the
// decoder reads no further than the message), and returns its bytes.
func readAppend(c net.Conn) ([]byte, error) {
	var rec bytes.Buffer
	tee := io.TeeReader(c, &rec)
	if _, err := io.ReadFull(tee, make([]byte, 1)); err != nil {
		return nil, err
	}
	var req raft.AppendEntriesRequest
	err := codec.NewDecoder(tee, &codec.MsgpackHandle{}).Decode(&req)
	return rec.Bytes(), err
}

// answer writes a successful AppendEntries response in raft's format,
// then extra.
func answer(c net.Conn, extra []byte) {
	var b bytes.Buffer
	enc := codec.NewEncoder(&b, &codec.MsgpackHandle{})
	_ = enc.Encode("")
	_ = enc.Encode(&raft.AppendEntriesResponse{Term: 1, Success: true})
	_, _ = c.Write(append(b.Bytes(), extra...))
}

// The bytes the sender sends for an append are the bytes raft's
// NetworkTransport sends for it (type byte, handle settings such as the
// time format, framing).
func TestAppendSenderSendsRaftsBytes(t *testing.T) {
	got := make(chan []byte, 2)
	target := rawServer(t, func(c net.Conn) {
		for {
			b, err := readAppend(c)
			if err != nil {
				return
			}
			got <- b
			answer(c, nil)
		}
	})
	at := time.Date(2026, 12, 6, 7, 0, 0, 123456789, time.UTC)
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte("leader")},
		Term: 7, PrevLogEntry: 9, PrevLogTerm: 6, LeaderCommitIndex: 9,
		Entries: []*raft.Log{{Index: 10, Term: 7, Type: raft.LogCommand, Data: []byte("a registry write"), Extensions: []byte("x"), AppendedAt: at}}}

	theirs := tcpTransport(t) // raft's transport, used here as a client
	require.NoError(t, theirs.AppendEntries("s", target, req, &raft.AppendEntriesResponse{}))
	ours := tcpSender(t, nil)
	require.NoError(t, ours.AppendEntries(target, req, &raft.AppendEntriesResponse{}))
	want, have := <-got, <-got
	assert.Equal(t, rpcAppendEntries, have[0])
	assert.Equal(t, want, have)
}

// A response that is not one makes the RPC fail; a response followed by
// bytes nobody asked for is taken, but its connection is closed instead
// of pooled (the next RPC would read those bytes as its answer).
func TestAppendSenderBadResponse(t *testing.T) {
	garbage := rawServer(t, func(c net.Conn) {
		if _, err := readAppend(c); err == nil {
			_, _ = c.Write([]byte{0xc1, 0xc1, 0xc1}) // 0xc1: never used in msgpack
		}
	})
	trailing := rawServer(t, func(c net.Conn) {
		if _, err := readAppend(c); err == nil {
			answer(c, []byte{0x00})
		}
		_, _ = io.Copy(io.Discard, c) // hold the connection open
	})
	client := tcpSender(t, nil)
	err := client.AppendEntries(garbage, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
	require.Error(t, err)
	assert.Zero(t, pooled(client, garbage))

	var resp raft.AppendEntriesResponse
	require.NoError(t, client.AppendEntries(trailing, &raft.AppendEntriesRequest{Term: 1}, &resp))
	assert.True(t, resp.Success)
	assert.Zero(t, pooled(client, trailing))
}

// failingStream hands out connections whose writes fail while fail is set.
type failingStream struct {
	tcpStream
	fail atomic.Bool
}

type failingConn struct {
	net.Conn
	s *failingStream
}

func (c failingConn) Write(b []byte) (int, error) {
	if c.s.fail.Load() {
		return 0, errors.New("write failed")
	}
	return c.Conn.Write(b)
}

func (s *failingStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.tcpStream.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	return failingConn{c, s}, nil
}

// An append whose request cannot be written fails and its connection is
// not pooled; its encoder goes back to the free list and the appends
// after it, which reuse it, work. An encoder whose buffer grew past
// rpcKeepBuffer is not kept.
func TestAppendSenderWriteFailure(t *testing.T) {
	server := tcpTransport(t)
	consume(t, server, func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	s := &failingStream{tcpStream: tcpStream{ln}}
	client := tcpSender(t, s)
	target := server.LocalAddr()
	big := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, Entries: []*raft.Log{{Index: 1, Data: bytes.Repeat([]byte{1}, 2*rpcKeepBuffer)}}}

	small := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, Entries: []*raft.Log{{Index: 1, Data: []byte("x")}}}

	s.fail.Store(true)
	require.Error(t, client.AppendEntries(target, small, &raft.AppendEntriesResponse{}))
	assert.Zero(t, pooled(client, target))
	require.Len(t, client.encoders, 1, "the failed write's encoder is kept")
	kept := <-client.encoders
	client.encoders <- kept
	s.fail.Store(false)
	for i, req := range []*raft.AppendEntriesRequest{small, small, big, small} {
		var resp raft.AppendEntriesResponse
		require.NoError(t, client.AppendEntries(target, req, &resp))
		assert.True(t, resp.Success)
		require.Len(t, client.decoders, 1)
		switch i {
		case 0, 1:
			require.Len(t, client.encoders, 1)
			e := <-client.encoders
			require.Same(t, kept, e, "the kept encoder is reused")
			client.encoders <- e
		case 2:
			require.Empty(t, client.encoders, "an encoder whose buffer grew past rpcKeepBuffer is dropped")
		case 3:
			require.Len(t, client.encoders, 1, "a new one is built and kept")
		}
	}
}

// Pooled connections idle since before the cutoff are closed; newer ones
// stay, and an append after the sweep dials again.
func TestAppendSenderClosesIdle(t *testing.T) {
	server := tcpTransport(t)
	client := tcpSender(t, nil)
	target := server.LocalAddr()
	consume(t, server, func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
	call := func() {
		t.Helper()
		require.NoError(t, client.AppendEntries(target, &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1}, &raft.AppendEntriesResponse{}))
	}
	call()
	require.Equal(t, 1, pooled(client, target))
	client.mu.Lock()
	conn := client.pool[target][0].Conn
	client.mu.Unlock()

	client.closeIdle(time.Now().Add(-time.Hour))
	assert.Equal(t, 1, pooled(client, target), "a connection used since the cutoff stays")
	client.closeIdle(time.Now().Add(time.Second))
	assert.Equal(t, 0, pooled(client, target))
	_, err := conn.Write([]byte{0})
	assert.ErrorIs(t, err, net.ErrClosed)

	call()
	assert.Equal(t, 1, pooled(client, target))
}

// Through the throttle, a non-voter's appends (heartbeats and
// replication) go by the sender and a voter's by raft's transport: the
// sender pools a connection to the non-voter and none to the voter. The
// throttle's Close closes the sender too.
func TestThrottleSendsNonvotersAppendsLight(t *testing.T) {
	voter, nonvoter := tcpTransport(t), tcpTransport(t)
	var beats, appends atomic.Int64
	answerer(t, voter, &beats, &appends)
	answerer(t, nonvoter, &beats, &appends)
	done := make(chan struct{})
	defer close(done)
	h := newHeartbeatThrottle(tcpTransport(t), time.Second, done)
	h.light = tcpSender(t, nil)
	h.setServers([]raft.Server{
		{ID: "v", Address: voter.LocalAddr(), Suffrage: raft.Voter},
		{ID: "n", Address: nonvoter.LocalAddr(), Suffrage: raft.Nonvoter},
	}, 0)
	for _, s := range []struct {
		id   raft.ServerID
		addr raft.ServerAddress
	}{{"v", voter.LocalAddr()}, {"n", nonvoter.LocalAddr()}} {
		var resp raft.AppendEntriesResponse
		require.NoError(t, h.AppendEntries(s.id, s.addr, &raft.AppendEntriesRequest{Term: 1}, &resp)) // a heartbeat
		require.True(t, resp.Success)
		require.NoError(t, h.AppendEntries(s.id, s.addr, &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, PrevLogTerm: 1, LeaderCommitIndex: 1,
			Entries: []*raft.Log{{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("x")}}}, &resp))
		require.True(t, resp.Success)
	}
	assert.Equal(t, int64(2), beats.Load())
	assert.Equal(t, int64(2), appends.Load())
	assert.Equal(t, 1, pooled(h.light, nonvoter.LocalAddr()))
	assert.Zero(t, pooled(h.light, voter.LocalAddr()))

	require.NoError(t, h.Close())
	err := h.light.AppendEntries(nonvoter.LocalAddr(), &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
	assert.ErrorIs(t, err, raft.ErrTransportShutdown)
}

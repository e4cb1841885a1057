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

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// raftServer is hashicorp/raft's own TCP transport on loopback, as a
// peer running raft's NetworkTransport would be.
func raftServer(t *testing.T) *raft.NetworkTransport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 5*time.Second, io.Discard)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// Every RPC rpcTransport sends reaches raft's NetworkTransport as the
// same request (log entries, times, snapshot bytes included), and raft's
// answers, errors included, come back as they were sent: the wire format
// is NetworkTransport's.
func TestRPCTransportSpeaksRaftsWireFormat(t *testing.T) {
	server := raftServer(t)
	client := tcpTransport(t)
	target := server.LocalAddr()
	snapshot := bytes.Repeat([]byte("snapshot"), 100_000) // 800 KB: more than the send buffer

	var mu sync.Mutex
	var got []any
	var gotSnapshot []byte
	consume(t, server, func(rpc raft.RPC) {
		mu.Lock()
		got = append(got, rpc.Command)
		mu.Unlock()
		switch c := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			if c.Term == 13 {
				rpc.Respond(&raft.AppendEntriesResponse{Term: 13}, io.ErrUnexpectedEOF)
				return
			}
			rpc.Respond(&raft.AppendEntriesResponse{Term: c.Term, LastLog: 42, Success: true}, nil)
		case *raft.RequestVoteRequest:
			rpc.Respond(&raft.RequestVoteResponse{Term: c.Term, Granted: true}, nil)
		case *raft.RequestPreVoteRequest:
			rpc.Respond(&raft.RequestPreVoteResponse{Term: c.Term, Granted: true}, nil)
		case *raft.TimeoutNowRequest:
			rpc.Respond(&raft.TimeoutNowResponse{}, nil)
		case *raft.InstallSnapshotRequest:
			b, err := io.ReadAll(io.LimitReader(rpc.Reader, c.Size))
			mu.Lock()
			gotSnapshot = b
			mu.Unlock()
			rpc.Respond(&raft.InstallSnapshotResponse{Term: c.Term, Success: err == nil}, err)
		}
	})

	at := time.Date(2026, 12, 6, 7, 0, 0, 123456789, time.UTC)
	append1 := &raft.AppendEntriesRequest{Term: 7, PrevLogEntry: 9, PrevLogTerm: 6, LeaderCommitIndex: 9,
		Entries: []*raft.Log{{Index: 10, Term: 7, Type: raft.LogCommand, Data: []byte("a registry write"), AppendedAt: at},
			{Index: 11, Term: 7, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{7}, 100_000), AppendedAt: at}}}
	var aresp raft.AppendEntriesResponse
	require.NoError(t, client.AppendEntries("s", target, append1, &aresp))
	assert.Equal(t, raft.AppendEntriesResponse{Term: 7, LastLog: 42, Success: true}, aresp)

	var vresp raft.RequestVoteResponse
	require.NoError(t, client.RequestVote("s", target, &raft.RequestVoteRequest{Term: 8, LastLogIndex: 11, LastLogTerm: 7}, &vresp))
	assert.True(t, vresp.Granted)
	var presp raft.RequestPreVoteResponse
	require.NoError(t, client.RequestPreVote("s", target, &raft.RequestPreVoteRequest{Term: 9, LastLogIndex: 11}, &presp))
	assert.True(t, presp.Granted)
	require.NoError(t, client.TimeoutNow("s", target, &raft.TimeoutNowRequest{}, &raft.TimeoutNowResponse{}))

	// An error the server answers with comes back as the error, and the
	// connection stays usable.
	err := client.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 13}, &aresp)
	require.Error(t, err)
	assert.Equal(t, io.ErrUnexpectedEOF.Error(), err.Error())
	assert.Equal(t, uint64(13), aresp.Term)

	// The request/response RPCs, one after another, shared one pooled
	// connection.
	assert.Equal(t, 1, pooled(client, target))

	var sresp raft.InstallSnapshotResponse
	require.NoError(t, client.InstallSnapshot("s", target, &raft.InstallSnapshotRequest{Term: 9, LastLogIndex: 11, Size: int64(len(snapshot))}, &sresp, bytes.NewReader(snapshot)))
	assert.True(t, sresp.Success)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 6)
	a := got[0].(*raft.AppendEntriesRequest)
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
	assert.Equal(t, uint64(8), got[1].(*raft.RequestVoteRequest).Term)
	assert.Equal(t, uint64(9), got[2].(*raft.RequestPreVoteRequest).Term)
	assert.IsType(t, &raft.TimeoutNowRequest{}, got[3])
	assert.Equal(t, snapshot, gotSnapshot)

	// The snapshot's connection was closed after it, as raft does.
	assert.Zero(t, pooled(client, target))
}

// Concurrent RPCs to one server each get a connection; exactly maxPool
// stay pooled afterwards, and after Close none, and RPCs fail.
func TestRPCTransportPool(t *testing.T) {
	server := raftServer(t)
	client := tcpTransport(t)
	target := server.LocalAddr()
	const n = 6 // more than maxPool
	arrived := make(chan raft.RPC, n)
	consume(t, server, func(rpc raft.RPC) { arrived <- rpc })
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			errs <- client.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
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

	require.NoError(t, client.Close())
	require.NoError(t, client.Close(), "a second Close (raft's shutdown, then ours)")
	assert.Zero(t, pooled(client, target))
	err := client.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
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

// The bytes rpcTransport sends for a request are the bytes raft's
// NetworkTransport sends for it (type byte, handle settings such as the
// time format, framing).
func TestRPCTransportSendsRaftsBytes(t *testing.T) {
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

	theirs := raftServer(t) // raft's transport, used here as a client
	require.NoError(t, theirs.AppendEntries("s", target, req, &raft.AppendEntriesResponse{}))
	ours := tcpTransport(t)
	require.NoError(t, ours.AppendEntries("s", target, req, &raft.AppendEntriesResponse{}))
	want, have := <-got, <-got
	assert.Equal(t, rpcAppendEntries, have[0])
	assert.Equal(t, want, have)
}

// A response that is not one makes the RPC fail; a response followed by
// bytes nobody asked for is taken, but its connection is closed instead
// of pooled (the next RPC would read those bytes as its answer).
func TestRPCTransportBadResponse(t *testing.T) {
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
	client := tcpTransport(t)
	err := client.AppendEntries("s", garbage, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
	require.Error(t, err)
	assert.Zero(t, pooled(client, garbage))

	var resp raft.AppendEntriesResponse
	require.NoError(t, client.AppendEntries("s", trailing, &raft.AppendEntriesRequest{Term: 1}, &resp))
	assert.True(t, resp.Success)
	require.Eventually(t, func() bool { return pooled(client, trailing) == 0 }, 5*time.Second, 10*time.Millisecond)
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

// An RPC whose request cannot be written fails, its connection is not
// pooled, and the RPCs after it (which may borrow the same encoder) work.
func TestRPCTransportWriteFailure(t *testing.T) {
	server := raftServer(t)
	consume(t, server, func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &failingStream{tcpStream: tcpStream{ln}}
	client, err := newRPCTransport(&raft.NetworkTransportConfig{Stream: s, MaxPool: 3, Timeout: 5 * time.Second,
		Logger: hclog.NewNullLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	target := server.LocalAddr()
	big := &raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 1, Data: bytes.Repeat([]byte{1}, 2*rpcKeepBuffer)}}}

	s.fail.Store(true)
	require.Error(t, client.AppendEntries("s", target, big, &raft.AppendEntriesResponse{}))
	assert.Zero(t, pooled(client, target))
	s.fail.Store(false)
	for range 3 {
		var resp raft.AppendEntriesResponse
		require.NoError(t, client.AppendEntries("s", target, big, &resp))
		assert.True(t, resp.Success)
	}
}

// Pooled connections idle since before the cutoff are closed; newer ones
// stay, and an RPC after the sweep dials again.
func TestRPCTransportClosesIdle(t *testing.T) {
	server := raftServer(t)
	client := tcpTransport(t)
	target := server.LocalAddr()
	consume(t, server, func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
	call := func() {
		t.Helper()
		require.NoError(t, client.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{}))
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

// pooled is how many idle connections to target r keeps.
func pooled(r *rpcTransport, target raft.ServerAddress) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pool[target])
}

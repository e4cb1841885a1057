package consensus

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

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

// Concurrent RPCs to one server each get a connection; at most maxPool
// stay pooled afterwards, and after Close none, and RPCs fail.
func TestRPCTransportPool(t *testing.T) {
	server := raftServer(t)
	client := tcpTransport(t)
	target := server.LocalAddr()
	release := make(chan struct{})
	consume(t, server, func(rpc raft.RPC) {
		go func() {
			<-release
			rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
		}()
	})
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- client.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
		}()
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.LessOrEqual(t, pooled(client, target), client.maxPool)
	assert.Positive(t, pooled(client, target))

	require.NoError(t, client.Close())
	client.mu.Lock()
	assert.Empty(t, client.pool)
	client.mu.Unlock()
	err := client.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
	assert.ErrorIs(t, err, raft.ErrTransportShutdown)
}

// A server that answers with bytes that are not a response makes the RPC
// fail, and its connection is closed instead of pooled.
func TestRPCTransportBadResponse(t *testing.T) {
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
				buf := make([]byte, 1)
				if _, err := c.Read(buf); err == nil {
					_, _ = c.Write([]byte{0xc1, 0xc1, 0xc1}) // 0xc1: never used in msgpack
				}
			}()
		}
	}()
	client := tcpTransport(t)
	target := raft.ServerAddress(ln.Addr().String())
	err = client.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{})
	require.Error(t, err)
	assert.Zero(t, pooled(client, target))
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

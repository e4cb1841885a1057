package consensus

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A server of an earlier version sends with raft's own NetworkTransport:
// the server answers its appends, votes and snapshots, heartbeats go to
// raft's heartbeat handler and not to the consumer, and an error raft
// answers with reaches the sender as that error.
func TestRPCServerAnswersNetworkTransport(t *testing.T) {
	ours := ourTCP(t)
	theirs, _ := peerServer(t) // its client side sends
	var beats, consumed atomic.Int64
	ours.SetHeartbeatHandler(func(rpc raft.RPC) {
		beats.Add(1)
		rpc.Respond(&raft.AppendEntriesResponse{Term: rpc.Command.(*raft.AppendEntriesRequest).Term, Success: true}, nil)
	})
	snap := snapshotData(3 << 20)
	consume(t, ours, func(rpc raft.RPC) {
		consumed.Add(1)
		switch cmd := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			if cmd.Term == 9 {
				rpc.Respond(nil, errors.New("not now"))
				return
			}
			var n uint64
			for _, e := range cmd.Entries {
				n += uint64(len(e.Data))
			}
			rpc.Respond(&raft.AppendEntriesResponse{Term: cmd.Term, LastLog: n, Success: true}, nil)
		case *raft.RequestVoteRequest:
			rpc.Respond(&raft.RequestVoteResponse{Term: cmd.Term, Granted: cmd.LastLogIndex == 12}, nil)
		case *raft.InstallSnapshotRequest:
			data, err := io.ReadAll(rpc.Reader)
			rpc.Respond(&raft.InstallSnapshotResponse{Term: cmd.Term, Success: err == nil && bytes.Equal(data, snap)}, nil)
		default:
			rpc.Respond(nil, errors.New("unexpected"))
		}
	})
	target := ours.LocalAddr()

	var beat raft.AppendEntriesResponse
	require.NoError(t, theirs.AppendEntries("s", target, &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("leader")}, Term: 2}, &beat))
	assert.True(t, beat.Success)
	assert.Equal(t, int64(1), beats.Load())
	assert.Zero(t, consumed.Load(), "a heartbeat takes the fast path")

	var app raft.AppendEntriesResponse
	big := make([]byte, 5*rpcRecvBuffer) // read through the buffer in pieces
	require.NoError(t, theirs.AppendEntries("s", target, &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("leader")}, Term: 2,
		PrevLogEntry: 1, PrevLogTerm: 1, LeaderCommitIndex: 1, Entries: []*raft.Log{{Index: 2, Term: 2, Data: big}, {Index: 3, Term: 2, Data: []byte("x")}}}, &app))
	assert.Equal(t, uint64(len(big)+1), app.LastLog)

	var vote raft.RequestVoteResponse
	require.NoError(t, theirs.RequestVote("s", target, &raft.RequestVoteRequest{Term: 3, LastLogIndex: 12}, &vote))
	assert.True(t, vote.Granted)

	var snapResp raft.InstallSnapshotResponse
	require.NoError(t, theirs.InstallSnapshot("s", target, &raft.InstallSnapshotRequest{Term: 4, Size: int64(len(snap))}, &snapResp, bytes.NewReader(snap)))
	assert.True(t, snapResp.Success, "the snapshot's data arrived whole")

	require.EqualError(t, theirs.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 9}, &app), "not now")
	require.NoError(t, theirs.RequestVote("s", target, &raft.RequestVoteRequest{Term: 3, LastLogIndex: 12}, &vote), "the connection goes on after an error")
}

// Our client and server: every RPC, a snapshot included.
func TestTransportToItself(t *testing.T) {
	a, b := ourTCP(t), ourTCP(t)
	snap := snapshotData(1 << 20)
	consume(t, b, func(rpc raft.RPC) {
		switch cmd := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			rpc.Respond(&raft.AppendEntriesResponse{Term: cmd.Term, LastLog: cmd.Entries[0].Index, Success: true}, nil)
		case *raft.RequestPreVoteRequest:
			rpc.Respond(&raft.RequestPreVoteResponse{Term: cmd.Term, Granted: true}, nil)
		case *raft.TimeoutNowRequest:
			rpc.Respond(&raft.TimeoutNowResponse{RPCHeader: raft.RPCHeader{ID: []byte("b-id")}}, nil)
		case *raft.InstallSnapshotRequest:
			data, err := io.ReadAll(rpc.Reader)
			rpc.Respond(&raft.InstallSnapshotResponse{Success: err == nil && bytes.Equal(data, snap)}, nil)
		default:
			rpc.Respond(nil, errors.New("unexpected"))
		}
	})
	var app raft.AppendEntriesResponse
	require.NoError(t, a.AppendEntries("b", b.LocalAddr(), &raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 4, Data: []byte("x")}}}, &app))
	assert.Equal(t, uint64(4), app.LastLog)
	var pre raft.RequestPreVoteResponse
	require.NoError(t, a.RequestPreVote("b", b.LocalAddr(), &raft.RequestPreVoteRequest{Term: 2}, &pre))
	assert.True(t, pre.Granted)
	var tn raft.TimeoutNowResponse
	require.NoError(t, a.TimeoutNow("b", b.LocalAddr(), &raft.TimeoutNowRequest{}, &tn))
	assert.Equal(t, []byte("b-id"), tn.ID)
	kept := a.client.idle[b.LocalAddr()]
	require.NotNil(t, kept)
	var sr raft.InstallSnapshotResponse
	require.NoError(t, a.InstallSnapshot("b", b.LocalAddr(), &raft.InstallSnapshotRequest{Size: int64(len(snap))}, &sr, bytes.NewReader(snap)))
	assert.True(t, sr.Success)
	assert.Same(t, kept, a.client.idle[b.LocalAddr()], "the snapshot went on a connection of its own, not kept")
}

// Close ends every connection the server accepted and its goroutines,
// an RPC waiting for raft's answer included; the sender gets an error.
func TestRPCServerCloseEndsConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	stream := &tcpStream{Listener: ln}
	ours := newTransport(stream, 5*time.Second, slog.New(slog.DiscardHandler))
	c := testClient(t)
	var resp raft.AppendEntriesResponse
	go func() { <-ours.Consumer() }() // taken, never answered
	errc := make(chan error, 1)
	go func() { errc <- c.call(ours.LocalAddr(), rpcAppendEntries, &raft.AppendEntriesRequest{Term: 1}, &resp) }()
	require.Eventually(t, func() bool { return stream.open.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- ours.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	assert.Zero(t, stream.open.Load())
	select {
	case err := <-errc:
		require.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the RPC in flight did not end")
	}
	_, err = net.DialTimeout("tcp", string(ours.LocalAddr()), time.Second)
	require.Error(t, err, "no longer listening")
}

// An accepted connection costs its buffers for as long as the sender
// keeps it: well under the 256 KB read buffer hashicorp/raft's
// NetworkTransport gives each.
func TestRPCServerConnIsSmall(t *testing.T) {
	ours := ourTCP(t)
	ours.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
	cl := newRPCClient(nil, time.Second)
	// The least of a few connections: goroutines left by earlier tests
	// may allocate meanwhile, which only adds.
	allocated := uint64(math.MaxUint64)
	for range 3 {
		conn, err := net.Dial("tcp", string(ours.LocalAddr()))
		require.NoError(t, err)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		// A heartbeat on a connection of the test's: the server's
		// allocations for the connection are most of what follows.
		c := &rpcConn{conn: conn}
		c.w, c.enc, c.dec = newConnCodec(conn, cl)
		var resp raft.AppendEntriesResponse
		_, err = c.roundTrip(rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("l")}, Term: 1}, nil, &resp)
		require.NoError(t, err)
		runtime.ReadMemStats(&after)
		require.True(t, resp.Success)
		_ = conn.Close()
		allocated = min(allocated, after.TotalAlloc-before.TotalAlloc)
	}
	assert.Less(t, allocated, uint64(128<<10), "a connection and a heartbeat allocated %d bytes on both sides", allocated)
	assert.GreaterOrEqual(t, allocated, uint64(rpcRecvBuffer))
}

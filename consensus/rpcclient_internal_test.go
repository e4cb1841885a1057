package consensus

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tcpStream is a raft.StreamLayer over TCP on loopback that counts the
// connections it accepted and has not seen closed.
type tcpStream struct {
	net.Listener
	open atomic.Int64
}

func (s *tcpStream) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s.open.Add(1)
	return &closeCounted{Conn: c, open: &s.open}, nil
}

func (s *tcpStream) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(a), timeout)
}

type closeCounted struct {
	net.Conn
	once sync.Once
	open *atomic.Int64
}

func (c *closeCounted) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

// peerServer is a server of raft's own NetworkTransport, as every
// version of rbee runs to answer RPCs.
func peerServer(t *testing.T) (*raft.NetworkTransport, *tcpStream) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &tcpStream{Listener: ln}
	tr := raft.NewNetworkTransport(s, 3, 5*time.Second, io.Discard)
	t.Cleanup(func() { _ = tr.Close() })
	return tr, s
}

// snapshotData is n bytes that differ along their length.
func snapshotData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 / 251)
	}
	return b
}

func testClient(t *testing.T) *rpcClient {
	t.Helper()
	c := newRPCClient((&tcpStream{}).Dial, 5*time.Second)
	t.Cleanup(c.close)
	return c
}

// The client speaks NetworkTransport's wire format: every RPC it makes
// reaches raft's own transport whole (entries, their data and times,
// every field of a vote), the answer comes back decoded, and an error
// the server answers with comes back as an error on a connection that
// stays usable.
func TestRPCClientSpeaksNetworkTransport(t *testing.T) {
	server, _ := peerServer(t)
	tr := ourTCP(t)
	at := time.Date(2026, 12, 7, 22, 30, 0, 123456789, time.UTC)
	var got []any
	var mu sync.Mutex
	consume(t, server, func(rpc raft.RPC) {
		mu.Lock()
		got = append(got, rpc.Command)
		mu.Unlock()
		switch cmd := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			if cmd.Term == 9 {
				rpc.Respond(nil, errors.New("not now"))
				return
			}
			rpc.Respond(&raft.AppendEntriesResponse{Term: cmd.Term, LastLog: cmd.Entries[len(cmd.Entries)-1].Index, Success: true}, nil)
		case *raft.RequestVoteRequest:
			rpc.Respond(&raft.RequestVoteResponse{Term: cmd.Term, Granted: true}, nil)
		case *raft.RequestPreVoteRequest:
			rpc.Respond(&raft.RequestPreVoteResponse{Term: cmd.Term, Granted: true}, nil)
		case *raft.TimeoutNowRequest:
			rpc.Respond(&raft.TimeoutNowResponse{}, nil)
		case *raft.InstallSnapshotRequest:
			data, err := io.ReadAll(rpc.Reader)
			mu.Lock()
			got = append(got, data)
			mu.Unlock()
			rpc.Respond(&raft.InstallSnapshotResponse{Term: cmd.Term, Success: err == nil && int64(len(data)) == cmd.Size}, nil)
		default:
			rpc.Respond(nil, errors.New("unexpected"))
		}
	})
	target := server.LocalAddr()

	app := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("a"), Addr: []byte("a-addr")},
		Term: 3, PrevLogEntry: 10, PrevLogTerm: 2, LeaderCommitIndex: 10,
		Entries: []*raft.Log{
			{Index: 11, Term: 3, Type: raft.LogCommand, Data: []byte{1, 2, 3}, AppendedAt: at},
			{Index: 12, Term: 3, Type: raft.LogCommand, Data: make([]byte, 3*rpcSendBuffer), AppendedAt: at}, // several flushes
		}}
	var appResp raft.AppendEntriesResponse
	require.NoError(t, tr.AppendEntries("s", target, app, &appResp))
	assert.Equal(t, raft.AppendEntriesResponse{Term: 3, LastLog: 12, Success: true}, appResp)

	var voteResp raft.RequestVoteResponse
	vote := &raft.RequestVoteRequest{Term: 4, LastLogIndex: 12, LastLogTerm: 3, LeadershipTransfer: true}
	require.NoError(t, tr.RequestVote("s", target, vote, &voteResp))
	assert.True(t, voteResp.Granted)
	var preResp raft.RequestPreVoteResponse
	require.NoError(t, tr.RequestPreVote("s", target, &raft.RequestPreVoteRequest{Term: 5, LastLogIndex: 12, LastLogTerm: 3}, &preResp))
	assert.Equal(t, uint64(5), preResp.Term)
	require.NoError(t, tr.TimeoutNow("s", target, &raft.TimeoutNowRequest{}, &raft.TimeoutNowResponse{}))

	snap := snapshotData(1 << 20)
	var snapResp raft.InstallSnapshotResponse
	require.NoError(t, tr.InstallSnapshot("s", target, &raft.InstallSnapshotRequest{Term: 6, LastLogIndex: 12, LastLogTerm: 3, Size: int64(len(snap))},
		&snapResp, bytes.NewReader(snap)))
	assert.True(t, snapResp.Success)

	err := tr.AppendEntries("s", target, &raft.AppendEntriesRequest{Term: 9}, &appResp)
	require.EqualError(t, err, "not now")
	assert.Equal(t, 1, tr.client.idleConns(), "an answered error keeps the connection")
	require.NoError(t, tr.AppendEntries("s", target, app, &appResp))

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 8)
	assert.Equal(t, snap, got[5], "the snapshot's data")
	a := got[0].(*raft.AppendEntriesRequest)
	assert.Equal(t, app.Term, a.Term)
	assert.Equal(t, app.PrevLogEntry, a.PrevLogEntry)
	assert.Equal(t, app.LeaderCommitIndex, a.LeaderCommitIndex)
	assert.Equal(t, app.ID, a.ID)
	require.Len(t, a.Entries, 2)
	for i, e := range a.Entries {
		assert.Equal(t, app.Entries[i].Index, e.Index)
		assert.Equal(t, app.Entries[i].Data, e.Data)
		assert.True(t, at.Equal(e.AppendedAt), "appended at %v", e.AppendedAt)
	}
	v := got[1].(*raft.RequestVoteRequest)
	assert.Equal(t, vote.Term, v.Term)
	assert.Equal(t, vote.LastLogIndex, v.LastLogIndex)
	assert.True(t, v.LeadershipTransfer)
	assert.IsType(t, &raft.RequestPreVoteRequest{}, got[2])
	assert.IsType(t, &raft.TimeoutNowRequest{}, got[3])
}

// At most one connection a peer stays open: two RPCs in flight at once
// take two, and the one that comes back second is closed; close closes
// the one kept, and later RPCs fail with raft.ErrTransportShutdown.
func TestRPCClientKeepsOneConnPerPeer(t *testing.T) {
	server, stream := peerServer(t)
	first := make(chan raft.RPC, 1)
	var n atomic.Int64
	consume(t, server, func(rpc raft.RPC) {
		if n.Add(1) == 1 {
			first <- rpc // answered once the second is
			return
		}
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
		held := <-first
		held.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	})
	c := testClient(t)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp raft.AppendEntriesResponse
			assert.NoError(t, c.call(server.LocalAddr(), rpcAppendEntries, &raft.AppendEntriesRequest{Term: 1}, &resp))
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, c.idleConns())
	require.Eventually(t, func() bool { return stream.open.Load() == 1 }, 5*time.Second, 10*time.Millisecond,
		"connections open at the server: %d", stream.open.Load())

	c.close()
	require.Eventually(t, func() bool { return stream.open.Load() == 0 }, 5*time.Second, 10*time.Millisecond)
	var resp raft.AppendEntriesResponse
	require.ErrorIs(t, c.call(server.LocalAddr(), rpcAppendEntries, &raft.AppendEntriesRequest{}, &resp), raft.ErrTransportShutdown)
}

// A connection that fails mid-RPC is closed, not kept; the next RPC dials
// a new one.
func TestRPCClientDropsFailedConn(t *testing.T) {
	server, stream := peerServer(t)
	var n atomic.Int64
	consume(t, server, func(rpc raft.RPC) {
		if n.Add(1) == 1 {
			return // never answered (the server's handler for it stays): the client's deadline ends it
		}
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	})
	c := newRPCClient((&tcpStream{}).Dial, 300*time.Millisecond)
	t.Cleanup(c.close)
	var resp raft.AppendEntriesResponse
	err := c.call(server.LocalAddr(), rpcAppendEntries, &raft.AppendEntriesRequest{}, &resp)
	require.ErrorContains(t, err, "i/o timeout")
	c.timeout = 5 * time.Second // the next dial and answer, on a loaded machine
	assert.Zero(t, c.idleConns())
	require.NoError(t, c.call(server.LocalAddr(), rpcAppendEntries, &raft.AppendEntriesRequest{}, &resp))
	assert.True(t, resp.Success)
	assert.Equal(t, 1, c.idleConns())
	assert.Equal(t, int64(2), stream.open.Load(), "a second connection was dialed")
}

// A kept connection costs its buffers for as long as it is kept: well
// under the 256 KB send buffer hashicorp/raft gives each of its own.
func TestRPCClientConnIsSmall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() { // accept and hold, allocating nothing per connection
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range held {
					_ = c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	target := raft.ServerAddress(ln.Addr().String())
	// The least of a few connections: goroutines left by earlier tests
	// may allocate meanwhile, which only adds.
	allocated := uint64(math.MaxUint64)
	for range 3 {
		c := testClient(t)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		conn, err := c.get(target)
		require.NoError(t, err)
		runtime.ReadMemStats(&after)
		c.put(conn)
		allocated = min(allocated, after.TotalAlloc-before.TotalAlloc)
	}
	assert.Less(t, allocated, uint64(64<<10), "a connection allocated %d bytes", allocated)
	assert.GreaterOrEqual(t, allocated, uint64(rpcSendBuffer))
}

// A kept connection unused for keepIdle is closed (a peer that left, or
// one asked for a vote once); one in use stays.
func TestRPCClientDropsIdleConn(t *testing.T) {
	server, stream := peerServer(t)
	consume(t, server, func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
	c := testClient(t)
	c.keepIdle = 200 * time.Millisecond
	var resp raft.AppendEntriesResponse
	for range 5 { // in use: kept across calls
		require.NoError(t, c.call(server.LocalAddr(), rpcAppendEntries, &raft.AppendEntriesRequest{}, &resp))
		time.Sleep(c.keepIdle / 4)
	}
	assert.Equal(t, int64(1), stream.open.Load(), "one connection for every call")
	require.Eventually(t, func() bool { return c.idleConns() == 0 && stream.open.Load() == 0 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, c.call(server.LocalAddr(), rpcAppendEntries, &raft.AppendEntriesRequest{}, &resp), "a new one after")
}

// The bytes of a request are NetworkTransport's own: what raft's client
// writes for an append, a vote and a snapshot's header, this client
// writes too (time formats included).
func TestRPCClientWritesNetworkTransportBytes(t *testing.T) {
	capture := func(send func(target raft.ServerAddress)) []byte {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		got := make(chan []byte, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				got <- nil
				return
			}
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			b, _ := io.ReadAll(conn) // until the sender gives up waiting
			got <- b
		}()
		send(raft.ServerAddress(ln.Addr().String()))
		return <-got
	}
	at := time.Date(2026, 12, 7, 23, 45, 0, 987654321, time.FixedZone("x", 3600))
	app := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("id"), Addr: []byte("addr")},
		Term: 7, PrevLogEntry: 3, PrevLogTerm: 6, LeaderCommitIndex: 3,
		Entries: []*raft.Log{{Index: 4, Term: 7, Type: raft.LogCommand, Data: []byte("cmd"), Extensions: []byte("ext"), AppendedAt: at}}}
	vote := &raft.RequestVoteRequest{Term: 8, LastLogIndex: 4, LastLogTerm: 7, LeadershipTransfer: true}
	theirs := raft.NewNetworkTransport(&tcpStream{Listener: mustListen(t)}, 1, 200*time.Millisecond, io.Discard)
	defer theirs.Close()
	ours := newRPCClient((&tcpStream{}).Dial, 200*time.Millisecond)
	defer ours.close()
	for name, pair := range map[string][2]func(raft.ServerAddress){
		"append": {
			func(a raft.ServerAddress) { _ = theirs.AppendEntries("s", a, app, &raft.AppendEntriesResponse{}) },
			func(a raft.ServerAddress) { _ = ours.call(a, rpcAppendEntries, app, &raft.AppendEntriesResponse{}) },
		},
		"vote": {
			func(a raft.ServerAddress) { _ = theirs.RequestVote("s", a, vote, &raft.RequestVoteResponse{}) },
			func(a raft.ServerAddress) { _ = ours.call(a, rpcRequestVote, vote, &raft.RequestVoteResponse{}) },
		},
	} {
		want, got := capture(pair[0]), capture(pair[1])
		require.NotEmpty(t, want, name)
		assert.Equal(t, want, got, name)
	}
}

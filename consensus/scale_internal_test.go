package consensus

import (
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// answerer answers every RPC that reaches t and counts the heartbeats.
func answerer(t *testing.T, tr *raft.NetworkTransport, heartbeats *atomic.Int64) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case rpc := <-tr.Consumer():
				if a, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && isHeartbeat(a) {
					heartbeats.Add(1)
				}
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			}
		}
	}()
}

func tcpTransport(t *testing.T) *raft.NetworkTransport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 5*time.Second, io.Discard)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// A leader's heartbeats to a non-voter are spaced to HeartbeatTimeout/2;
// those to voters, and appends that carry a commit index, are not held.
// Without the throttle 8 heartbeats in a row take a few milliseconds.
func TestNonvoterHeartbeatsSpacedOut(t *testing.T) {
	const ht = 400 * time.Millisecond
	leader := tcpTransport(t)
	voter, nonvoter := tcpTransport(t), tcpTransport(t)
	var voterBeats, nonvoterBeats atomic.Int64
	answerer(t, voter, &voterBeats)
	answerer(t, nonvoter, &nonvoterBeats)
	done := make(chan struct{})
	defer close(done)
	h := newHeartbeatThrottle(leader, ht, done)
	h.setServers([]raft.Server{
		{ID: "v", Address: voter.LocalAddr(), Suffrage: raft.Voter},
		{ID: "n", Address: nonvoter.LocalAddr(), Suffrage: raft.Nonvoter},
	})
	beat := func(id raft.ServerID, addr raft.ServerAddress, commit uint64) {
		var resp raft.AppendEntriesResponse
		req := &raft.AppendEntriesRequest{Term: 1, LeaderCommitIndex: commit}
		require.NoError(t, h.AppendEntries(id, addr, req, &resp))
		require.True(t, resp.Success)
	}
	const n = 8
	start := time.Now()
	for range n {
		beat("n", nonvoter.LocalAddr(), 0)
	}
	spaced := time.Since(start)
	require.GreaterOrEqual(t, spaced, (n-1)*ht/nonvoterHeartbeatShare, "heartbeats to a non-voter are spaced")
	require.EqualValues(t, n, nonvoterBeats.Load(), "every heartbeat is sent, later")

	start = time.Now()
	for i := range n {
		beat("v", voter.LocalAddr(), 0)
		beat("n", nonvoter.LocalAddr(), uint64(7+i)) // a newer commit index each time
	}
	require.Less(t, time.Since(start), spaced, "voters' heartbeats and commit appends are not held")
	require.EqualValues(t, n, voterBeats.Load())

	// Idle appends to a non-voter: one with a newer commit index goes at
	// once, repeats of an acknowledged one are spaced; nobody gets a pipeline.
	start = time.Now()
	beat("n", nonvoter.LocalAddr(), 100)
	require.Less(t, time.Since(start), spaced)
	start = time.Now()
	for range n - 1 {
		beat("n", nonvoter.LocalAddr(), 100)
	}
	require.GreaterOrEqual(t, time.Since(start), (n-2)*ht/nonvoterHeartbeatShare, "repeated commit index held")
	_, err := h.AppendEntriesPipeline("v", voter.LocalAddr())
	require.ErrorIs(t, err, raft.ErrPipelineReplicationNotSupported)

	// Promoted to voter: no longer held.
	h.setServers([]raft.Server{{ID: "n", Address: nonvoter.LocalAddr(), Suffrage: raft.Voter}})
	start = time.Now()
	for range n {
		beat("n", nonvoter.LocalAddr(), 0)
	}
	require.Less(t, time.Since(start), spaced)
}

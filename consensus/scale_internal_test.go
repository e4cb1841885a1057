package consensus

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// raftConsumer is the transports' side raft reads RPCs from.
type raftConsumer interface{ Consumer() <-chan raft.RPC }

// consume hands every RPC that reaches tr to handle until the test ends.
func consume(t *testing.T, tr raftConsumer, handle func(raft.RPC)) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case rpc := <-tr.Consumer():
				handle(rpc)
			}
		}
	}()
}

// answerer answers every RPC that reaches t and counts the heartbeats and
// (when appends is not nil) the other appends.
func answerer(t *testing.T, tr raftConsumer, heartbeats, appends *atomic.Int64) {
	t.Helper()
	consume(t, tr, func(rpc raft.RPC) {
		if a, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
			if isHeartbeat(a) {
				heartbeats.Add(1)
			} else if appends != nil {
				appends.Add(1)
			}
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
}

func tcpTransport(t *testing.T) *raft.NetworkTransport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 5*time.Second, io.Discard)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// ourTCP is this package's transport over TCP on loopback, as a node
// runs it over libp2p.
func ourTCP(t *testing.T) *transport {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	out := newTransport(&tcpStream{Listener: ln}, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = out.Close() })
	return out
}

// A leader's heartbeats to a non-voter are spaced to
// nonvoterHeartbeatEvery, to a voter never held; idle appends
// that tell a follower nothing new are answered without an RPC (a
// voter's only while real contact is fresh); appends that carry a newer
// commit index go at once. Without the throttle 8 heartbeats in a row
// take a few milliseconds and every append is an RPC.
func TestNonvoterHeartbeatsSpacedOut(t *testing.T) {
	const ht = 100 * time.Millisecond
	every := nonvoterHeartbeatEvery(ht)
	voter, nonvoter := tcpTransport(t), tcpTransport(t)
	var voterBeats, voterAppends, nonvoterBeats, nonvoterAppends atomic.Int64
	answerer(t, voter, &voterBeats, &voterAppends)
	answerer(t, nonvoter, &nonvoterBeats, &nonvoterAppends)
	done := make(chan struct{})
	defer close(done)
	h := newHeartbeatThrottle(ourTCP(t), ht, done)
	h.setServers([]raft.Server{
		{ID: "v", Address: voter.LocalAddr(), Suffrage: raft.Voter},
		{ID: "n", Address: nonvoter.LocalAddr(), Suffrage: raft.Nonvoter},
	}, 0)
	send := func(id raft.ServerID, addr raft.ServerAddress, req *raft.AppendEntriesRequest) {
		var resp raft.AppendEntriesResponse
		require.NoError(t, h.AppendEntries(id, addr, req, &resp))
		require.True(t, resp.Success)
		require.Equal(t, req.Term, resp.Term)
	}
	beat := func(id raft.ServerID, addr raft.ServerAddress) { send(id, addr, &raft.AppendEntriesRequest{Term: 1}) }
	idle := func(id raft.ServerID, addr raft.ServerAddress, commit uint64) {
		send(id, addr, &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: commit})
	}
	const n = 4
	start := time.Now()
	for range n {
		beat("n", nonvoter.LocalAddr())
	}
	spaced := time.Since(start)
	require.GreaterOrEqual(t, spaced, (n-1)*every, "heartbeats to a non-voter are spaced")
	require.EqualValues(t, n, nonvoterBeats.Load(), "every heartbeat is sent, later")

	// Voters, on a throttle with a longer timeout so that the windows
	// below hold on a loaded machine: heartbeats never held, idle appends
	// answered only while an RPC to the voter succeeded within voterFresh
	// (the answer counts for the lease).
	const voterHT = time.Second
	fresh := voterFresh(voterHT)
	hv := newHeartbeatThrottle(ourTCP(t), voterHT, done)
	hv.setServers([]raft.Server{{ID: "v", Address: voter.LocalAddr(), Suffrage: raft.Voter}}, 0)
	vsend := func(req *raft.AppendEntriesRequest) {
		var resp raft.AppendEntriesResponse
		require.NoError(t, hv.AppendEntries("v", voter.LocalAddr(), req, &resp))
		require.True(t, resp.Success)
	}
	start = time.Now()
	for range n {
		vsend(&raft.AppendEntriesRequest{Term: 1})
	}
	require.Less(t, time.Since(start), spaced, "voters' heartbeats are not held")
	require.NotContains(t, hv.lastBeat, raft.ServerID("v"), "a voter's heartbeats never go through the spacing")
	require.EqualValues(t, n, voterBeats.Load())
	hv.entriesStored(9)
	vidle := func() {
		vsend(&raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 7})
	}
	vidle() // a newer commit index: sent
	require.EqualValues(t, 1, voterAppends.Load())
	vidle()
	require.EqualValues(t, 1, voterAppends.Load(), "a repeat while contact is fresh is answered")
	require.EqualValues(t, 1, hv.answered.Load())
	time.Sleep(fresh + fresh/5)
	vidle()
	require.EqualValues(t, 2, voterAppends.Load(), "once contact is older than voterFresh, the append really goes")
	// A reply for another term is no contact.
	var resp raft.AppendEntriesResponse
	require.NoError(t, hv.AppendEntries("v", voter.LocalAddr(), &raft.AppendEntriesRequest{Term: 2}, &resp))
	require.EqualValues(t, 1, resp.Term)
	hv.mu.Lock()
	hv.lastOK["v"] = time.Now().Add(-time.Hour)
	hv.mu.Unlock()
	require.NoError(t, hv.AppendEntries("v", voter.LocalAddr(), &raft.AppendEntriesRequest{Term: 2}, &resp))
	hv.mu.Lock()
	require.Greater(t, time.Since(hv.lastOK["v"]), time.Minute, "an answer from another term does not refresh the contact")
	hv.mu.Unlock()

	// Idle appends to a non-voter: each newer commit index is sent at
	// once; repeats of an acknowledged one are answered here, at once
	// while the leader has stored entries past the append (index 5)...
	h.entriesStored(9)
	start = time.Now()
	for i := range n {
		idle("n", nonvoter.LocalAddr(), uint64(7+i))
	}
	require.EqualValues(t, n, nonvoterAppends.Load(), "a newer commit index is always sent")
	for range 20 {
		idle("n", nonvoter.LocalAddr(), uint64(7+n-1))
	}
	// Held, each would take every/2: the bound is what holding costs, not
	// how fast the machine is.
	require.Less(t, time.Since(start), 20*every/2, "idle appends are not held while newer entries exist")
	require.EqualValues(t, n, nonvoterAppends.Load(), "repeats of an acknowledged commit index are answered without an RPC")
	require.EqualValues(t, 20, h.answered.Load())
	// ...and held, when there is nothing newer, until an entry is stored.
	var held sync.WaitGroup
	held.Add(1)
	go func() {
		defer held.Done()
		// Nothing past index 9 is stored.
		send("n", nonvoter.LocalAddr(), &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 9, PrevLogTerm: 1, LeaderCommitIndex: uint64(7 + n - 1)})
	}()
	time.Sleep(every / 10)
	require.EqualValues(t, 20, h.answered.Load(), "held")
	h.entriesStored(10)
	held.Wait()
	require.EqualValues(t, 21, h.answered.Load())
	// An append with entries always goes.
	send("n", nonvoter.LocalAddr(), &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 11,
		Entries: []*raft.Log{{Index: 6, Term: 1, Type: raft.LogCommand}}})
	require.EqualValues(t, n+1, nonvoterAppends.Load())
	_, err := h.AppendEntriesPipeline("v", voter.LocalAddr())
	require.ErrorIs(t, err, raft.ErrPipelineReplicationNotSupported)

	// A failed RPC forgets the acknowledged commit index: the next idle
	// append is sent.
	require.Error(t, h.AppendEntries("n", "127.0.0.1:1", &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 12}, &resp))
	idle("n", nonvoter.LocalAddr(), 11)
	require.EqualValues(t, n+2, nonvoterAppends.Load())

	// Promoted to voter: its heartbeats are no longer held, and an idle
	// append is sent once the contact is stale.
	h.setServers([]raft.Server{{ID: "n", Address: nonvoter.LocalAddr(), Suffrage: raft.Voter}}, 0)
	start = time.Now()
	for range n {
		beat("n", nonvoter.LocalAddr())
	}
	require.Less(t, time.Since(start), spaced)
	require.EqualValues(t, 2*n, nonvoterBeats.Load())
	sent := nonvoterAppends.Load()
	time.Sleep(2 * voterFresh(ht))
	idle("n", nonvoter.LocalAddr(), 11)
	require.EqualValues(t, sent+1, nonvoterAppends.Load(), "stale contact: sent")
}

// commitIndex is a stand-in for raft's commit index and term.
type commitIndex struct{ index, term atomic.Uint64 }

func (c *commitIndex) CommitIndex() uint64 { return c.index.Load() }
func (c *commitIndex) CurrentTerm() uint64 { return c.term.Load() }

// An append with entries to a non-voter waits until they are committed
// and then carries the commit index that covers them (up to its last
// entry, and only while this server is still in the append's term); one
// to a voter and one whose entries are already committed go at once; one
// whose commit does not come goes after commitHoldMax; a promotion while
// one waits releases it. A configuration stored through storeNotifier is
// what the throttle goes by, and an older one handed to it later is
// ignored, unless the log lost the newer one's entry or a new leader
// resets it.
func TestNonvoterEntriesWaitForCommit(t *testing.T) {
	voter, nonvoter := tcpTransport(t), tcpTransport(t)
	type got struct {
		commit uint64
		at     time.Time
	}
	seen := make(chan got, 16)
	for _, tr := range []*raft.NetworkTransport{voter, nonvoter} {
		go func() {
			for rpc := range tr.Consumer() {
				if a, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && len(a.Entries) > 0 {
					seen <- got{a.LeaderCommitIndex, time.Now()}
				}
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			}
		}()
	}
	done := make(chan struct{})
	defer close(done)
	h := newHeartbeatThrottle(ourTCP(t), 100*time.Millisecond, done)
	// Long enough that nothing below is released by the bound on a loaded
	// machine, except where the test shortens it.
	const long = 20 * time.Second
	h.holdMax = long
	var ci commitIndex
	ci.index.Store(4)
	ci.term.Store(1)
	h.commits.setSource(&ci)
	servers := []raft.Server{
		{ID: "v", Address: voter.LocalAddr(), Suffrage: raft.Voter},
		{ID: "n", Address: nonvoter.LocalAddr(), Suffrage: raft.Nonvoter},
	}
	store := storeNotifier{LogStore: raft.NewInmemStore(), h: h}
	config := func(index uint64, servers []raft.Server) *raft.Log {
		return &raft.Log{Index: index, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(raft.Configuration{Servers: servers})}
	}
	require.NoError(t, store.StoreLogs([]*raft.Log{config(1, servers)}))
	require.True(t, h.nonvoter("n"), "the stored configuration is the throttle's")
	require.False(t, h.nonvoter("v"))

	entries := func(from, to uint64) *raft.AppendEntriesRequest {
		req := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: from - 1, PrevLogTerm: 1, LeaderCommitIndex: ci.index.Load()}
		for i := from; i <= to; i++ {
			req.Entries = append(req.Entries, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand})
		}
		return req
	}
	send := func(id raft.ServerID, addr raft.ServerAddress, req *raft.AppendEntriesRequest) chan error {
		errc := make(chan error, 1)
		go func() {
			var resp raft.AppendEntriesResponse
			errc <- h.AppendEntries(id, addr, req, &resp)
		}()
		return errc
	}
	arrival := func(why string) got {
		t.Helper()
		select {
		case g := <-seen:
			return g
		case <-time.After(long / 2):
			t.Fatal(why)
		}
		return got{}
	}
	notYet := func(why string) {
		t.Helper()
		select {
		case g := <-seen:
			t.Fatalf("%s (commit index %d)", why, g.commit)
		case <-time.After(50 * time.Millisecond):
		}
	}
	quick := func(id raft.ServerID, addr raft.ServerAddress, req *raft.AppendEntriesRequest, why string) got {
		t.Helper()
		require.NoError(t, <-send(id, addr, req))
		return arrival(why)
	}

	quick("v", voter.LocalAddr(), entries(5, 6), "a voter's entries go at once")
	// The non-voter's copy of 5–6 waits for their commit, all of it.
	errc := send("n", nonvoter.LocalAddr(), entries(5, 6))
	notYet("uncommitted entries reached the non-voter")
	ci.index.Store(5)
	notYet("entries reached the non-voter before the last was committed")
	ci.index.Store(9) // past the append's last entry
	require.NoError(t, <-errc)
	require.EqualValues(t, 6, arrival("released by the commit").commit, "the append carries the commit, up to its last entry")

	g := quick("n", nonvoter.LocalAddr(), entries(6, 9), "committed entries go at once")
	require.EqualValues(t, 9, g.commit)

	// A change of term while held: released, but the commit index of the
	// new term does not speak for these entries.
	errc = send("n", nonvoter.LocalAddr(), entries(10, 10))
	notYet("uncommitted entries reached the non-voter")
	ci.term.Store(2)
	ci.index.Store(12)
	require.NoError(t, <-errc)
	require.EqualValues(t, 9, arrival("released after the change of term").commit, "the append keeps its own commit index")
	ci.term.Store(1)

	// No commit: the entries go after commitHoldMax.
	h.holdMax = 200 * time.Millisecond
	start := time.Now()
	g = quick("n", nonvoter.LocalAddr(), entries(13, 13), "held past the bound")
	require.GreaterOrEqual(t, g.at.Sub(start), h.holdMax)
	require.EqualValues(t, 12, g.commit)
	h.holdMax = long

	// Promoted while one waits: released at once, the promotion's own
	// append and what follows are not held, even after an older
	// configuration comes in (a reconcile pass or watchSuffrage that read
	// it before).
	errc = send("n", nonvoter.LocalAddr(), entries(14, 14))
	notYet("uncommitted entries reached the non-voter")
	old := slices.Clone(servers)
	servers[1].Suffrage = raft.Voter
	require.NoError(t, store.StoreLog(config(15, servers)))
	require.NoError(t, <-errc)
	arrival("released by the promotion")
	require.False(t, h.nonvoter("n"))
	req := entries(14, 14)
	req.Entries = append(req.Entries, config(15, servers))
	quick("n", nonvoter.LocalAddr(), req, "the promotion goes at once")
	h.setServers(old, 1)
	require.False(t, h.nonvoter("n"), "an older configuration is ignored")
	quick("n", nonvoter.LocalAddr(), entries(16, 16), "a promoted server's entries go at once")

	// Compaction below the configuration's entry keeps it; a cut that
	// drops it (a follower's log overwritten by a new leader) lets an
	// older one in again.
	require.NoError(t, store.DeleteRange(1, 5))
	h.setServers(old, 1)
	require.False(t, h.nonvoter("n"), "the configuration at 15 stays")
	require.NoError(t, store.DeleteRange(15, 15))
	h.setServers(old, 1)
	require.True(t, h.nonvoter("n"), "once its entry is gone, the committed configuration is taken")

	// A new leader's configuration is taken whatever the index of the
	// one held.
	h.setServers(servers, 50)
	require.False(t, h.nonvoter("n"))
	seq := h.configSeq()
	h.resetServers(configFuture{raft.Configuration{Servers: old}, 20}, seq)
	require.True(t, h.nonvoter("n"), "a new leader's own configuration wins")
	// One stored between the leader's read and the reset is kept.
	seq = h.configSeq()
	require.NoError(t, store.StoreLog(config(60, servers)))
	h.resetServers(configFuture{raft.Configuration{Servers: old}, 20}, seq)
	require.False(t, h.nonvoter("n"), "a configuration stored meanwhile is not overwritten")
}

// configFuture is a raft.ConfigurationFuture that holds its answer.
type configFuture struct {
	cf    raft.Configuration
	index uint64
}

func (f configFuture) Error() error                      { return nil }
func (f configFuture) Index() uint64                     { return f.index }
func (f configFuture) Configuration() raft.Configuration { return f.cf }

// batched waits end on the same multiples of q, never before d.
func TestBatchedWaitsEndTogether(t *testing.T) {
	const q = 250 * time.Millisecond
	for _, d := range []time.Duration{0, time.Nanosecond, 100 * time.Millisecond, q, q + 1, 2 * time.Second, 2*time.Second + 7*time.Millisecond} {
		start := time.Now()
		w := batched(d, q)
		end := start.Add(w)
		require.GreaterOrEqual(t, w, d, "d=%v", d)
		require.Less(t, w, d+q+time.Millisecond, "d=%v", d)
		// The end is a multiple of q (up to the time batched itself took).
		off := end.Sub(end.Truncate(q))
		require.True(t, off < time.Millisecond || q-off < time.Millisecond, "d=%v ends %v past a multiple of q", d, off)
	}
}

// RPCs to a follower, voter or not, go one at a time, so raft's heartbeat
// and replication goroutines for it share one kept connection (each
// holds its buffers while kept). The follower here holds every RPC
// for a while and counts how many it holds at once.
func TestRPCsOneAtATime(t *testing.T) {
	follower := tcpTransport(t)
	var inFlight, most atomic.Int64
	consume(t, follower, func(rpc raft.RPC) {
		go func() {
			n := inFlight.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(20 * time.Millisecond)
			inFlight.Add(-1)
			rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
		}()
	})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	var commit atomic.Uint64
	run := func(suffrage raft.ServerSuffrage) int64 {
		most.Store(0)
		h := newHeartbeatThrottle(ourTCP(t), time.Second, done)
		h.setServers([]raft.Server{{ID: "f", Address: follower.LocalAddr(), Suffrage: suffrage}}, 0)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 3 {
					// A newer commit index each time: an RPC, not
					// answered here (unless a later one was
					// acknowledged first: then only held a while).
					req := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: commit.Add(1)}
					var resp raft.AppendEntriesResponse
					assert.NoError(t, h.AppendEntries("f", follower.LocalAddr(), req, &resp))
					assert.True(t, resp.Success)
				}
			})
		}
		wg.Wait()
		return most.Load()
	}
	require.EqualValues(t, 1, run(raft.Nonvoter), "one RPC at a time to a non-voter")
	require.EqualValues(t, 1, run(raft.Voter), "one RPC at a time to a voter")
}

// A heartbeat to a follower waits behind an append in flight only
// laneWait (non-voter) or voterLaneWait (voter), then goes on a
// connection of its own: an append that takes long must not also hold
// back the heartbeats that keep the follower from dropping the leader,
// and a voter's answers the leader's lease.
func TestHeartbeatLeavesSlowLane(t *testing.T) {
	for _, suffrage := range []raft.ServerSuffrage{raft.Nonvoter, raft.Voter} {
		t.Run(suffrage.String(), func(t *testing.T) { heartbeatLeavesSlowLane(t, suffrage) })
	}
}

func heartbeatLeavesSlowLane(t *testing.T, suffrage raft.ServerSuffrage) {
	// Long enough that the two waits tell apart: a voter's 200 ms, a
	// non-voter's 2.5 s (longer than a voter's lease would be).
	const ht = 2 * time.Second
	wantWait := voterLaneWait(ht)
	if suffrage == raft.Nonvoter {
		wantWait = laneWait(nonvoterHeartbeatEvery(ht))
	}
	follower := tcpTransport(t)
	// The follower holds the append until the test lets it go, so the
	// heartbeat can only come back past the append if it left the lane.
	appendIn, letGo := make(chan struct{}, 1), make(chan struct{})
	consume(t, follower, func(rpc raft.RPC) {
		a := rpc.Command.(*raft.AppendEntriesRequest)
		if isHeartbeat(a) {
			rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			return
		}
		go func() {
			appendIn <- struct{}{}
			<-letGo
			rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
		}()
	})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	h := newHeartbeatThrottle(ourTCP(t), ht, done)
	h.setServers([]raft.Server{{ID: "f", Address: follower.LocalAddr(), Suffrage: suffrage}}, 0)
	appended := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		appended <- h.AppendEntries("f", follower.LocalAddr(), &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 3}, &resp)
	}()
	<-appendIn
	beat := make(chan error, 1)
	start := time.Now()
	go func() {
		var resp raft.AppendEntriesResponse
		err := h.AppendEntries("f", follower.LocalAddr(), &raft.AppendEntriesRequest{Term: 1}, &resp)
		if err == nil && !resp.Success {
			err = errors.New("heartbeat refused")
		}
		beat <- err
	}()
	select {
	case err := <-beat:
		require.NoError(t, err)
	case <-time.After(wantWait + 5*time.Second):
		t.Fatal("the heartbeat waited for the append in flight")
	}
	took := time.Since(start)
	require.GreaterOrEqual(t, took, wantWait, "the heartbeat first waited for its lane")
	if suffrage == raft.Voter {
		require.Less(t, took, laneWait(nonvoterHeartbeatEvery(ht)), "a voter's heartbeat waits less than a non-voter's")
	}
	require.EqualValues(t, 1, h.pastLane.Load())
	close(letGo)
	require.NoError(t, <-appended)
}

// An append waiting for its lane gives up when the server closes: it does
// not hold raft's shutdown behind an RPC in flight to a dead follower.
func TestLaneWaitEndsWithShutdown(t *testing.T) {
	follower := tcpTransport(t)
	done := make(chan struct{})
	h := newHeartbeatThrottle(ourTCP(t), time.Second, done)
	h.setServers([]raft.Server{{ID: "f", Address: follower.LocalAddr(), Suffrage: raft.Voter}}, 0)
	release, err := h.enterLane("f", false, 0) // an append in flight
	require.NoError(t, err)
	require.NotNil(t, release)
	waited := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		waited <- h.AppendEntries("f", follower.LocalAddr(), &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 3}, &resp)
	}()
	select {
	case err := <-waited:
		t.Fatalf("the append went past the lane: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(done)
	select {
	case err := <-waited:
		require.ErrorIs(t, err, raft.ErrTransportShutdown)
	case <-time.After(5 * time.Second):
		t.Fatal("the append still waits for its lane after shutdown")
	}
	release()
}

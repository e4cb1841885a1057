package consensus

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Raft's leader heartbeats every follower every HeartbeatTimeout/10 (40–80
// ms on lan) and, separately, sends each one an AppendEntries every
// CommitTimeout so it learns the commit index. Every rbee node is a raft
// server (voters up to MaxVoters, the rest non-voters), so the leader's
// idle work grows with the node count: measured with `rbee bench scale`
// on a 2-core machine, the leader used 3.7% of a core idle at 3 nodes and
// 22% at 30, and each RPC also costs its follower. Only voters' heartbeats
// matter for leadership (the lease and VerifyLeader count voters; a
// non-voter never campaigns), so a non-voter only needs to hear from the
// leader often enough not to forget it: more than once per
// HeartbeatTimeout.

// nonvoterHeartbeatShare: a non-voter gets a heartbeat at most every
// HeartbeatTimeout × this share (200 ms on lan), against raft's 40–80 ms:
// with raft's random wait added it still hears from the leader at least
// every 280 ms, well within the 400 ms after which it would forget the
// leader, and the commit-index appends arrive in between.
const nonvoterHeartbeatShare = 2

// heartbeatThrottle is raft's network transport with the idle traffic to
// non-voters spaced out. Raft's heartbeat goroutine for a follower calls
// AppendEntries and waits for it, and so does its replication goroutine
// when the transport offers no pipeline; so holding a non-voter's
// heartbeat, or an empty append that tells it no newer commit index,
// back until its interval has passed slows that goroutine and nothing
// else. No follower gets a pipeline (see AppendEntriesPipeline). Votes,
// appends with entries or a newer commit index, snapshots and everything
// to voters pass unchanged. Measured with `rbee bench scale` at 30 nodes,
// the CPU profile of the leader was raft's replication to followers
// (commit-index appends, 15% of its samples; heartbeats 5% once spaced).
type heartbeatThrottle struct {
	*raft.NetworkTransport
	every time.Duration
	done  <-chan struct{}

	nonvoters atomic.Pointer[map[raft.ServerID]bool]
	mu        sync.Mutex
	last      map[throttleKey]time.Time // when each kind was last sent to each non-voter
	commit    map[raft.ServerID]uint64  // the newest commit index a non-voter acknowledged
}

// throttleKey: heartbeats and idle appends run on separate goroutines of
// raft and are spaced separately.
type throttleKey struct {
	id        raft.ServerID
	heartbeat bool
}

func newHeartbeatThrottle(t *raft.NetworkTransport, heartbeatTimeout time.Duration, done <-chan struct{}) *heartbeatThrottle {
	h := &heartbeatThrottle{NetworkTransport: t, every: heartbeatTimeout / nonvoterHeartbeatShare, done: done,
		last: map[throttleKey]time.Time{}, commit: map[raft.ServerID]uint64{}}
	h.setServers(nil)
	return h
}

// setServers records which servers are non-voters (the leader calls it
// with the configuration around every reconcile pass).
func (h *heartbeatThrottle) setServers(servers []raft.Server) {
	m := make(map[raft.ServerID]bool, len(servers))
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			m[s.ID] = true
		}
	}
	h.nonvoters.Store(&m)
	h.mu.Lock()
	for k := range h.last {
		if !m[k.id] {
			delete(h.last, k)
		}
	}
	for id := range h.commit {
		if !m[id] {
			delete(h.commit, id)
		}
	}
	h.mu.Unlock()
}

func (h *heartbeatThrottle) nonvoter(id raft.ServerID) bool { return (*h.nonvoters.Load())[id] }

// isHeartbeat: raft's heartbeat is an AppendEntries with only the header,
// term and leader set.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return len(a.Entries) == 0 && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 && a.LeaderCommitIndex == 0
}

// AppendEntriesPipeline offers no pipeline: raft then replicates with
// plain RPCs, whose idle appends come through AppendEntries. A pipeline
// is set up as soon as a follower answers, before this server (a new
// leader, or one adding the follower) may know it is a non-voter, and
// lives as long as the leadership; registry writes are few and batched
// (up to 64 entries an RPC), so pipelining them gains nothing measurable.
func (h *heartbeatThrottle) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// AppendEntries holds a heartbeat to a non-voter, or an empty append that
// carries no newer commit index than it acknowledged, back until every
// has passed since the last of its kind, then sends it.
func (h *heartbeatThrottle) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if len(args.Entries) > 0 || !h.nonvoter(id) {
		return h.NetworkTransport.AppendEntries(id, target, args, resp)
	}
	key := throttleKey{id: id, heartbeat: isHeartbeat(args)}
	h.mu.Lock()
	hold := key.heartbeat || args.LeaderCommitIndex <= h.commit[id]
	wait := time.Until(h.last[key].Add(h.every))
	h.mu.Unlock()
	if hold && wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-h.done:
			t.Stop()
		}
	}
	h.mu.Lock()
	h.last[key] = time.Now()
	h.mu.Unlock()
	err := h.NetworkTransport.AppendEntries(id, target, args, resp)
	if err == nil && resp.Success && !key.heartbeat {
		h.mu.Lock()
		h.commit[id] = max(h.commit[id], args.LeaderCommitIndex)
		h.mu.Unlock()
	}
	return err
}

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

// heartbeatThrottle is raft's network transport with the heartbeats to
// non-voters spaced out: raft's heartbeat goroutine for a follower calls
// AppendEntries and waits for it, so holding a non-voter's heartbeat back
// until its interval has passed slows that goroutine, and nothing else.
// Everything else (votes, appends with entries or a commit index,
// snapshots, the pipeline) passes unchanged.
type heartbeatThrottle struct {
	*raft.NetworkTransport
	every time.Duration
	done  <-chan struct{}

	nonvoters atomic.Pointer[map[raft.ServerID]bool]
	mu        sync.Mutex
	last      map[raft.ServerID]time.Time
}

func newHeartbeatThrottle(t *raft.NetworkTransport, heartbeatTimeout time.Duration, done <-chan struct{}) *heartbeatThrottle {
	h := &heartbeatThrottle{NetworkTransport: t, every: heartbeatTimeout / nonvoterHeartbeatShare, done: done,
		last: map[raft.ServerID]time.Time{}}
	h.setServers(nil)
	return h
}

// setServers records which servers are non-voters (the leader calls it
// with the configuration after every reconcile pass).
func (h *heartbeatThrottle) setServers(servers []raft.Server) {
	m := make(map[raft.ServerID]bool, len(servers))
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			m[s.ID] = true
		}
	}
	h.nonvoters.Store(&m)
	h.mu.Lock()
	for id := range h.last {
		if !m[id] {
			delete(h.last, id)
		}
	}
	h.mu.Unlock()
}

// isHeartbeat: raft's heartbeat is an AppendEntries with only the header,
// term and leader set.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return len(a.Entries) == 0 && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 && a.LeaderCommitIndex == 0
}

// AppendEntries holds a heartbeat to a non-voter back until every has
// passed since the last one, then sends it.
func (h *heartbeatThrottle) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if isHeartbeat(args) && (*h.nonvoters.Load())[id] {
		h.mu.Lock()
		wait := time.Until(h.last[id].Add(h.every))
		h.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-h.done:
				t.Stop()
			}
		}
		h.mu.Lock()
		h.last[id] = time.Now()
		h.mu.Unlock()
	}
	return h.NetworkTransport.AppendEntries(id, target, args, resp)
}

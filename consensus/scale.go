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
// 22% at 30, and each RPC also costs its follower; at 100 nodes the
// followers' share alone filled both cores and voters missed heartbeats.
// Only voters' heartbeats matter for leadership (the lease and
// VerifyLeader count voters; a non-voter never campaigns), so a non-voter
// only needs to hear from the leader often enough not to forget it: more
// than once per its own HeartbeatTimeout, which it lengthens while it is
// a non-voter (see watchSuffrage).

// nonvoterTimeoutFactor: a non-voter runs with HeartbeatTimeout (and
// ElectionTimeout, which must not be shorter) this many times the
// profile's (4 s on lan). It never campaigns, so the timeout only decides
// when it forgets a silent leader.
const nonvoterTimeoutFactor = 10

// nonvoterHeartbeatEvery: the leader heartbeats a non-voter every
// HeartbeatTimeout × 5 (2 s on lan) against raft's 40–80 ms. With raft's
// own random wait (≤ HT/10) and the batching below (≤ every/8) a
// non-voter still hears from the leader at least every ~2.35 s, well
// within its 4 s timeout, so a heartbeat delayed
// by a busy machine does not make it forget the leader. At 100 nodes the
// leader's heartbeats to non-voters were half its idle RPCs at one a
// second.
func nonvoterHeartbeatEvery(heartbeatTimeout time.Duration) time.Duration {
	return heartbeatTimeout * 5
}

// nonvoterBatches: the waits the throttle imposes on non-voters (their
// heartbeats and held idle appends) end on multiples of
// nonvoterHeartbeatEvery / nonvoterBatches of the clock (250 ms on lan), so
// the leader wakes a few times a second for all of them together instead
// of once per non-voter at its own moment: at 100 nodes 95 non-voters'
// heartbeat and replication goroutines each woke the leader's process
// about twice a second, and every wake-up costs the scheduler and sysmon
// more than the RPC's own work. A heartbeat goes at most this much later
// (2.25 s against a 4 s timeout).
const nonvoterBatches = 8

// batched returns a wait of at least d that ends on a multiple of q of
// the clock, so that waits ending within q of each other end together.
func batched(d, q time.Duration) time.Duration {
	now := time.Now()
	end := now.Add(d)
	if t := end.Truncate(q); t.Before(end) {
		end = t.Add(q)
	}
	return end.Sub(now)
}

// voterFresh: an idle append to a voter is answered here only while an
// RPC to that voter succeeded within this long (HeartbeatTimeout/4, checked
// again when a held answer is released), so a made-up answer stretches
// what raft counts as contact for the leader's lease by at most that much
// (400 ms becomes at most 500 ms on lan): a partitioned leader still steps
// down, 100 ms later at most. What a leader serves from its lease (its
// registry, while Stale is false) is so at most that much older.
func voterFresh(heartbeatTimeout time.Duration) time.Duration {
	return heartbeatTimeout / 4
}

// idleAppendCheck: an idle append that tells a non-voter nothing new is
// answered by the throttle, but one really goes at least this often, so a
// non-voter that lost what it acknowledged (a restart before its writes
// reached disk) learns the commit index within this time.
const idleAppendCheck = 10 * time.Second

// heartbeatThrottle is raft's network transport with the idle traffic to
// followers cut down, most for non-voters:
//
//   - a heartbeat to a non-voter is held back until nonvoterHeartbeatEvery
//     has passed since the last one. Raft's heartbeat goroutine for a
//     follower calls AppendEntries and waits for it, so holding it slows
//     that goroutine and nothing else;
//   - an empty append to a non-voter (raft's replication goroutine sends
//     one every CommitTimeout so that the follower learns the commit
//     index) that carries no newer commit index than it acknowledged is
//     answered here with success, without an RPC (at most idleAppendCheck
//     apart one goes anyway). The non-voter would answer it the same way.
//     The answer is held until raft stores a newer entry (storeNotifier
//     wakes it: the same goroutine then sends that entry, after its
//     commit, see below) or half the heartbeat spacing passes. An error on any RPC to the non-voter
//     forgets what it acknowledged, so its next idle append goes out;
//   - an append with entries to a non-voter waits until they are
//     committed, and then carries the commit index that covers them (see
//     "Voters first" in commitwait.go); what it carried counts as
//     acknowledged, so the next idle append need not repeat it;
//   - no follower gets a pipeline (see AppendEntriesPipeline);
//   - appends to one follower, heartbeats and replication, go one at a
//     time (lanes): raft's heartbeat and replication goroutines for a
//     follower each hold a connection while their RPC runs, and
//     hashicorp/raft gave every connection a 256 KB send buffer for as
//     long as it stayed in the pool (rpcClient's are 16 KB now). With
//     the batched waits both goroutines of a non-voter often send at the
//     same moment, so the leader kept two connections, 512 KB, per
//     non-voter (measured at 100 nodes: 185 send buffers for 99
//     followers); with replicas out of raft, the leader of 100 nodes
//     still kept two per voter, 2 MB of its 5.6 MB live heap. In turn
//     they share one, and rpcClient keeps one. A heartbeat waits behind
//     an append at most laneWait (non-voter: it counts an append as
//     contact only once it has
//     processed it) or voterLaneWait (voter), then goes on a connection
//     of its own as raft would send it; whichever of the two connections
//     comes back second is closed. Snapshots and votes go their own way,
//     as in raft (a vote's connection is kept when none is, a
//     snapshot's always closed);
//   - a voter's heartbeats go at raft's rate, but its idle appends are
//     answered here too, only while an RPC to the voter succeeded within
//     voterFresh (raft counts every answer from a voter as contact for
//     the leader's lease, so answers made up from older contact would keep
//     a partitioned leader's lease alive); such an answer is held at most
//     half voterFresh, and sent for real if the contact went stale
//     meanwhile.
//
// Votes and snapshots pass unchanged; appends with entries to voters or
// with a newer commit index pass unchanged but for their turn in the
// lane.
// Measured with `rbee bench scale` at 30 nodes, the CPU profile of the
// leader was raft's replication to followers (commit-index appends, 15% of
// its samples; heartbeats 5% once spaced).
type heartbeatThrottle struct {
	*transport
	every     time.Duration // nonvoterHeartbeatEvery
	batch     time.Duration // every / nonvoterBatches
	fresh     time.Duration // voterFresh
	voterWait time.Duration // voterLaneWait
	holdMax   time.Duration // commitHoldMax
	done      <-chan struct{}
	commits   *commitWatch

	nonvoters atomic.Pointer[map[raft.ServerID]bool]
	answered  atomic.Uint64 // idle appends answered without an RPC
	pastLane  atomic.Uint64 // heartbeats that went without waiting longer for their lane

	mu         sync.Mutex
	cfgIndex   uint64                          // the log index of the configuration in nonvoters
	cfgSeq     uint64                          // counts the configurations taken and forgotten
	lastStored uint64                          // the newest log index stored here
	stored     chan struct{}                   // closed when an entry is stored (then replaced)
	lastBeat   map[raft.ServerID]time.Time     // when the last heartbeat went to each server
	lastIdle   map[raft.ServerID]time.Time     // when the last empty append really went to each server
	lastOK     map[raft.ServerID]time.Time     // when an RPC to each server last succeeded
	commit     map[raft.ServerID]uint64        // the newest commit index each server acknowledged
	lanes      map[raft.ServerID]chan struct{} // a token for the append in flight to each follower
}

func newHeartbeatThrottle(t *transport, heartbeatTimeout time.Duration, done <-chan struct{}) *heartbeatThrottle {
	every := nonvoterHeartbeatEvery(heartbeatTimeout)
	h := &heartbeatThrottle{transport: t, every: every, batch: every / nonvoterBatches,
		fresh: voterFresh(heartbeatTimeout), voterWait: voterLaneWait(heartbeatTimeout), holdMax: commitHoldMax(heartbeatTimeout), done: done, commits: newCommitWatch(),
		lastBeat: map[raft.ServerID]time.Time{}, lastIdle: map[raft.ServerID]time.Time{}, lastOK: map[raft.ServerID]time.Time{},
		commit: map[raft.ServerID]uint64{}, lanes: map[raft.ServerID]chan struct{}{}, stored: make(chan struct{})}
	h.setServers(nil, 0)
	return h
}

// setServers records which servers are non-voters in the configuration
// at log index index; one older than what it has is ignored. Every
// configuration stored in the log comes here (storeNotifier), before the
// leader replicates it; every server also calls it with its latest
// configuration (watchSuffrage: one from a snapshot, or from before a
// restart), so a new leader spaces its idle traffic from its first
// heartbeat; the leader also calls it before every reconcile pass.
func (h *heartbeatThrottle) setServers(servers []raft.Server, index uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if index < h.cfgIndex {
		return
	}
	h.cfgIndex = index
	h.cfgSeq++
	m := make(map[raft.ServerID]bool, len(servers))
	in := make(map[raft.ServerID]bool, len(servers))
	for _, s := range servers {
		in[s.ID] = true
		if s.Suffrage != raft.Voter {
			m[s.ID] = true
		}
	}
	h.nonvoters.Store(&m)
	// Servers no longer in the configuration are forgotten.
	for _, t := range []map[raft.ServerID]time.Time{h.lastBeat, h.lastIdle, h.lastOK} {
		for id := range t {
			if !in[id] {
				delete(t, id)
			}
		}
	}
	for id := range h.commit {
		if !in[id] {
			delete(h.commit, id)
		}
	}
	// Held appends look again: their server may be a voter now.
	h.commits.wake()
}

// entriesStored records that raft stored entries up to index (called by
// storeNotifier) and wakes the idle appends held for it.
func (h *heartbeatThrottle) entriesStored(index uint64) {
	h.mu.Lock()
	h.lastStored = max(h.lastStored, index)
	close(h.stored)
	h.stored = make(chan struct{})
	h.mu.Unlock()
}

// storeNotifier is raft's log store with every store reported to the
// throttle (the leader's held idle appends wake when there is an entry to
// send), and every configuration stored handed to it: raft uses a
// configuration from when it is stored, so the throttle knows a promoted
// non-voter as a voter before it replicates anything more to it.
type storeNotifier struct {
	raft.LogStore
	h      *heartbeatThrottle
	failed *storeFailures // nil: not tracked
}

func (s storeNotifier) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

func (s storeNotifier) StoreLogs(ls []*raft.Log) error {
	err := s.LogStore.StoreLogs(ls)
	if s.failed != nil && len(ls) > 0 {
		s.failed.note(err)
	}
	if err != nil || len(ls) == 0 {
		return err
	}
	for _, l := range ls {
		if cf, ok := storedConfiguration(l); ok {
			s.h.setServers(cf.Servers, l.Index)
		}
	}
	s.h.entriesStored(ls[len(ls)-1].Index)
	return nil
}

// configSeq is what resetServers compares against: read it before
// asking raft for its configuration.
func (h *heartbeatThrottle) configSeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cfgSeq
}

// resetServers makes this server's latest configuration the throttle's,
// whatever the index of the one it has, unless the throttle took or
// forgot one since configSeq returned seq (then raft stored a newer one
// meanwhile, which the index order keeps). A new leader calls it: a
// configuration stored before a cut of its log, or before a snapshot,
// may carry a higher index than the one in force.
func (h *heartbeatThrottle) resetServers(cf raft.ConfigurationFuture, seq uint64) {
	h.mu.Lock()
	if h.cfgSeq == seq {
		h.cfgIndex = 0
	}
	h.mu.Unlock()
	h.setServers(cf.Configuration().Servers, cf.Index())
}

// DeleteRange is the log store's, and when the range holds the entry of
// the configuration the throttle goes by (a follower's log cut back by a
// new leader, which may also drop that configuration), lets the next
// configuration in, whatever its index: raft falls back to its committed
// one, which the next watchSuffrage or reconcile pass hands over.
func (s storeNotifier) DeleteRange(lo, hi uint64) error {
	err := s.LogStore.DeleteRange(lo, hi)
	s.h.forgetConfiguration(lo, hi)
	return err
}

// forgetConfiguration lets any configuration in next when the one the
// throttle has came from an entry in [lo, hi].
func (h *heartbeatThrottle) forgetConfiguration(lo, hi uint64) {
	h.mu.Lock()
	if h.cfgIndex >= lo && h.cfgIndex <= hi {
		h.cfgIndex = 0
		h.cfgSeq++
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

// AppendEntries spaces heartbeats and answers idle appends that tell a
// follower nothing new, and holds a non-voter's entries until they are
// committed (see heartbeatThrottle); everything else is sent as it is.
func (h *heartbeatThrottle) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if len(args.Entries) > 0 {
		h.holdForCommit(id, args)
		return h.send(id, target, args, resp)
	}
	nonvoter := h.nonvoter(id)
	if isHeartbeat(args) {
		if !nonvoter {
			// Raft's own rate: a voter's contact is what keeps it from
			// starting an election, and on a loaded machine the gaps
			// between heartbeats are what grows.
			return h.send(id, target, args, resp)
		}
		h.mu.Lock()
		wait := time.Until(h.lastBeat[id].Add(h.every))
		h.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(batched(wait, h.batch))
			select {
			case <-t.C:
			case <-h.done:
				t.Stop()
			}
		}
		h.mu.Lock()
		h.lastBeat[id] = time.Now()
		h.mu.Unlock()
		return h.send(id, target, args, resp)
	}
	h.mu.Lock()
	acked, known := h.commit[id]
	answer := known && args.LeaderCommitIndex <= acked && time.Since(h.lastIdle[id]) < idleAppendCheck
	holdFor := batched(h.every/2, h.batch)
	if !nonvoter {
		// A voter's answer counts for the lease: only while real contact
		// is fresh.
		answer = answer && time.Since(h.lastOK[id]) < h.fresh
		holdFor = h.fresh / 2
	}
	if !answer {
		h.lastIdle[id] = time.Now()
	}
	// Nothing newer than this append covers is stored yet: hold the
	// answer until something is, or holdFor passes. Raft's goroutine for
	// this follower would otherwise come back every CommitTimeout (95
	// goroutines spinning at 100 nodes); an entry stored while it waits
	// wakes it at once, so replication is not delayed.
	hold := answer && h.lastStored <= args.PrevLogEntry
	stored := h.stored
	h.mu.Unlock()
	if hold {
		t := time.NewTimer(holdFor)
		select {
		case <-t.C:
		case <-stored:
			t.Stop()
		case <-h.done:
			t.Stop()
		}
	}
	if answer && !nonvoter {
		// The hold may have outlasted the fresh contact: the lease must
		// not be stretched by more than voterFresh.
		h.mu.Lock()
		answer = time.Since(h.lastOK[id]) < h.fresh
		if !answer {
			h.lastIdle[id] = time.Now()
		}
		h.mu.Unlock()
	}
	if answer {
		// What the follower answered to the same append last time.
		*resp = raft.AppendEntriesResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: args.ProtocolVersion, ID: []byte(id), Addr: []byte(target)},
			Term: args.Term, LastLog: args.PrevLogEntry, Success: true}
		h.answered.Add(1)
		return nil
	}
	return h.send(id, target, args, resp)
}

// send makes the RPC and records a success (voterFresh) and, for an
// append that is not a heartbeat (the follower checked its log against
// it), the commit index it acknowledged; a failed one forgets that (the
// follower may have restarted), so its next idle append is sent.
func (h *heartbeatThrottle) send(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	wait := h.voterWait
	if h.nonvoter(id) {
		wait = laneWait(h.every)
	}
	release, err := h.enterLane(id, isHeartbeat(args), wait)
	if err != nil {
		return err
	}
	if release != nil {
		defer release()
	}
	err = h.transport.AppendEntries(id, target, args, resp)
	h.mu.Lock()
	if err != nil || !resp.Success {
		delete(h.commit, id)
	} else {
		if !isHeartbeat(args) {
			h.commit[id] = max(h.commit[id], args.LeaderCommitIndex)
		}
		if resp.Term == args.Term {
			h.lastOK[id] = time.Now()
		}
	}
	h.mu.Unlock()
	return err
}

// contact reports how long ago an RPC of this server to server id last
// succeeded, answered in the term it was sent in (ok false: none, or the
// server left the configuration; an answer from an earlier term of this
// server's leadership still counts, for the few seconds of the window it
// is compared with), and how often the server hears from the leader when
// idle (a voter at raft's heartbeat rate, a
// non-voter every h.every).
func (h *heartbeatThrottle) contact(id string) (age, every time.Duration, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.lastOK[raft.ServerID(id)]
	if !ok {
		return 0, 0, false
	}
	every = h.fresh
	if (*h.nonvoters.Load())[raft.ServerID(id)] {
		every = h.every
	}
	return time.Since(t), every, true
}

// enterLane waits for server id's lane and returns what releases it. A
// heartbeat waits at most wait (laneWait for a non-voter, voterLaneWait
// for a voter) and then goes without the lane (nil release, counted in
// pastLane): an append that takes that long must not also delay the
// follower's heartbeats, which keep it from dropping the leader and the
// leader's lease. It returns raft.ErrTransportShutdown when the server
// closes while it waits. Lanes are kept for servers that left: one small
// channel each.
func (h *heartbeatThrottle) enterLane(id raft.ServerID, heartbeat bool, wait time.Duration) (release func(), err error) {
	h.mu.Lock()
	l := h.lanes[id]
	if l == nil {
		l = make(chan struct{}, 1)
		h.lanes[id] = l
	}
	h.mu.Unlock()
	release = func() { <-l }
	select {
	case l <- struct{}{}:
		return release, nil
	default:
	}
	if !heartbeat {
		select {
		case l <- struct{}{}:
			return release, nil
		case <-h.done:
			return nil, raft.ErrTransportShutdown
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case l <- struct{}{}:
		return release, nil
	case <-t.C:
		h.pastLane.Add(1)
		return nil, nil
	case <-h.done:
		return nil, raft.ErrTransportShutdown
	}
}

// laneWait is how long a heartbeat to a non-voter waits behind an append
// in flight: a quarter of the heartbeat spacing, so that the gap the
// non-voter sees (at most about every + every/8 with the batching) stays
// well inside its heartbeat timeout (2× every).
func laneWait(every time.Duration) time.Duration { return every / 4 }

// voterLaneWait is how long a heartbeat to a voter waits behind an append
// in flight: a tenth of the heartbeat timeout (40 ms on lan). Raft sends a
// voter a heartbeat every HT/10 to HT/5 (40–80 ms), so the largest gap
// the voter sees grows to about 120 ms, far inside its 400 ms timeout and
// the leader's 400 ms lease; and most appends end sooner (a registry
// write took 5–40 ms at 100 nodes on the 2-core VM, the follower's fsync
// included), so most of the time the two share one connection. Past it
// the heartbeat goes on a connection of its own, as raft sends it, and
// whichever of the two comes back second is closed (rpcClient): an append
// held up by a slow disk does not hold back the heartbeats.
func voterLaneWait(heartbeatTimeout time.Duration) time.Duration { return heartbeatTimeout / 10 }

// suffrageCheckEvery: how often a server reads its latest configuration to
// learn whether it is a non-voter (and to tell its throttle who is). A
// configuration read is served by raft's main loop from memory.
const suffrageCheckEvery = 2 * time.Second

// watchSuffrage keeps this server's timeouts fitting its suffrage: a
// non-voter's HeartbeatTimeout and ElectionTimeout are the profile's ×
// nonvoterTimeoutFactor, a voter's (or a server outside the
// configuration) the profile's. Promotion is noticed within
// suffrageCheckEvery; until then the promoted voter only starts an
// election later than the others would.
func (c *Consensus) watchSuffrage() {
	defer c.wg.Done()
	t := time.NewTicker(suffrageCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		r, err := c.running()
		if err != nil {
			continue
		}
		cf := r.GetConfiguration()
		if cf.Error() != nil {
			continue
		}
		servers := cf.Configuration().Servers
		c.throttle.setServers(servers, cf.Index())
		// A voter that the voters' feeds leave out (reaped while away)
		// takes a non-voter's timeouts too: it campaigns in vain.
		nonvoter := c.noteSuffrage(servers) || !c.isVoter()
		if nonvoter == c.nonvoter.Load() {
			continue
		}
		rc := r.ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = c.tm.heartbeat, c.tm.election
		if nonvoter {
			rc.HeartbeatTimeout *= nonvoterTimeoutFactor
			rc.ElectionTimeout = max(rc.ElectionTimeout, rc.HeartbeatTimeout)
		}
		if err := r.ReloadConfig(rc); err != nil {
			c.log.Warn("reload raft timeouts", "nonvoter", nonvoter, "err", err)
			continue
		}
		c.nonvoter.Store(nonvoter)
		c.log.Debug("raft timeouts for suffrage", "nonvoter", nonvoter, "heartbeat_timeout", rc.HeartbeatTimeout)
	}
}

// readSuffrage reads the configuration raft starts with (see noteSuffrage).
func (c *Consensus) readSuffrage(r *raft.Raft) {
	if cf := r.GetConfiguration(); cf.Error() == nil {
		c.noteSuffrage(cf.Configuration().Servers)
	}
}

// noteSuffrage records whether this server is a voter in servers (a
// configuration), and its voters; it reports whether this server is a
// non-voter in it.
func (c *Consensus) noteSuffrage(servers []raft.Server) (nonvoter bool) {
	voter := false
	voters := make([]string, 0, len(servers))
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
		if s.ID == raft.ServerID(c.cfg.LocalID) {
			nonvoter = s.Suffrage != raft.Voter
			voter = s.Suffrage == raft.Voter
		}
	}
	c.voter.Store(voter)
	c.configVoters.Store(&voters)
	return nonvoter
}

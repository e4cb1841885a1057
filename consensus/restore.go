package consensus

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rbee-project/rbee/fsm"
)

// Keys of this package's own values in raft's stable store (raft's keys
// are "CurrentTerm", "LastVoteTerm", "LastVoteCand").
var (
	keyAppliedIndex  = []byte("rbee_applied_index")
	keyLeaderContact = []byte("rbee_leader_contact_unix_ms")
)

// persistInterval: how often the applied index is checked and, when it
// moved, written to the stable store; a graceful Close writes it and the
// last leader contact at the end. Each write is a bolt commit with an
// fdatasync, and every node is a raft server that applies every registry
// change: when it was written after each change (at most every 500 ms in
// a burst), the 100 nodes of `rbee bench scale --workers-per-node 5`
// spent 26 of their 500 CPU-seconds while the workers registered on these
// fsyncs, up to 200 a second on one disk. The applied hint (hint.go),
// written after every apply without an fsync, already covers a process
// that is killed; the stable store's value only matters after a power
// loss, when a restart then replays up to this much less of the log by
// itself and waits for the leader for the rest.
const persistInterval = 5 * time.Second

// contactPersistEvery: the last leader contact moves with every message
// from the leader, so it is written at most this often. Every write is a
// bolt commit with an fdatasync; at 500 ms a node did two a second for
// ever (200 a second for 100 nodes on one machine, 5% of an idle
// follower's CPU). After a crash the contact shown is at most this old
// plus persistInterval (it is checked on that tick).
const contactPersistEvery = 10 * time.Second

// errReplayAhead: raft asked for a snapshot before it had caught up with
// the entries replayed at start; the state is ahead of raft's index, so a
// snapshot now would be labelled with the wrong index. Raft retries later.
var errReplayAhead = errors.New("consensus: registry replayed ahead of raft; snapshot later")

// replayFSM wraps the registry so that a restarted server serves the
// registry it last knew at once, and so that a replica (a server outside
// the raft configuration, feed.go) can follow it from a voter's feed.
// hashicorp/raft restores the newest snapshot at start but applies later
// log entries only once a leader tells it the commit index; without a
// quorum that never happens. Every entry the FSM applied was committed, so
// Start replays the log from the snapshot up to the index this server
// persisted as applied, and the wrapper skips those entries when raft
// hands them over again.
//
// last is the index through which the registry holds every committed
// command (replayed, applied by raft, or applied from a feed): raft's
// entries at or below it are skipped, a feed's entry applies only as the
// next command after it (feedEntry.prev). Raft's own snapshot restore
// leaves it unknown (pinned) until raft's next entry.
//
// Apply, Snapshot and Restore run on raft's FSM goroutine, the feed's
// calls on the feed client's; mu serialises them. The atomics of the
// callbacks are read by the persist loop.
type replayFSM struct {
	inner *fsm.FSM
	// hint records every entry raft applied (hint.go).
	hint *appliedHint
	// applied, when set, hears of every registry command applied by this
	// run through raft (the throttle's commitWatch: raft applies a
	// command only after it is committed); not of those replayed at
	// start, nor of entries that reach no FSM. Set before raft starts.
	applied func()
	// restored, when set, hears of every snapshot restored (raft's
	// install from the leader among them): a replica that caught up so is
	// current, whatever stores failed before. Set before raft starts.
	restored func()

	mu sync.Mutex
	// last: see the type's comment; pinned: raft restored a snapshot of
	// an index the FSM is not told, so last is unknown until raft's next
	// entry (a feed applies nothing meanwhile).
	last   uint64
	pinned bool
	// seen: the highest index raft handed to Apply.
	seen uint64
	// raftLast: the index through which raft (or the replay at start)
	// applied every committed entry: what persist writes as applied. Not
	// what a feed applied: this server's log may hold entries past raft's
	// commit that a feed's commands replaced (a non-voter removed before
	// it learned of their truncation), and a restart replays the log up
	// to the persisted index.
	raftLast uint64
	// restores counts raft's snapshot restores this run (unpinStart).
	restores int
	// ring: the newest commands applied, which this server's feed serves
	// (feed.go).
	ring feedRing
}

// Apply implements raft.FSM.
func (r *replayFSM) Apply(l *raft.Log) any {
	r.mu.Lock()
	r.seen = l.Index
	if !r.pinned && l.Index <= r.last {
		// Replayed at start, or applied from a feed: no future waits for
		// it (futures belong to entries appended by this run as leader,
		// above anything committed before).
		r.mu.Unlock()
		return nil
	}
	prev := r.last
	if r.pinned {
		// After raft's restore the registry holds everything before
		// this entry; which command came last is not known.
		prev, r.pinned = l.Index-1, false
		r.ring.reset(prev)
	}
	res := r.inner.Apply(l)
	r.last, r.raftLast = l.Index, l.Index
	r.ring.add(feedEntry{index: l.Index, prev: prev, data: l.Data})
	r.mu.Unlock()
	_ = r.hint.write(l.Index, l.Term) // a failure only leaves the hint older
	if r.applied != nil {
		r.applied()
	}
	return res
}

// Snapshot implements raft.FSM. Raft labels it with its own applied
// index; a registry ahead of that (replayed at start, or fed) is refused.
func (r *replayFSM) Snapshot() (raft.FSMSnapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.pinned && r.seen < r.last {
		return nil, errReplayAhead
	}
	return r.inner.Snapshot()
}

// Restore implements raft.FSM: a snapshot from the leader replaces the
// state, so nothing replayed is left to skip.
func (r *replayFSM) Restore(rc io.ReadCloser) error {
	r.mu.Lock()
	err := r.inner.Restore(rc)
	if err == nil {
		r.last, r.pinned = 0, true
		r.restores++
		r.ring.reset(0)
		r.ring.pin()
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if r.restored != nil {
		r.restored()
	}
	return nil
}

// unpinStart ends the pin of raft's restore at start (Start calls it once
// NewRaft returned, which restored the snapshot and took its index as
// applied): a replica gets no raft entry that would end it, and its feed
// would wait for ever. applied is raft's applied index; a later restore
// (a leader's snapshot) pins again, and one that came meanwhile leaves the
// pin alone.
func (r *replayFSM) unpinStart(applied func() uint64) {
	r.mu.Lock()
	ok := r.pinned && r.restores == 1
	r.mu.Unlock()
	if !ok {
		return
	}
	idx := applied()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pinned && r.restores == 1 {
		r.last, r.raftLast, r.seen, r.pinned = idx, idx, idx, false
		r.ring.reset(idx)
	}
}

// appliedByRaft returns raftLast.
func (r *replayFSM) appliedByRaft() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.raftLast
}

// index returns last (0 while pinned).
func (r *replayFSM) index() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// replayLocal restores the newest snapshot and applies the committed log
// entries after it, up to the persisted applied index. It reports whether
// it restored the snapshot itself (raft must then skip its own restore) and
// how many entries it replayed. On any failure it leaves the registry as it
// was and raft restores as usual.
func (c *Consensus) replayLocal(w *replayFSM) (ownRestore bool, replayed int, err error) {
	metas, err := c.snaps.List()
	if err != nil {
		return false, 0, fmt.Errorf("list snapshots: %w", err)
	}
	var from uint64
	if len(metas) > 0 {
		// Raft tries the newest first; with NoSnapshotRestoreOnStart it
		// takes that one's index as applied, so restore exactly that one.
		_, rc, err := c.snaps.Open(metas[0].ID)
		if err != nil {
			return false, 0, fmt.Errorf("open snapshot %s: %w", metas[0].ID, err)
		}
		if err := w.inner.Restore(rc); err != nil {
			return false, 0, fmt.Errorf("restore snapshot %s: %w", metas[0].ID, err)
		}
		from = metas[0].Index
	}
	applied, _ := c.store.GetUint64(keyAppliedIndex) // absent: nothing to replay
	if hi, ht, err := w.hint.read(); err == nil && hi > applied {
		// Newer than the stable store's (written at most every
		// persistInterval): trusted when this log holds the
		// same entry.
		var l raft.Log
		if c.store.GetLog(hi, &l) == nil && l.Term == ht {
			applied = hi
		}
	}
	var through uint64
	for i := from + 1; i <= applied; i++ {
		var l raft.Log
		if err := c.store.GetLog(i, &l); err != nil {
			break // compacted or never stored: the prefix replayed so far is consistent
		}
		through = i
		if l.Type != raft.LogCommand {
			continue
		}
		if _, err := w.inner.ApplyCommand(i, l.Data); err == nil {
			replayed++
		}
	}
	w.mu.Lock()
	w.last = max(from, through) // the snapshot, then what was replayed
	w.seen = from               // raft starts with the snapshot's index as applied
	w.ring.reset(w.last)
	w.mu.Unlock()
	return true, replayed, nil
}

// persistLoop writes the applied index and the last leader contact on
// the persistInterval tick, when they moved, until the server closes.
func (c *Consensus) persistLoop() {
	defer c.wg.Done()
	t := time.NewTicker(persistInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.persist(false)
		}
	}
}

// persist writes what changed since the last write: the applied index
// whenever it moved, the last leader contact when it is contactPersistEvery
// newer than the one written (always, with final).
func (c *Consensus) persist(final bool) {
	if idx := c.replay.appliedByRaft(); idx != c.persistedIndex.Load() {
		if err := c.store.SetUint64(keyAppliedIndex, idx); err != nil {
			c.log.Warn("persist applied index", "err", err)
		} else {
			c.persistedIndex.Store(idx)
		}
	}
	lc := c.LastLeaderContact()
	ms := uint64(lc.UnixMilli())
	due := final || ms >= c.persistedContact.Load()+uint64(contactPersistEvery.Milliseconds())
	if !lc.IsZero() && ms != c.persistedContact.Load() && due {
		if err := c.store.SetUint64(keyLeaderContact, ms); err != nil {
			c.log.Warn("persist leader contact", "err", err)
		} else {
			c.persistedContact.Store(ms)
		}
	}
}

// staleAfter: a follower that heard nothing from a leader for this many
// heartbeat timeouts serves a stale registry (raft itself starts an
// election after one or two).
const staleAfter = 4

// LastLeaderContact returns when this server last knew a leader: now on
// the leader, the last message from it on a follower, else the newest
// contact recorded (also by an earlier run of this data dir). Zero when
// never.
func (c *Consensus) LastLeaderContact() time.Time {
	if r, err := c.running(); err == nil {
		switch {
		case r.State() == raft.Leader:
			c.noteContact(time.Now())
		case r.Leader() != "":
			if lc := r.LastContact(); !lc.IsZero() {
				c.noteContact(lc)
			}
		}
	}
	ms := c.lastContact.Load()
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}

func (c *Consensus) noteContact(t time.Time) {
	ms := uint64(t.UnixMilli())
	for {
		old := c.lastContact.Load()
		if ms <= old || c.lastContact.CompareAndSwap(old, ms) {
			return
		}
	}
}

// Stale reports whether the local registry replica may be behind: no
// leader is known, none was heard from for staleAfter heartbeat timeouts,
// or this server cannot store the entries it is sent (StoreError).
// Reads still answer from it.
func (c *Consensus) Stale() bool {
	r, err := c.running()
	if err != nil {
		return true
	}
	if r.State() == raft.Leader {
		return false
	}
	if _, ok := c.feed.fresh(); ok && !c.isVoter() {
		// A replica whose feed is current (feed.go).
		return false
	}
	if r.Leader() == "" || c.StoreError() != nil {
		return true
	}
	lc := c.LastLeaderContact()
	after := staleAfter * c.tm.heartbeat
	if c.nonvoter.Load() {
		// A non-voter hears from the leader every few seconds (scale.go):
		// stale when its own raft timeout would forget the leader.
		after = max(after, nonvoterTimeoutFactor*c.tm.heartbeat)
	}
	return lc.IsZero() || time.Since(lc) > after
}

// storeFailures records whether raft's last store of new log entries on
// this server failed, and since when. A follower whose disk is full keeps
// answering the leader's heartbeats (they store nothing), so without it
// the replica would fall behind for good while looking current.
type storeFailures struct {
	mu    sync.Mutex
	err   error
	since time.Time
}

// note records the outcome of a store: nil clears a failure.
func (f *storeFailures) note(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		f.err = nil
		return
	}
	if f.err == nil {
		f.since = time.Now()
	}
	f.err = err
}

func (f *storeFailures) get() (time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.since, f.err
}

// StoreError reports why this server cannot store new registry entries (a
// full or read-only disk under its raft dir), nil when the last store
// worked. The replica is stale meanwhile; it catches up by itself once a
// store works again (the leader resends what failed).
func (c *Consensus) StoreError() error {
	since, err := c.storeFailing.get()
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w since %s: %w (free space or fix the file system under %s: the replica catches up by itself)",
		ErrStoreFailing, since.UTC().Format(time.RFC3339), err, filepath.Join(c.cfg.DataDir, "raft"))
}

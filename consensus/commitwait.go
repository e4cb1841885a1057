package consensus

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Voters first. Raft's leader sends a new entry to every follower at
// once, non-voters included, and commits it once a majority of voters
// stored it. At 100 nodes that is 99 RPCs and 99 fsyncs per registry
// write, and the four voters' share came out in random order among them:
// `rbee bench scale` measured 110–270 ms per write at 100 nodes against 4
// ms at 3. Non-voters never count toward a commit, so their copy of an
// entry waits until it is committed (commitWatch), and then goes with the
// commit index that covers it; the voters' RPCs and fsyncs no longer
// wait behind the non-voters' (their fsyncs on a shared disk still queue
// behind those of the write before). Who is a non-voter is what the
// newest configuration stored in the log says (raft commits by the newest
// too), and the leader stores an entry before it replicates it: an append
// that promotes a non-voter, which may be needed for the quorum that
// commits the promotion, finds it a voter already, and is not held.

// commitHoldMax bounds how long a non-voter's entries wait for their
// commit: past it the leader has likely lost its quorum, and the entries
// go anyway, as they did before.
func commitHoldMax(heartbeatTimeout time.Duration) time.Duration { return heartbeatTimeout }

// commitPoll is how often a waiting append rechecks raft's commit index
// when no registry command is applied meanwhile. Raft has no commit
// notification; the registry's apply wakes the waiters (applied), and this
// poll, run only while appends wait, covers entries that reach no FSM
// (configuration changes, barriers, a new leader's no-op): at most this
// much later on a non-voter. (A 1 ms poll alone would tick a thousand
// times a second on a leader that has appends waiting most of the time,
// as while hundreds of workers spawn.)
const commitPoll = 10 * time.Millisecond

// commitIndexer is what commitWatch needs of raft.
type commitIndexer interface {
	CommitIndex() uint64
	CurrentTerm() uint64
}

// commitWatch lets appends wait until raft's commit index reaches an
// index. One goroutine polls the index while anyone waits. Safe for
// concurrent use.
type commitWatch struct {
	src atomic.Pointer[commitIndexer] // nil until raft runs: nothing waits

	mu      sync.Mutex
	waiters int
	polling bool
	ch      chan struct{} // closed (and replaced) to make the waiters look again
}

func newCommitWatch() *commitWatch { return &commitWatch{ch: make(chan struct{})} }

// setSource starts the watch on raft (or a test's stand-in).
func (w *commitWatch) setSource(r commitIndexer) { w.src.Store(&r) }

// source is the commit index's source, nil before setSource.
func (w *commitWatch) source() commitIndexer {
	if p := w.src.Load(); p != nil {
		return *p
	}
	return nil
}

// wake makes every waiter, if any, look again: a registry command was
// applied (raft applies one only after it is committed), or a waiter's
// server may be a voter now.
func (w *commitWatch) wake() {
	w.mu.Lock()
	if w.waiters > 0 {
		w.broadcastLocked()
	}
	w.mu.Unlock()
}

// broadcastLocked wakes every waiter; w.mu is held.
func (w *commitWatch) broadcastLocked() {
	close(w.ch)
	w.ch = make(chan struct{})
}

// wait returns true once raft's commit index is at least index, false
// when limit passes, done closes, hold reports false (checked at every
// wake) or raft is not running.
func (w *commitWatch) wait(index uint64, limit time.Duration, hold func() bool, done <-chan struct{}) bool {
	r := w.source()
	if r == nil {
		return false
	}
	if r.CommitIndex() >= index {
		return true
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	w.mu.Lock()
	w.waiters++
	if !w.polling {
		w.polling = true
		go w.poll(r, done)
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.waiters--
		w.mu.Unlock()
	}()
	for {
		w.mu.Lock()
		ch := w.ch
		w.mu.Unlock()
		if r.CommitIndex() >= index {
			return true
		}
		if !hold() {
			return false
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-done:
			return false
		}
	}
}

// poll wakes the waiters whenever the commit index advances, until none
// is left. It starts from 0, so its first tick wakes every waiter once: an
// advance between a waiter's look and the poll's start is not missed.
func (w *commitWatch) poll(r commitIndexer, done <-chan struct{}) {
	var last uint64
	t := time.NewTicker(commitPoll)
	defer t.Stop()
	for {
		stop := false
		select {
		case <-t.C:
		case <-done:
			stop = true // the waiters return on done too
		}
		w.mu.Lock()
		if w.waiters == 0 || stop {
			w.polling = false
			w.mu.Unlock()
			return
		}
		if c := r.CommitIndex(); c > last {
			last = c
			w.broadcastLocked()
		}
		w.mu.Unlock()
	}
}

// holdForCommit makes a non-voter's append with entries wait for their
// commit (see "Voters first"), and then raises its commit index to what
// raft committed, up to the append's last entry, so the non-voter applies
// them on arrival. It holds only while the server stays a non-voter (a
// promotion releases it) and this server stays in the append's term, and
// raises only then: after a change of term raft's commit index speaks for
// another leader's log, in which these entries may have been cut.
func (h *heartbeatThrottle) holdForCommit(id raft.ServerID, args *raft.AppendEntriesRequest) {
	if !h.nonvoter(id) {
		return
	}
	r := h.commits.source()
	if r == nil {
		return
	}
	last := args.Entries[len(args.Entries)-1].Index
	hold := func() bool { return h.nonvoter(id) && r.CurrentTerm() == args.Term }
	if args.LeaderCommitIndex >= last || !h.commits.wait(last, h.holdMax, hold, h.done) {
		return
	}
	// The commit index first, then the term: raft sets a new term before
	// it takes a new leader's commit index.
	c := r.CommitIndex()
	if r.CurrentTerm() != args.Term {
		return
	}
	args.LeaderCommitIndex = max(args.LeaderCommitIndex, min(c, last))
}

// storedConfiguration is the configuration in a stored log entry, if it
// holds one that decodes (raft's decoder panics on a bad one).
func storedConfiguration(l *raft.Log) (cf raft.Configuration, ok bool) {
	if l.Type != raft.LogConfiguration {
		return cf, false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return raft.DecodeConfiguration(l.Data), true
}

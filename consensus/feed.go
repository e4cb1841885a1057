package consensus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The registry feed (see DESIGN.md, "Replicas"): a server outside the raft
// configuration (a replica) follows the registry from a voter over one
// long-lived forward connection. The replica sends one request frame (opFeed
// and a JSON feedRequest); the voter answers with a stream of frames whose
// first byte is the kind:
//
//	'I' info      JSON feedInfo: the leader, the voters, whether the voter is stale
//	'E' entries   repeated: index u64, prev u64, length u32, command bytes
//	'S' snapshot  label u64; then 'D' pieces of the snapshot, then 'Z'
//	'R' refused   JSON feedInfo with Refused set; the stream ends
//
// An entry applies only as the next command after prev (no command lies
// between prev and index), so a replica that finds a gap asks again from
// what it holds; the voter answers from its ring of recent commands or,
// when that does not reach back so far, with a snapshot.
const (
	feedInfoFrame     byte = 'I'
	feedEntriesFrame  byte = 'E'
	feedSnapshotFrame byte = 'S'
	feedSnapDataFrame byte = 'D'
	feedSnapEndFrame  byte = 'Z'
	feedRefusedFrame  byte = 'R'
)

const (
	// feedRingMaxEntries and feedRingMaxBytes bound the commands a voter
	// keeps for its feeds: a replica away for longer gets a snapshot.
	// 4096 commands are minutes of a busy cluster (500 workers spawning
	// wrote about 2000) and at most a few MB.
	feedRingMaxEntries = 4096
	feedRingMaxBytes   = 8 << 20
	// feedBatch caps the entries taken from the ring at once (one frame
	// or a few).
	feedBatch = 256
	// feedKeepalive: a voter sends info at least this often, so that a
	// replica knows its feed (and through it the leader) is alive.
	feedKeepalive = 2 * time.Second
	// feedSilence: a replica that heard nothing for this long drops the
	// feed and tries another voter; its registry counts as stale then.
	feedSilence = 3 * feedKeepalive
	// feedWriteTimeout bounds one frame's write on the voter: a replica
	// that does not read is dropped.
	feedWriteTimeout = 10 * time.Second
	// feedKeepBuffer: a feed keeps a frame buffer up to this size between
	// frames: an info frame or a few commands. A voter serves a quarter
	// of the replicas (24 at 100 nodes), so keeping the 64 KB frames of a
	// burst of writes cost it 1.5 MB for as long as the feeds lived.
	feedKeepBuffer = 4 << 10
	// feedSnapPiece sizes the pieces of a snapshot (well under maxFrame).
	feedSnapPiece = 256 << 10
	// feedMaxSnapshot caps a snapshot a replica accepts: a registry of
	// 5000 workers is a few MB (consensus/DESIGN.md, the simulation).
	feedMaxSnapshot = 256 << 20
	// feedRetryMax caps the replica's wait between attempts.
	feedRetryMax = 2 * time.Second
)

// Feed errors.
var (
	// errFeedRefused: the server does not serve a feed (not a voter, an
	// older build, or it does not know the replica).
	errFeedRefused = errors.New("feed refused")
	// errFeedGap: an entry did not follow what the replica holds.
	errFeedGap = errors.New("feed entry does not follow the registry")
	// errFeedRedirect: a refusal that named voters (with errFeedRefused).
	errFeedRedirect = errors.New("voters named")
	// errFeedMove: the replica leaves its voter's feed for another
	// voter's (off the leader's, off a stale voter's, or to its own).
	errFeedMove = errors.New("feed moves to another voter")
	// errFeedPinned: raft is restoring this server's registry; a feed
	// waits.
	errFeedPinned = errors.New("registry being restored by raft")
)

// feedRequest is the replica's request: the index its registry holds.
type feedRequest struct {
	From uint64 `json:"from"`
}

// feedInfo is what a voter tells its replicas besides the commands.
type feedInfo struct {
	Leader  string   `json:"leader,omitempty"`
	Voters  []string `json:"voters,omitempty"`
	Stale   bool     `json:"stale,omitempty"`
	Refused string   `json:"refused,omitempty"`
	// Relay: the voter forwards a replica's writes to the leader
	// (opRelay); a voter of an older build leaves it out, and its
	// replicas write to the leader themselves.
	Relay bool `json:"relay,omitempty"`
}

// feedEntry is one command as applied: prev is the index through which the
// registry held every command before it.
type feedEntry struct {
	index, prev uint64
	data        []byte
}

// feedRing keeps the newest commands applied, oldest first: every command
// after floor is in it, unless pinned (raft restored a snapshot of an index
// not known here). Guarded by replayFSM.mu.
type feedRing struct {
	// maxEntries overrides feedRingMaxEntries when > 0 (tests).
	maxEntries int
	entries    []feedEntry
	bytes      int
	floor      uint64
	pinned     bool
	wake       chan struct{} // closed at the next change
}

func (f *feedRing) signal() {
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
}

func (f *feedRing) reset(floor uint64) {
	clear(f.entries)
	f.entries, f.bytes, f.floor, f.pinned = f.entries[:0], 0, floor, false
	f.signal()
}

func (f *feedRing) pin() { f.pinned = true }

func (f *feedRing) add(e feedEntry) {
	f.entries = append(f.entries, e)
	f.bytes += len(e.data)
	limit := feedRingMaxEntries
	if f.maxEntries > 0 {
		limit = f.maxEntries
	}
	drop := 0
	for len(f.entries)-drop > limit || f.bytes > feedRingMaxBytes {
		f.floor = f.entries[drop].index
		f.bytes -= len(f.entries[drop].data)
		drop++
	}
	if drop > 0 {
		n := copy(f.entries, f.entries[drop:])
		clear(f.entries[n:])
		f.entries = f.entries[:n]
	}
	f.signal()
}

// after returns up to max entries after index from, or snapshot when the
// ring does not reach back to from, and a channel closed at the next change.
func (f *feedRing) after(from uint64, max int) (out []feedEntry, snapshot bool, wake <-chan struct{}) {
	if f.wake == nil {
		f.wake = make(chan struct{})
	}
	wake = f.wake
	if from < f.floor {
		return nil, true, wake
	}
	i := sort.Search(len(f.entries), func(i int) bool { return f.entries[i].index > from })
	j := min(len(f.entries), i+max)
	return append([]feedEntry(nil), f.entries[i:j]...), false, wake
}

// feedFrom returns what a feed serving a replica at index from sends next:
// entries, or a snapshot; pinned while raft restores (wait for wake).
func (r *replayFSM) feedFrom(from uint64) (entries []feedEntry, snapshot, pinned bool, wake <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, snapshot, wake = r.ring.after(from, feedBatch)
	if r.pinned {
		return nil, false, true, wake
	}
	return entries, snapshot, false, wake
}

// feedSnapshot returns the registry's snapshot and the index it holds
// every command through.
func (r *replayFSM) feedSnapshot() (raft.FSMSnapshot, uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pinned {
		return nil, 0, errFeedPinned
	}
	s, err := r.inner.Snapshot()
	return s, r.last, err
}

// applyFed applies a feed's entries in order. Entries the registry holds
// already are skipped; one that does not follow it ends with errFeedGap.
func (r *replayFSM) applyFed(es []feedEntry) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pinned {
		return 0, errFeedPinned
	}
	n := 0
	for _, e := range es {
		if e.index <= r.last {
			continue
		}
		if e.prev > r.last {
			return n, fmt.Errorf("%w: entry %d follows %d, the registry holds %d", errFeedGap, e.index, e.prev, r.last)
		}
		r.inner.Apply(&raft.Log{Index: e.index, Type: raft.LogCommand, Data: e.data})
		r.ring.add(feedEntry{index: e.index, prev: r.last, data: e.data})
		r.last = e.index
		n++
	}
	return n, nil
}

// restoreFed replaces the registry by a feed's snapshot holding every
// command through label; never by one older than what it holds.
func (r *replayFSM) restoreFed(label uint64, snap []byte) error {
	r.mu.Lock()
	if r.pinned {
		r.mu.Unlock()
		return errFeedPinned
	}
	if label <= r.last {
		r.mu.Unlock()
		return nil
	}
	err := r.inner.Restore(io.NopCloser(bytes.NewReader(snap)))
	if err == nil {
		r.last = label
		r.ring.reset(label)
	}
	r.mu.Unlock()
	if err == nil && r.restored != nil {
		r.restored()
	}
	return err
}

// --- the voter's side ---

// servesFeed reports whether this server serves feeds: a voter.
func (c *Consensus) servesFeed() bool {
	r, err := c.running()
	return err == nil && (c.isVoter() || r.State() == raft.Leader)
}

// feedInfoNow is what this voter tells its replicas now.
func (c *Consensus) feedInfoNow() feedInfo {
	return feedInfo{Stale: c.Stale(), Leader: c.LeaderID(), Voters: c.knownVoters(), Relay: true}
}

// knownVoters returns the voters of the newest configuration this server
// read (watchSuffrage), or, on a replica, those its feed named.
func (c *Consensus) knownVoters() []string {
	if !c.isVoter() {
		if v := c.feed.voterList(); len(v) > 0 {
			return v
		}
	}
	if v := c.configVoters.Load(); v != nil {
		return append([]string(nil), (*v)...)
	}
	return nil
}

// serveFeed streams the registry to a replica until either side ends it.
func (c *Consensus) serveFeed(conn net.Conn, body []byte) {
	// One frame buffer per feed, reused: at 100 nodes a busy voter sends
	// every registry change to a quarter of the cluster.
	var fb []byte
	write := func(kind byte, payload []byte) error {
		if len(payload)+1 > maxFrame {
			return errFrameTooLarge
		}
		fb = binary.BigEndian.AppendUint32(fb[:0], uint32(len(payload)+1))
		fb = append(append(fb, kind), payload...)
		_ = conn.SetWriteDeadline(time.Now().Add(feedWriteTimeout))
		_, err := conn.Write(fb)
		if cap(fb) > feedKeepBuffer {
			fb = nil // a snapshot piece or a large command: not kept
		}
		return err
	}
	refuse := func(why string) {
		info := c.feedInfoNow()
		info.Refused = why
		b, _ := json.Marshal(info)
		_ = write(feedRefusedFrame, b)
	}
	var req feedRequest
	if err := json.Unmarshal(body, &req); err != nil {
		refuse("bad request: " + err.Error())
		return
	}
	if !c.servesFeed() {
		refuse("not a voter")
		return
	}
	peer := ""
	if pi, ok := conn.(PeerIdentifier); ok {
		peer = pi.RemotePeerID()
		if _, known := c.cfg.FSM.Node(peer); !known {
			refuse("not a node of this registry")
			return
		}
	}
	// The replica sends nothing more: a read that ends means it closed
	// the stream (a write to a half-closed libp2p stream can succeed
	// for a long while).
	_ = conn.SetReadDeadline(time.Time{})
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		// One byte of buffer (io.Copy would hold an 8 KB one per
		// feed while it waits, 24 of them on a voter at 100 nodes).
		var b [1]byte
		_, _ = conn.Read(b[:])
	}()
	leaders, unsubscribe := c.SubscribeLeadership()
	defer unsubscribe()
	tick := time.NewTicker(feedKeepalive)
	defer tick.Stop()
	from, sendInfo := req.From, true
	c.feedServing.Add(1)
	defer c.feedServing.Add(-1)
	for {
		if !c.servesFeed() {
			refuse("no longer a voter")
			return
		}
		if sendInfo {
			b, _ := json.Marshal(c.feedInfoNow())
			if write(feedInfoFrame, b) != nil {
				return
			}
			sendInfo = false
		}
		entries, snapshot, pinned, wake := c.replay.feedFrom(from)
		switch {
		case pinned:
		case snapshot:
			label, err := c.sendFeedSnapshot(write)
			if err != nil {
				if !errors.Is(err, errFeedPinned) {
					c.log.Debug("feed snapshot failed", "replica", peer, "err", err)
					return
				}
				break
			}
			from = label
			continue
		case len(entries) > 0:
			if err := writeFeedEntries(write, entries); err != nil {
				return
			}
			from = entries[len(entries)-1].index
			continue
		}
		select {
		case <-wake:
		case _, ok := <-leaders:
			if !ok {
				return
			}
			sendInfo = true
		case <-tick.C:
			sendInfo = true
		case <-gone:
			return
		case <-c.ctx.Done():
			return
		}
	}
}

// writeFeedEntries sends entries in frames under maxFrame.
func writeFeedEntries(write func(byte, []byte) error, entries []feedEntry) error {
	var buf []byte
	for _, e := range entries {
		if len(buf) > 0 && len(buf)+20+len(e.data)+1 > maxFrame {
			if err := write(feedEntriesFrame, buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		buf = binary.BigEndian.AppendUint64(buf, e.index)
		buf = binary.BigEndian.AppendUint64(buf, e.prev)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(e.data)))
		buf = append(buf, e.data...)
	}
	if len(buf) == 0 {
		return nil
	}
	return write(feedEntriesFrame, buf)
}

// parseFeedEntries decodes an entries frame's payload.
func parseFeedEntries(b []byte) ([]feedEntry, error) {
	var out []feedEntry
	for len(b) > 0 {
		if len(b) < 20 {
			return nil, fmt.Errorf("feed: entry header cut short (%d bytes)", len(b))
		}
		e := feedEntry{index: binary.BigEndian.Uint64(b), prev: binary.BigEndian.Uint64(b[8:])}
		n := binary.BigEndian.Uint32(b[16:])
		b = b[20:]
		if uint64(n) > uint64(len(b)) {
			return nil, fmt.Errorf("feed: entry %d of %d bytes, %d left", e.index, n, len(b))
		}
		if e.prev >= e.index {
			return nil, fmt.Errorf("feed: entry %d follows %d", e.index, e.prev)
		}
		e.data = b[:n:n]
		b = b[n:]
		out = append(out, e)
	}
	return out, nil
}

// feedSink is a raft.SnapshotSink that sends a snapshot in pieces.
type feedSink struct {
	write func(byte, []byte) error
	buf   []byte
}

func (s *feedSink) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), feedSnapPiece-len(s.buf))
		s.buf = append(s.buf, p[:k]...)
		p = p[k:]
		if len(s.buf) == feedSnapPiece {
			if err := s.write(feedSnapDataFrame, s.buf); err != nil {
				return 0, err
			}
			s.buf = s.buf[:0]
		}
	}
	return n, nil
}

func (s *feedSink) Close() error {
	if len(s.buf) > 0 {
		if err := s.write(feedSnapDataFrame, s.buf); err != nil {
			return err
		}
	}
	return s.write(feedSnapEndFrame, nil)
}

func (s *feedSink) ID() string    { return "feed" }
func (s *feedSink) Cancel() error { return nil }

// sendFeedSnapshot sends the registry's snapshot and returns its label.
func (c *Consensus) sendFeedSnapshot(write func(byte, []byte) error) (uint64, error) {
	snap, label, err := c.replay.feedSnapshot()
	if err != nil {
		return 0, err
	}
	defer snap.Release()
	if err := write(feedSnapshotFrame, binary.BigEndian.AppendUint64(nil, label)); err != nil {
		return 0, err
	}
	if err := snap.Persist(&feedSink{write: write, buf: make([]byte, 0, feedSnapPiece)}); err != nil {
		return 0, err
	}
	return label, nil
}

// --- the replica's side ---

// feedView is what this replica last heard from its feed.
type feedView struct {
	mu     sync.Mutex
	server string    // the voter feeding this replica ("" when none)
	info   feedInfo  // its last info
	at     time.Time // its last frame
	voters []string  // the voters last named, kept across feeds
	// leaderHint: the leader last named, kept across feeds.
	leaderHint string
	// failed: each server's feeds that failed to start in a row (not
	// reached: the dial, or no answer) and when the last did; a replica
	// does not move back to such a voter for a while (failedLately).
	failed map[string]feedFailure
}

type feedFailure struct {
	at time.Time
	n  int
}

// feedMoveBackoff caps how long a replica stays off a first-choice voter
// it failed to reach. Gossip may have a voter alive that this replica
// cannot reach over libp2p; moving to it every FeedRebalance would leave
// the replica without a feed (and its writes without a leader) for a dial
// timeout each time.
const feedMoveBackoff = 10 * time.Minute

func (v *feedView) noteFailed(server string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.failed == nil {
		v.failed = map[string]feedFailure{}
	}
	for id, f := range v.failed {
		if time.Since(f.at) > feedMoveBackoff {
			delete(v.failed, id)
		}
	}
	f := v.failed[server]
	v.failed[server] = feedFailure{at: time.Now(), n: f.n + 1}
}

// failedLately reports whether a replica should not move to server yet:
// base after its first failure in a row, doubling with each further one up
// to feedMoveBackoff. A voter that restarted is moved back to soon; one
// that stays out of reach costs a dial every ten minutes at most.
func (v *feedView) failedLately(server string, base time.Duration) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	f, ok := v.failed[server]
	if !ok {
		return false
	}
	wait := feedMoveBackoff
	if f.n < 20 {
		wait = min(base<<(f.n-1), feedMoveBackoff)
	}
	return time.Since(f.at) < wait
}

func (v *feedView) leader() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.info.Leader != "" {
		return v.info.Leader
	}
	return v.leaderHint
}

func (v *feedView) voterList() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.voters...)
}

// fresh returns the leader the feed names while it is current: connected,
// heard from within feedSilence, and its voter not stale.
func (v *feedView) fresh() (leader string, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.server == "" || time.Since(v.at) > feedSilence || v.info.Stale || v.info.Leader == "" {
		return "", false
	}
	return v.info.Leader, true
}

// relayTarget returns the voter to send a write through: the one feeding
// this replica while the feed is current and that voter relays and is not
// itself the leader; else "" (write to the leader).
func (v *feedView) relayTarget() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.server == "" || !v.info.Relay || v.info.Stale || v.info.Leader == "" ||
		v.info.Leader == v.server || time.Since(v.at) > feedSilence {
		return ""
	}
	return v.server
}

func (v *feedView) heard(server string, info *feedInfo) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.server, v.at = server, time.Now()
	delete(v.failed, server) // reached
	if info != nil {
		v.info = *info
		if len(info.Voters) > 0 {
			v.voters = append(v.voters[:0], info.Voters...)
		}
		if info.Leader != "" {
			v.leaderHint = info.Leader
		}
	}
}

// hint keeps what a refusal named: the voters and the leader. It reports
// whether the voters differ from those known.
func (v *feedView) hint(info feedInfo) (changed bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(info.Voters) > 0 && !slices.Equal(v.voters, info.Voters) {
		v.voters = append(v.voters[:0], info.Voters...)
		changed = true
	}
	if info.Leader != "" {
		v.leaderHint = info.Leader
	}
	return changed
}

func (v *feedView) drop(server string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.server == server {
		v.server, v.info = "", feedInfo{}
	}
}

// isVoter reports whether this server counts as a voter: its newest
// configuration says so, and, unless raft's leader has been in touch
// within feedSilence, the voters a feed named last include it. A voter
// reaped while it was away still finds itself a voter in its own
// configuration, which never got the entry that removed it; the voters it
// asks for a feed say otherwise, and it follows the registry as a replica.
func (c *Consensus) isVoter() bool {
	if !c.voter.Load() {
		return false
	}
	if !c.Replica() {
		return true // raft's leader is in touch
	}
	v := c.feed.voterList()
	return len(v) == 0 || slices.Contains(v, c.cfg.LocalID)
}

// feedCandidates returns the servers to ask for a feed, best first: the
// voters last known, ordered by a hash of this server's and their ids, so
// that replicas spread over the voters, and the leader last, as it has the
// most to do; then feedProbe alive members, others each round. Any member
// that knows the voters names them in its refusal: a replica that knows no
// voter, or only voters that are gone (its feed named the first leader
// alone, and that leader died), finds the voters so. (Asking every member,
// as a first version did, made 95 replicas of a starting 100-node cluster
// open thousands of streams a second and cost the leader its leadership.)
func (c *Consensus) feedCandidates(round int) []string {
	voters := c.orderedVoters()
	known := map[string]bool{c.cfg.LocalID: true}
	for _, id := range voters {
		known[id] = true
	}
	var probe []string
	for _, m := range c.cfg.Members() {
		if m.State == MemberAlive && !known[m.ID] {
			probe = append(probe, m.ID)
		}
	}
	sort.Slice(probe, func(i, j int) bool { return c.feedScore(probe[i], round+1) > c.feedScore(probe[j], round+1) })
	if len(probe) > feedProbe {
		probe = probe[:feedProbe]
	}
	return append(voters, probe...)
}

// orderedVoters returns the voters this server knows but itself, in the
// order a replica asks them for a feed: by a hash of both ids, so that
// replicas spread evenly, and the leader last.
func (c *Consensus) orderedVoters() []string {
	leader := c.LeaderID()
	if leader == "" {
		leader = c.feed.leader()
	}
	known := map[string]bool{c.cfg.LocalID: true}
	var voters []string
	for _, id := range c.knownVoters() {
		if !known[id] {
			known[id] = true
			voters = append(voters, id)
		}
	}
	sort.Slice(voters, func(i, j int) bool {
		if (voters[i] == leader) != (voters[j] == leader) {
			return voters[j] == leader
		}
		return c.feedScore(voters[i], 0) > c.feedScore(voters[j], 0)
	})
	return voters
}

// feedScore orders server id among a replica's candidates (salt: the
// round, for the members probed).
func (c *Consensus) feedScore(id string, salt int) uint64 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, c.cfg.LocalID)
	_, _ = io.WriteString(h, id)
	_, _ = fmt.Fprint(h, salt)
	return h.Sum64()
}

// memberAlive reports whether gossip has member id alive now: a dead
// voter not yet reaped is no place to move a feed to.
func (c *Consensus) memberAlive(id string) bool {
	for _, m := range c.cfg.Members() {
		if m.ID == id {
			return m.State == MemberAlive
		}
	}
	return false
}

// feedRebalanceAfter is how long a replica stays on a voter other than
// its first choice before it moves to that one: FeedRebalance plus up to
// as much again, spread by the replica's id, so that the replicas a voter
// took over from a dead one, or those that all followed the first
// leader, return over a while rather than at once.
func (c *Consensus) feedRebalanceAfter() time.Duration {
	h := fnv.New64a()
	_, _ = io.WriteString(h, c.cfg.LocalID)
	base := c.cfg.FeedRebalance
	return base + time.Duration(h.Sum64()%uint64(base+1))
}

// feedProbe: how many members besides the known voters a replica asks a
// round.
const feedProbe = 3

// followFeeds keeps this server fed while it is a replica: one feed at a
// time, from the first candidate that serves one. A refusal names the
// voters, so the candidates are chosen again after one.
func (c *Consensus) followFeeds() {
	defer c.wg.Done()
	wait := 50 * time.Millisecond
	for round := 0; ; round++ {
		if c.Replica() {
			for _, id := range c.feedCandidates(round) {
				start := time.Now()
				err := c.followFeed(id)
				if time.Since(start) > feedSilence {
					wait = 50 * time.Millisecond // it ran: try again at once
				} else if err != nil && !errors.Is(err, errFeedMove) && !errors.Is(err, errFeedRefused) {
					// Not reached (a refusal answers at once:
					// a voter not yet serving, as at the start).
					c.feed.noteFailed(id)
				}
				if err == nil || c.ctx.Err() != nil || !c.Replica() {
					break
				}
				c.log.Debug("registry feed ended", "server", id, "err", err)
				if errors.Is(err, errFeedMove) || errors.Is(err, errFeedRedirect) {
					// Choose again: away from the leader, or among
					// the voters a refusal named.
					wait = min(wait, 50*time.Millisecond)
					break
				}
			}
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, feedRetryMax)
	}
}

// followFeed follows the registry from server id until the feed ends; nil
// when this server stopped being a replica.
func (c *Consensus) followFeed(id string) error {
	ctx, cancel := context.WithTimeout(c.ctx, forwardIOTimeout)
	conn, err := c.cfg.Network.Dial(ctx, id, ConnForward)
	cancel()
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(c.ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	defer c.feed.drop(id)
	req, _ := json.Marshal(feedRequest{From: c.replay.index()})
	_ = conn.SetWriteDeadline(time.Now().Add(forwardIOTimeout))
	if err := writeFrame(conn, append([]byte{opFeed}, req...)); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	var snap []byte
	var label uint64
	inSnap := false
	start := time.Now()
	rebalanceAt := start.Add(c.feedRebalanceAfter())
	var staleSince time.Time // the voter has said it is stale since
	for {
		if !c.Replica() {
			return nil
		}
		_ = conn.SetReadDeadline(time.Now().Add(feedSilence))
		frame, err := readFrame(conn)
		if err != nil {
			return err
		}
		if len(frame) == 0 {
			return fmt.Errorf("%w: empty frame", errFeedRefused)
		}
		kind, body := frame[0], frame[1:]
		switch kind {
		case '{': // a forward answer: a server that knows no feed
			return fmt.Errorf("%w: %s", errFeedRefused, body)
		case feedRefusedFrame, feedInfoFrame:
			var info feedInfo
			if err := json.Unmarshal(body, &info); err != nil {
				return fmt.Errorf("feed info: %w", err)
			}
			if kind == feedRefusedFrame {
				if c.feed.hint(info) {
					return fmt.Errorf("%w: %w: %s", errFeedRefused, errFeedRedirect, info.Refused)
				}
				return fmt.Errorf("%w: %s", errFeedRefused, info.Refused)
			}
			c.feed.heard(id, &info)
			if info.Leader != "" && !info.Stale {
				c.noteContact(time.Now())
			}
			c.noteLeader(c.LeaderID())
			switch {
			case !info.Stale:
				staleSince = time.Time{}
			case staleSince.IsZero():
				staleSince = time.Now()
			case time.Since(staleSince) > feedSilence:
				// A voter cut off from the leader (or without one)
				// while others may have one: try them.
				return fmt.Errorf("%w: the voter is stale", errFeedMove)
			}
			if info.Leader == id && len(info.Voters) > 1 && time.Since(start) > feedSilence {
				// Fed by the leader (the only voter that answered, or
				// the only one there was): other voters serve replicas
				// so that the leader need not.
				return errFeedMove
			}
			if now := time.Now(); now.After(rebalanceAt) {
				if first := c.orderedVoters(); len(first) > 1 && first[0] != id && c.memberAlive(first[0]) && !c.feed.failedLately(first[0], c.cfg.FeedRebalance) {
					// On a voter other than this replica's first
					// choice (it took over from a dead one, or the
					// replicas followed a leader that lost its
					// leadership): back to the first, so that each
					// voter feeds its share. At 100 nodes one voter
					// fed 80 replicas after an early leader change.
					return fmt.Errorf("%w: to %s", errFeedMove, first[0])
				}
				rebalanceAt = now.Add(c.feedRebalanceAfter()) // look again a while later
			}
		case feedEntriesFrame:
			es, err := parseFeedEntries(body)
			if err != nil {
				return err
			}
			if _, err := c.replay.applyFed(es); err != nil {
				return err
			}
			c.feed.heard(id, nil)
		case feedSnapshotFrame:
			if len(body) != 8 {
				return fmt.Errorf("feed: snapshot label of %d bytes", len(body))
			}
			label, snap, inSnap = binary.BigEndian.Uint64(body), snap[:0], true
		case feedSnapDataFrame:
			if !inSnap || len(snap)+len(body) > feedMaxSnapshot {
				return errors.New("feed: snapshot piece out of place or too large")
			}
			snap = append(snap, body...)
			c.feed.heard(id, nil)
		case feedSnapEndFrame:
			if !inSnap {
				return errors.New("feed: snapshot end out of place")
			}
			inSnap = false
			if err := c.replay.restoreFed(label, snap); err != nil {
				return fmt.Errorf("feed snapshot: %w", err)
			}
			c.feedRestores.Add(1)
			snap = nil
			c.feed.heard(id, nil)
		default:
			return fmt.Errorf("feed: unknown frame %q", kind)
		}
	}
}

// FeedStats is what this server does with registry feeds.
type FeedStats struct {
	// Serving is how many replicas this voter feeds now.
	Serving int
	// Source is the voter feeding this replica now ("" when none: a
	// voter, or a replica between feeds).
	Source string
	// Snapshots counts the snapshots this server restored from feeds.
	Snapshots int64
	// Relayed counts the replicas' writes this voter forwarded to the
	// leader and had an answer for.
	Relayed int64
}

// FeedStats returns this server's feed figures. Safe for concurrent use.
func (c *Consensus) FeedStats() FeedStats {
	c.feed.mu.Lock()
	src := c.feed.server
	c.feed.mu.Unlock()
	return FeedStats{Serving: int(c.feedServing.Load()), Source: src, Snapshots: c.feedRestores.Load(), Relayed: c.relayed.Load()}
}

// Replica reports whether this server follows the registry by feed:
// raft's leader has not been in touch for feedSilence (this server is
// outside the configuration, or a non-voter of an older leader gone quiet,
// or a voter that was reaped while away and never learned of its removal,
// or a voter without a leader, to whom a feed brings nothing but the voters'
// view). A server that raft's leader replicates to keeps raft's copy; the
// leader itself is none. Safe for concurrent use.
func (c *Consensus) Replica() bool {
	r, err := c.running()
	if err != nil || r.State() == raft.Leader {
		return false
	}
	lc := r.LastContact()
	return lc.IsZero() || time.Since(lc) > feedSilence
}

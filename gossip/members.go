package gossip

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// The member table.
//
// memberlist v0.5.4 keeps each node's state (alive, suspect, dead, left) in
// an unexported field that shadows Node.State, so every *Node it hands out
// says alive, and Members() leaves dead and left nodes out
// (hashicorp/memberlist#293). Gossip therefore keeps its own table, fed
// only by memberlist's public interfaces, the way serf does:
//
//   - EventDelegate: NotifyJoin and NotifyUpdate make a member alive (both
//     mean memberlist accepted a newer alive message); NotifyLeave makes it
//     left when the member announced its leave first, failed (dead)
//     otherwise.
//   - Leave intents: Leave broadcasts "<node> is leaving" (msgLeaveIntent)
//     and waits until it has been sent before memberlist's own leave
//     message. Every member that learns an intent for the first time
//     broadcasts it again, so it spreads like memberlist's own messages and
//     ahead of them. An intent that arrives after the departure still turns
//     a recent failure into a leave.
//   - Suspicion has no public hook. memberlist logs, and then applies, its
//     own verdict when this node's probe of a member fails ("Suspect <node>
//     has failed, no acks received"): that line marks the member suspect
//     here. A direct probe of it that succeeds again (PingDelegate), a
//     newer alive message (join, update) or its departure ends the
//     suspicion. So "suspect" is this node's own probes' view: a member
//     that only others suspect stays alive here until this node's next
//     probe of it fails, or until it is declared dead. memberlist probes
//     every member in turn, faster than a suspicion times out, so a member
//     that crashed is seen alive → suspect → dead.
//   - Dead and left members are forgotten reapAfter (memberlist's
//     GossipToTheDeadTime) after they departed, when memberlist forgets
//     them too.

// leaveIntentTTL is how long a leave intent stays valid: a departure
// within that time after the intent is a leave, not a failure. It must
// exceed the wait for the intent's broadcast (intentWait) plus the time
// memberlist's leave message needs to spread (a few gossip rounds), and
// stay short so that a stale intent cannot turn a later crash of a
// restarted member into a leave.
const leaveIntentTTL = 30 * time.Second

// intentMsgLen is the size of a leave intent without the node name: the
// type byte and an 8-byte nonce.
const intentMsgLen = 1 + 8

// leaveIntent is a leave intent as learnt from the network.
type leaveIntent struct {
	nonce uint64    // the announcing Gossip's random nonce: duplicates are recognised
	at    time.Time // when it was learnt here
}

// tableEntry is one member and when its state last changed.
type tableEntry struct {
	m     Member
	since time.Time
}

// memberTable is this node's view of the cluster. Safe for concurrent use;
// it never calls out, so memberlist may call into it with its locks held.
type memberTable struct {
	now       func() time.Time
	reapAfter time.Duration

	mu      sync.Mutex
	members map[string]*tableEntry
	intents map[string]leaveIntent
	// byState indexes the members in the states that are scanned on
	// every event (dead and left, to reap) or every probe interval
	// (suspect, to recheck), so that neither scan is over every member: a
	// join storm of n members is n events at each member.
	byState map[State]map[string]struct{}
	// byIP counts the members at each IP address (whatever their state,
	// until reaped), for the transport to tell a member's streams from a
	// stranger's (membersAt).
	byIP map[netip.Addr]int
	// version moves on every change list would show (a member added,
	// changed or reaped), so a reader that scans the members can skip a
	// scan when nothing changed.
	version uint64
}

func newMemberTable(reapAfter time.Duration) *memberTable {
	return &memberTable{
		now:       time.Now,
		reapAfter: reapAfter,
		members:   map[string]*tableEntry{},
		intents:   map[string]leaveIntent{},
		byState: map[State]map[string]struct{}{
			StateSuspect: {}, StateDead: {}, StateLeft: {},
		},
		byIP: map[netip.Addr]int{},
	}
}

// setState moves an entry to state st, keeping since and the index.
func (t *memberTable) setState(e *tableEntry, st State, now time.Time) {
	if e.m.State != st {
		e.since = now
		t.version++
	}
	if idx := t.byState[e.m.State]; idx != nil {
		delete(idx, e.m.ID)
	}
	e.m.State = st
	if idx := t.byState[st]; idx != nil {
		idx[e.m.ID] = struct{}{}
	}
}

// set records m in state st and returns a copy for an event.
func (t *memberTable) set(m Member, st State) Member {
	now := t.now()
	e := t.members[m.ID]
	if e == nil {
		e = &tableEntry{since: now, m: Member{ID: m.ID, State: st}}
		t.members[m.ID] = e
	}
	t.setState(e, st, now)
	m.State = st
	m.Meta = cloneMeta(m.Meta)
	t.countIP(e.m.Addr, -1)
	t.countIP(m.Addr, 1)
	e.m = m
	t.version++ // the address or metadata may have changed
	t.reapLocked(now)
	return e.member()
}

// member returns a copy of the entry's member, with Since.
func (e *tableEntry) member() Member {
	m := cloneMember(e.m)
	m.Since = e.since
	return m
}

// join records a member that memberlist reports joined (new, or back after
// dying or leaving).
func (t *memberTable) join(m Member) Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.members[m.ID]; e != nil && (e.m.State == StateDead || e.m.State == StateLeft) {
		// Back after a departure: the intent belonged to its earlier life.
		// (A member joining for the first time keeps an intent learnt
		// before its join: it may be leaving already.)
		delete(t.intents, m.ID)
	}
	return t.set(m, StateAlive)
}

// update records a member whose metadata changed: memberlist accepted a
// newer alive message from it, so it is alive.
func (t *memberTable) update(m Member) Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.set(m, StateAlive)
}

// depart records a member that memberlist reports gone: left if it
// announced its leave within leaveIntentTTL, else dead.
func (t *memberTable) depart(m Member) Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := StateDead
	if in, ok := t.intents[m.ID]; ok && t.now().Sub(in.at) <= leaveIntentTTL {
		st = StateLeft
	}
	return t.set(m, st)
}

// suspect marks an alive member suspect; false if it is not alive here.
func (t *memberTable) suspect(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.members[id]
	if e == nil || e.m.State != StateAlive {
		return false
	}
	t.setState(e, StateSuspect, t.now())
	return true
}

// answered records that a member answered a direct probe: a suspect one
// is alive again.
func (t *memberTable) answered(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.members[id]
	if e == nil || e.m.State != StateSuspect {
		return false
	}
	t.setState(e, StateAlive, t.now())
	return true
}

// suspects returns the members suspect here (id and address only).
func (t *memberTable) suspects() []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Member
	for id := range t.byState[StateSuspect] {
		e := t.members[id]
		out = append(out, Member{ID: id, Addr: e.m.Addr, State: StateSuspect})
	}
	return out
}

// intent records a leave intent. fresh says it was not known yet (the
// caller passes it on); when the member departed as failed within
// leaveIntentTTL, the intent came late and the member is now left: left
// is then true and m is the member for an EventLeave.
func (t *memberTable) intent(id string, nonce uint64) (fresh, left bool, m Member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if in, ok := t.intents[id]; ok && in.nonce == nonce {
		return false, false, Member{}
	}
	t.intents[id] = leaveIntent{nonce: nonce, at: now}
	e := t.members[id]
	if e != nil && e.m.State == StateDead && now.Sub(e.since) <= leaveIntentTTL {
		t.setState(e, StateLeft, now)
		return true, true, e.member()
	}
	return true, false, Member{}
}

// get returns one member as list would.
func (t *memberTable) get(id string) (Member, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reapLocked(t.now())
	e, ok := t.members[id]
	if !ok {
		return Member{}, false
	}
	return e.member(), true
}

// states returns every member's state by id (what list returns, without
// copying the members).
func (t *memberTable) states() map[string]State {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reapLocked(t.now())
	out := make(map[string]State, len(t.members))
	for id, e := range t.members {
		out[id] = e.m.State
	}
	return out
}

// changes returns the table's version: it moves whenever list's result
// would change.
func (t *memberTable) changes() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reapLocked(t.now())
	return t.version
}

// touch moves the version without a change of the table (the Gossip
// closed: Members is empty from then on).
func (t *memberTable) touch() {
	t.mu.Lock()
	t.version++
	t.mu.Unlock()
}

// list returns every member, sorted by id, dead and left ones until they
// are reaped.
func (t *memberTable) list() []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reapLocked(t.now())
	out := make([]Member, 0, len(t.members))
	for _, e := range t.members {
		out = append(out, e.member())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// countIP adds d to the members counted at addr's IP ("ip:port"; an
// address that does not parse is not counted).
func (t *memberTable) countIP(addr string, d int) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return
	}
	ip := ap.Addr().Unmap()
	if t.byIP[ip] += d; t.byIP[ip] <= 0 {
		delete(t.byIP, ip)
	}
}

// membersAt is how many members this node knows at ip, in any state until
// they are reaped (this node included).
func (t *memberTable) membersAt(ip netip.Addr) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byIP[ip.Unmap()]
}

// reapLocked forgets members departed longer than reapAfter and intents
// older than leaveIntentTTL.
func (t *memberTable) reapLocked(now time.Time) {
	for _, st := range []State{StateDead, StateLeft} {
		idx := t.byState[st]
		for id := range idx {
			if e := t.members[id]; now.Sub(e.since) > t.reapAfter {
				t.countIP(e.m.Addr, -1)
				delete(t.members, id)
				delete(idx, id)
				t.version++
			}
		}
	}
	for id, in := range t.intents {
		if now.Sub(in.at) > leaveIntentTTL {
			delete(t.intents, id)
		}
	}
}

func cloneMember(m Member) Member {
	m.Meta = cloneMeta(m.Meta)
	return m
}

// encodeIntent builds the gossip message announcing that id leaves.
func encodeIntent(id string, nonce uint64) []byte {
	b := make([]byte, intentMsgLen, intentMsgLen+len(id))
	b[0] = msgLeaveIntent
	binary.BigEndian.PutUint64(b[1:], nonce)
	return append(b, id...)
}

// decodeIntent parses a leave intent; ok is false for a malformed one.
func decodeIntent(b []byte) (id string, nonce uint64, ok bool) {
	if len(b) <= intentMsgLen || b[0] != msgLeaveIntent || len(b) > MaxBroadcastSize ||
		bytes.IndexByte(b[intentMsgLen:], 0) >= 0 {
		return "", 0, false
	}
	return string(b[intentMsgLen:]), binary.BigEndian.Uint64(b[1:intentMsgLen]), true
}

// intentBroadcast spreads a leave intent; a newer intent for the same node
// replaces a queued one. notify, when set, is closed once it has been sent
// as often as memberlist sends a broadcast (or was replaced).
type intentBroadcast struct {
	id     string
	msg    []byte
	notify chan struct{}
	once   sync.Once
}

var _ memberlist.Broadcast = (*intentBroadcast)(nil)

func (b *intentBroadcast) Message() []byte { return b.msg }

func (b *intentBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*intentBroadcast)
	return ok && o.id == b.id
}

func (b *intentBroadcast) Finished() {
	if b.notify != nil {
		b.once.Do(func() { close(b.notify) })
	}
}

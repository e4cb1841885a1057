package gossip

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMemberTable(t *testing.T) {
	const reap = 2 * leaveIntentTTL
	type step struct {
		op    string // join, update, depart, suspect, answered, intent, wait
		nonce uint64 // intent
		d     time.Duration
		ret   string // suspect, answered: "true"/"false"; intent: "fresh", "fresh left" or "known"
		want  State  // a's state afterwards
		gone  bool   // a is not listed afterwards
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"crash: suspect, dead, forgotten", []step{
			{op: "join", want: StateAlive},
			{op: "suspect", ret: "true", want: StateSuspect},
			{op: "suspect", ret: "false", want: StateSuspect},
			{op: "depart", want: StateDead},
			{op: "wait", d: reap, want: StateDead},
			{op: "wait", d: time.Second, gone: true},
		}},
		{"suspicion ends when a probe is answered", []step{
			{op: "join", want: StateAlive},
			{op: "suspect", ret: "true", want: StateSuspect},
			{op: "answered", ret: "true", want: StateAlive},
			{op: "answered", ret: "false", want: StateAlive},
		}},
		{"suspicion ends with a newer alive message", []step{
			{op: "join", want: StateAlive},
			{op: "suspect", ret: "true", want: StateSuspect},
			{op: "update", want: StateAlive},
		}},
		{"only alive members become suspect", []step{
			{op: "suspect", ret: "false", gone: true},
			{op: "join", want: StateAlive},
			{op: "depart", want: StateDead},
			{op: "suspect", ret: "false", want: StateDead},
			{op: "answered", ret: "false", want: StateDead},
		}},
		{"graceful leave", []step{
			{op: "join", want: StateAlive},
			{op: "intent", nonce: 1, ret: "fresh", want: StateAlive},
			{op: "wait", d: leaveIntentTTL},
			{op: "depart", want: StateLeft},
			{op: "wait", d: reap + time.Second, gone: true},
		}},
		{"a known intent is not passed on again", []step{
			{op: "join", want: StateAlive},
			{op: "intent", nonce: 1, ret: "fresh", want: StateAlive},
			{op: "intent", nonce: 1, ret: "known", want: StateAlive},
			{op: "intent", nonce: 2, ret: "fresh", want: StateAlive},
		}},
		{"a late intent turns a failure into a leave", []step{
			{op: "join", want: StateAlive},
			{op: "depart", want: StateDead},
			{op: "intent", nonce: 1, ret: "fresh left", want: StateLeft},
		}},
		{"an intent long after the failure changes nothing", []step{
			{op: "join", want: StateAlive},
			{op: "depart", want: StateDead},
			{op: "wait", d: leaveIntentTTL + time.Second, want: StateDead},
			{op: "intent", nonce: 1, ret: "fresh", want: StateDead},
		}},
		{"an intent expires", []step{
			{op: "join", want: StateAlive},
			{op: "intent", nonce: 1, ret: "fresh", want: StateAlive},
			{op: "wait", d: leaveIntentTTL + time.Second, want: StateAlive},
			{op: "depart", want: StateDead},
		}},
		{"a member back after leaving forgets its old intent", []step{
			{op: "join", want: StateAlive},
			{op: "intent", nonce: 1, ret: "fresh", want: StateAlive},
			{op: "depart", want: StateLeft},
			{op: "join", want: StateAlive},
			{op: "depart", want: StateDead},
		}},
		{"an intent learnt before the join is kept", []step{
			{op: "intent", nonce: 1, ret: "fresh", gone: true},
			{op: "join", want: StateAlive},
			{op: "depart", want: StateLeft},
		}},
		{"a dead member comes back", []step{
			{op: "join", want: StateAlive},
			{op: "depart", want: StateDead},
			{op: "join", want: StateAlive},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			tb := newMemberTable(reap)
			tb.now = func() time.Time { return now }
			a := Member{ID: "a", Addr: "10.0.0.1:7946", Meta: Meta{Name: "hive-a", Tags: map[string]string{"k": "v"}}}
			for i, s := range tt.steps {
				var ret string
				switch s.op {
				case "join":
					m := tb.join(a)
					require.Equal(t, StateAlive, m.State)
				case "update":
					require.Equal(t, StateAlive, tb.update(a).State)
				case "depart":
					require.Equal(t, s.want, tb.depart(a).State, "step %d: depart", i)
				case "suspect":
					ret = boolString(tb.suspect("a"))
				case "answered":
					ret = boolString(tb.answered("a"))
				case "intent":
					fresh, left, m := tb.intent("a", s.nonce)
					switch {
					case left:
						ret = "fresh left"
						require.Equal(t, StateLeft, m.State)
						require.Equal(t, "hive-a", m.Meta.Name)
					case fresh:
						ret = "fresh"
					default:
						ret = "known"
					}
				case "wait":
					now = now.Add(s.d)
				default:
					t.Fatalf("unknown op %q", s.op)
				}
				require.Equal(t, s.ret, ret, "step %d: %s", i, s.op)
				requireIndexed(t, tb)
				one, found := tb.get(a.ID) // before list: get reaps too
				ms := tb.list()
				if s.gone {
					require.Empty(t, ms, "step %d: %s", i, s.op)
					require.False(t, found, "step %d: %s", i, s.op)
					continue
				}
				if len(ms) == 1 {
					require.True(t, found)
					require.Equal(t, ms[0], one, "get returns what list does")
				}
				if s.want == 0 && s.op == "wait" {
					continue
				}
				require.Len(t, ms, 1, "step %d: %s", i, s.op)
				require.Equal(t, s.want, ms[0].State, "step %d: %s", i, s.op)
				require.Equal(t, a.Addr, ms[0].Addr)
			}
		})
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestMemberTableListsSortedCopies(t *testing.T) {
	tb := newMemberTable(time.Minute)
	for _, id := range []string{"c", "a", "b"} {
		tb.join(Member{ID: id, Meta: Meta{Tags: map[string]string{"id": id}, P2PAddrs: []string{"/ip4/1.2.3.4/tcp/1"}}})
	}
	ms := tb.list()
	require.Equal(t, []string{"a", "b", "c"}, []string{ms[0].ID, ms[1].ID, ms[2].ID})
	ms[0].Meta.Tags["id"] = "changed"
	ms[0].Meta.P2PAddrs[0] = "changed"
	again := tb.list()
	require.Equal(t, "a", again[0].Meta.Tags["id"], "callers get copies")
	require.Equal(t, "/ip4/1.2.3.4/tcp/1", again[0].Meta.P2PAddrs[0])
}

func TestIntentCodec(t *testing.T) {
	msg := encodeIntent("12D3KooWabc", 0xdeadbeef01)
	id, nonce, ok := decodeIntent(msg)
	require.True(t, ok)
	require.Equal(t, "12D3KooWabc", id)
	require.Equal(t, uint64(0xdeadbeef01), nonce)
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"type only", []byte{msgLeaveIntent}},
		{"no node", encodeIntent("", 1)},
		{"wrong type", append([]byte{msgUser}, msg[1:]...)},
		{"NUL in node", encodeIntent("a\x00b", 1)},
		{"too large", encodeIntent(string(make([]byte, MaxBroadcastSize)), 1)},
	}
	for _, tt := range tests {
		_, _, ok := decodeIntent(tt.msg)
		require.False(t, ok, tt.name)
	}
}

func TestObserveLogLearnsSuspicion(t *testing.T) {
	g := &Gossip{table: newMemberTable(time.Minute), log: slog.New(slog.DiscardHandler)}
	g.table.join(Member{ID: "12D3KooWpeer"})
	g.table.join(Member{ID: "other"})
	for _, line := range []string{
		"Failed UDP ping: 12D3KooWpeer (timeout reached)",
		"Suspect other has failed",
		"Marking 12D3KooWpeer as failed, suspect timeout reached (0 peer confirmations)",
	} {
		g.observeLog([]byte(line))
	}
	for _, m := range g.table.list() {
		require.Equal(t, StateAlive, m.State, "%s: only the suspect line counts", m.ID)
	}
	w := newSlogWriter(slog.New(slog.DiscardHandler))
	w.observe = g.observeLog
	_, _ = w.Write([]byte("[INFO] memberlist: Suspect 12D3KooWpeer has failed, no acks received\n"))
	st := map[string]State{}
	for _, m := range g.table.list() {
		st[m.ID] = m.State
	}
	require.Equal(t, map[string]State{"12D3KooWpeer": StateSuspect, "other": StateAlive}, st)
}

// requireIndexed checks the table's state index against its entries.
func requireIndexed(t *testing.T, tb *memberTable) {
	t.Helper()
	for st, idx := range tb.byState {
		for id := range idx {
			e := tb.members[id]
			require.NotNil(t, e, "indexed %s member %s is not in the table", st, id)
			require.Equal(t, st, e.m.State, "member %s", id)
		}
	}
	for id, e := range tb.members {
		if idx := tb.byState[e.m.State]; idx != nil {
			require.Contains(t, idx, id, "%s member %s not indexed", e.m.State, id)
		}
	}
}

// TestMemberTableSince: a member's Since is when its state last changed
// here: news that keeps the state (a metadata update) keeps it, every
// change moves it, and list, get and the events' members agree.
func TestMemberTableSince(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newMemberTable(time.Hour)
	tb.now = func() time.Time { return now }
	a := Member{ID: "a", Addr: "10.0.0.1:7946"}
	step := func(d time.Duration) time.Time { now = now.Add(d); return now }
	check := func(want time.Time, ev Member) {
		t.Helper()
		if ev.ID != "" { // the operation returned the member for an event
			require.Equal(t, want, ev.Since, "the event's member")
		}
		one, ok := tb.get("a")
		require.True(t, ok)
		require.Equal(t, want, one.Since)
		require.Equal(t, want, tb.list()[0].Since)
	}
	joined := step(time.Second)
	check(joined, tb.join(a))
	step(time.Second)
	check(joined, tb.update(a)) // still alive
	suspected := step(time.Second)
	require.True(t, tb.suspect("a"))
	check(suspected, Member{})
	back := step(time.Second)
	require.True(t, tb.answered("a"))
	check(back, Member{})
	died := step(time.Second)
	check(died, tb.depart(a))
	left := step(time.Second)
	_, wasLeft, m := tb.intent("a", 7)
	require.True(t, wasLeft)
	check(left, m)
	rejoined := step(time.Second)
	check(rejoined, tb.join(a))
}

// TestMemberTableVersion: the version moves with every change list would
// show (including a reap), and with nothing else; states agrees with list.
func TestMemberTableVersion(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newMemberTable(time.Minute)
	tb.now = func() time.Time { return now }
	a, b := Member{ID: "a", Addr: "10.0.0.1:7946"}, Member{ID: "b", Addr: "10.0.0.2:7946"}
	last := tb.changes()
	steps := []struct {
		name  string
		op    func()
		moves bool
	}{
		{"join a", func() { tb.join(a) }, true},
		{"join b", func() { tb.join(b) }, true},
		{"list", func() { tb.list() }, false},
		{"get", func() { tb.get("a") }, false},
		{"update (new metadata)", func() { tb.update(Member{ID: "a", Addr: a.Addr, Meta: Meta{Name: "x"}}) }, true},
		{"suspect", func() { require.True(t, tb.suspect("a")) }, true},
		{"suspect again", func() { require.False(t, tb.suspect("a")) }, false},
		{"answered", func() { require.True(t, tb.answered("a")) }, true},
		{"answered, not suspect", func() { require.False(t, tb.answered("a")) }, false},
		{"depart", func() { tb.depart(b) }, true},
		{"time passes within the reap grace", func() { now = now.Add(30 * time.Second) }, false},
		{"b is reaped", func() { now = now.Add(31 * time.Second) }, true},
		{"touch", tb.touch, true},
	}
	for _, s := range steps {
		s.op()
		v := tb.changes()
		if s.moves {
			require.Greater(t, v, last, s.name)
		} else {
			require.Equal(t, last, v, s.name)
		}
		last = v
		states := tb.states()
		want := map[string]State{}
		for _, m := range tb.list() {
			want[m.ID] = m.State
		}
		require.Equal(t, want, states, s.name)
	}
}

// TestMemberTableMembersAt: the members counted at an IP follow joins,
// address changes, departures (still counted) and reaps, so the transport
// tells a member's streams from a stranger's.
func TestMemberTableMembersAt(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newMemberTable(time.Minute)
	tb.now = func() time.Time { return now }
	ip1, ip2 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	steps := []struct {
		name     string
		op       func()
		at1, at2 int
	}{
		{"empty", func() {}, 0, 0},
		{"join a at 1", func() { tb.join(Member{ID: "a", Addr: "10.0.0.1:7946"}) }, 1, 0},
		{"join b at 1, another port", func() { tb.join(Member{ID: "b", Addr: "10.0.0.1:7947"}) }, 2, 0},
		{"update a, same address", func() { tb.update(Member{ID: "a", Addr: "10.0.0.1:7946"}) }, 2, 0},
		{"b moves to 2", func() { tb.update(Member{ID: "b", Addr: "10.0.0.2:7947"}) }, 1, 1},
		{"b dies, still known", func() { tb.depart(Member{ID: "b", Addr: "10.0.0.2:7947"}) }, 1, 1},
		{"b reaped", func() { now = now.Add(2 * time.Minute); tb.join(Member{ID: "c", Addr: "[::ffff:10.0.0.1]:7946"}) }, 2, 0},
	}
	for _, s := range steps {
		s.op()
		require.Equal(t, s.at1, tb.membersAt(ip1), s.name)
		require.Equal(t, s.at2, tb.membersAt(ip2), s.name)
	}
}

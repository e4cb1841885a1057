package consensus

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
)

func hostCmd(t testing.TB, name string) []byte {
	t.Helper()
	b, err := fsm.Encode(fsm.UpsertHost{Host: fsm.Host{Name: name, Host: "10.0.0.1", State: fsm.HostKnown}})
	require.NoError(t, err)
	return b
}

func TestFeedRing(t *testing.T) {
	var r feedRing
	r.maxEntries = 3
	r.reset(10)
	out, snap, _ := r.after(10, 100)
	require.False(t, snap)
	require.Empty(t, out)
	_, snap, _ = r.after(9, 100)
	require.True(t, snap, "older than the floor")

	prev := uint64(10)
	for _, i := range []uint64{12, 13, 17} {
		r.add(feedEntry{index: i, prev: prev, data: []byte{byte(i)}})
		prev = i
	}
	out, snap, _ = r.after(12, 100)
	require.False(t, snap)
	require.Equal(t, []uint64{13, 17}, indexes(out))
	out, _, _ = r.after(14, 1)
	require.Equal(t, []uint64{17}, indexes(out), "a replica between two commands gets the next")

	_, _, wake := r.after(17, 100)
	r.add(feedEntry{index: 20, prev: 17})
	select {
	case <-wake:
	default:
		t.Fatal("an added entry wakes the waiters")
	}
	// Four entries in a ring of three: the oldest goes, the floor with it.
	require.Equal(t, uint64(12), r.floor)
	_, snap, _ = r.after(10, 100)
	require.True(t, snap)
	out, snap, _ = r.after(12, 100)
	require.False(t, snap)
	require.Equal(t, []uint64{13, 17, 20}, indexes(out))
}

func indexes(es []feedEntry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.index)
	}
	return out
}

func TestApplyFed(t *testing.T) {
	hint, err := openAppliedHint(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { hint.Close() })
	w := &replayFSM{inner: fsm.New(nil), hint: hint}
	es := []feedEntry{
		{index: 3, prev: 0, data: hostCmd(t, "a")},
		{index: 5, prev: 3, data: hostCmd(t, "b")},
	}
	n, err := w.applyFed(es)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, uint64(5), w.index())

	// Again: held already, skipped.
	n, err = w.applyFed(es)
	require.NoError(t, err)
	require.Zero(t, n)

	// An entry after a command this registry does not hold: a gap.
	_, err = w.applyFed([]feedEntry{{index: 9, prev: 7, data: hostCmd(t, "c")}})
	require.ErrorIs(t, err, errFeedGap)
	_, ok := w.inner.Host("c")
	require.False(t, ok)

	require.Zero(t, w.appliedByRaft(), "what a feed applied is not persisted as raft's")

	// Raft's entries the feed applied are skipped; later ones apply.
	require.Nil(t, w.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: hostCmd(t, "raft-dup")}))
	_, ok = w.inner.Host("raft-dup")
	require.False(t, ok)
	w.Apply(&raft.Log{Index: 6, Type: raft.LogCommand, Data: hostCmd(t, "raft")})
	_, ok = w.inner.Host("raft")
	require.True(t, ok)
	require.Equal(t, uint64(6), w.index())
	require.Equal(t, uint64(6), w.appliedByRaft())

	// A snapshot older than the registry is not restored; a newer one is.
	var old bytes.Buffer
	require.NoError(t, fsm.WriteSnapshot(&old, fsm.New(nil).State()))
	require.NoError(t, w.restoreFed(4, old.Bytes()))
	_, ok = w.inner.Host("a")
	require.True(t, ok, "an older snapshot leaves the registry")
	require.NoError(t, w.restoreFed(8, old.Bytes()))
	_, ok = w.inner.Host("a")
	require.False(t, ok)
	require.Equal(t, uint64(8), w.index())
	require.Error(t, w.restoreFed(9, []byte("junk")))
	require.Equal(t, uint64(8), w.index(), "a bad snapshot changes nothing")

	// While raft restores its own snapshot, a feed applies nothing.
	require.NoError(t, w.Restore(nopCloser{bytes.NewReader(old.Bytes())}))
	_, err = w.applyFed([]feedEntry{{index: 30, prev: 8, data: hostCmd(t, "d")}})
	require.ErrorIs(t, err, errFeedPinned)
	require.ErrorIs(t, w.restoreFed(40, old.Bytes()), errFeedPinned)
	// Raft's next entry sets the index again.
	w.Apply(&raft.Log{Index: 31, Type: raft.LogCommand, Data: hostCmd(t, "e")})
	require.Equal(t, uint64(31), w.index())
	entries, snap, pinned, _ := w.feedFrom(30)
	require.False(t, pinned)
	require.False(t, snap)
	require.Equal(t, []uint64{31}, indexes(entries))
	_, snap, _, _ = w.feedFrom(29)
	require.True(t, snap, "before raft's restore: only a snapshot")
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func TestFeedEntriesRoundTrip(t *testing.T) {
	es := []feedEntry{{index: 2, prev: 1, data: []byte("x")}, {index: 9, prev: 2, data: nil}, {index: 10, prev: 9, data: bytes.Repeat([]byte("y"), 300)}}
	var frames [][]byte
	require.NoError(t, writeFeedEntries(func(kind byte, b []byte) error {
		require.Equal(t, feedEntriesFrame, kind)
		frames = append(frames, append([]byte(nil), b...))
		return nil
	}, es))
	var got []feedEntry
	for _, f := range frames {
		out, err := parseFeedEntries(f)
		require.NoError(t, err)
		got = append(got, out...)
	}
	require.Equal(t, indexes(es), indexes(got))
	require.Equal(t, es[2].data, got[2].data)

	// Entries that would pass maxFrame together go in several frames.
	big := bytes.Repeat([]byte("z"), fsm.MaxCommandSize)
	frames = nil
	require.NoError(t, writeFeedEntries(func(_ byte, b []byte) error {
		require.LessOrEqual(t, len(b)+1, maxFrame)
		frames = append(frames, b)
		return nil
	}, []feedEntry{{index: 1, data: big}, {index: 2, prev: 1, data: big}}))
	require.Len(t, frames, 2)
}

func TestParseFeedEntriesRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"short header":    make([]byte, 19),
		"length past end": append(make([]byte, 16), 0, 0, 0, 9),
		"prev not before": {0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0},
	} {
		_, err := parseFeedEntries(b)
		require.Error(t, err, name)
	}
}

func FuzzParseFeedEntries(f *testing.F) {
	var seed []byte
	_ = writeFeedEntries(func(_ byte, b []byte) error { seed = b; return nil },
		[]feedEntry{{index: 2, prev: 1, data: []byte("x")}, {index: 3, prev: 2}})
	f.Add(seed)
	f.Add([]byte{})
	f.Add(make([]byte, 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := parseFeedEntries(b)
		if err != nil {
			return
		}
		var out []byte
		require.NoError(t, writeFeedEntries(func(_ byte, p []byte) error { out = append(out, p...); return nil }, es))
		require.True(t, bytes.Equal(b, out), "a parsed frame writes back the same")
	})
}

func TestReconcileKeepsReplicasOutOfRaft(t *testing.T) {
	replica := func(id string) Member { m := member(id, MemberAlive); m.Replica = true; return m }
	known := registry(t, fsm.Node{ID: "r1", Name: "hive-r1", State: fsm.NodeAlive}, fsm.Node{ID: "r2", Name: "hive-r2", State: fsm.NodeAlive})
	tests := []struct {
		name    string
		servers []raft.Server
		members []Member
		want    []string
		voters  int
	}{
		{"voters full: a replica stays out",
			[]raft.Server{voter("self"), voter("x"), voter("y")},
			[]Member{replica("r1")}, nil, 3},
		{"voters full: a replica's non-voter seat of an older leader goes",
			[]raft.Server{voter("self"), voter("x"), voter("y"), nonvoter("r1")},
			[]Member{replica("r1")}, []string{"remove r1"}, 3},
		{"an older build is still a non-voter",
			[]raft.Server{voter("self"), voter("x"), voter("y")},
			[]Member{member("old", MemberAlive)}, []string{"add nonvoter old"}, 3},
		{"room: a replica is a voter at once",
			[]raft.Server{voter("self"), voter("x")},
			[]Member{replica("r1")}, []string{"add voter r1"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := &fakeOps{fail: map[string]bool{}}
			p := testPass(t, ops, known, tt.servers)
			for _, m := range tt.members {
				p.handleAliveMember(m)
			}
			var log []string
			for _, l := range ops.log {
				if l[:3] != "ups" && l[:3] != "set" {
					log = append(log, l)
				}
			}
			require.Equal(t, tt.want, log)
			require.Equal(t, tt.voters, p.voters)
		})
	}

	// A voter's seat left free is taken by an alive replica the registry
	// knows, non-voters first.
	ops := &fakeOps{fail: map[string]bool{}}
	p := testPass(t, ops, known, []raft.Server{voter("self")})
	members := []Member{replica("r2"), replica("r1"), replica("unknown"), member("old", MemberAlive)}
	p.promoteNonvoters(func(string) bool { return true }, func() []Member { return members })
	require.Equal(t, []string{"add voter r1", "add voter r2"}, ops.log)
	require.Equal(t, 3, p.voters)
	require.NoError(t, errors.Join(p.errs...), fmt.Sprint(p.errs))
}

// Raft's restore at start (the local snapshot raft restored itself) pins
// the registry until raft's next entry, which a replica never gets:
// unpinStart takes raft's applied index instead; a later restore is left
// pinned.
func TestUnpinStart(t *testing.T) {
	var snap bytes.Buffer
	require.NoError(t, fsm.WriteSnapshot(&snap, fsm.New(nil).State()))
	w := &replayFSM{inner: fsm.New(nil)}
	require.NoError(t, w.Restore(nopCloser{bytes.NewReader(snap.Bytes())}))
	_, err := w.applyFed([]feedEntry{{index: 41, prev: 40, data: hostCmd(t, "a")}})
	require.ErrorIs(t, err, errFeedPinned)
	w.unpinStart(func() uint64 { return 40 })
	n, err := w.applyFed([]feedEntry{{index: 41, prev: 40, data: hostCmd(t, "a")}})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, uint64(40), w.appliedByRaft())

	require.NoError(t, w.Restore(nopCloser{bytes.NewReader(snap.Bytes())}))
	w.unpinStart(func() uint64 { return 50 })
	_, err = w.applyFed([]feedEntry{{index: 51, prev: 50, data: hostCmd(t, "b")}})
	require.ErrorIs(t, err, errFeedPinned, "a leader's restore stays pinned")
}

// TestRelayTarget: a replica writes through the voter feeding it only
// while that feed is current and the voter says it relays and is not the
// leader; otherwise to the leader itself.
func TestRelayTarget(t *testing.T) {
	fresh := time.Now()
	for _, tc := range []struct {
		name   string
		server string
		info   feedInfo
		at     time.Time
		want   string
	}{
		{"relaying voter", "v1", feedInfo{Leader: "l", Relay: true}, fresh, "v1"},
		{"no feed", "", feedInfo{Leader: "l", Relay: true}, fresh, ""},
		{"older voter", "v1", feedInfo{Leader: "l"}, fresh, ""},
		{"fed by the leader", "l", feedInfo{Leader: "l", Relay: true}, fresh, ""},
		{"stale voter", "v1", feedInfo{Leader: "l", Relay: true, Stale: true}, fresh, ""},
		{"no leader known", "v1", feedInfo{Relay: true}, fresh, ""},
		{"feed silent", "v1", feedInfo{Leader: "l", Relay: true}, fresh.Add(-2 * feedSilence), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &feedView{server: tc.server, info: tc.info, at: tc.at}
			require.Equal(t, tc.want, v.relayTarget())
		})
	}
}

// TestFeedMoveBackoff: a replica does not move back to a voter it failed
// to reach for a while that doubles with each failure in a row, up to
// feedMoveBackoff, and forgets the failures once it is fed by it.
func TestFeedMoveBackoff(t *testing.T) {
	const base = time.Minute
	var v feedView
	require.False(t, v.failedLately("a", base))
	v.noteFailed("a")
	require.True(t, v.failedLately("a", base))
	require.False(t, v.failedLately("b", base))
	age := func(d time.Duration) {
		v.mu.Lock()
		f := v.failed["a"]
		f.at = time.Now().Add(-d)
		v.failed["a"] = f
		v.mu.Unlock()
	}
	age(base + time.Second)
	require.False(t, v.failedLately("a", base), "one failure: base")
	v.noteFailed("a")
	age(base + time.Second)
	require.True(t, v.failedLately("a", base), "two in a row: twice base")
	for range 30 {
		v.noteFailed("a")
	}
	age(feedMoveBackoff - time.Second)
	require.True(t, v.failedLately("a", base))
	age(feedMoveBackoff + time.Second)
	require.False(t, v.failedLately("a", base), "capped")

	v.noteFailed("a")
	v.heard("a", nil)
	require.False(t, v.failedLately("a", base), "fed by it: forgotten")
}

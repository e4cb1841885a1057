package gossip

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	waitFor = 20 * time.Second
	tick    = 10 * time.Millisecond
)

// kvState is a small StateDelegate: a replicated string map (push/pull)
// plus a log of broadcast messages received.
type kvState struct {
	mu   sync.Mutex
	kv   map[string]string
	msgs []string
}

func newKV(kv map[string]string) *kvState { return &kvState{kv: kv} }

func (s *kvState) LocalState() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(s.kv)
	return b
}

func (s *kvState) MergeRemoteState(buf []byte) {
	var in map[string]string
	if json.Unmarshal(buf, &in) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range in {
		s.kv[k] = v
	}
}

func (s *kvState) NotifyMsg(msg []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, string(msg))
}

func (s *kvState) snapshot() (map[string]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kv := make(map[string]string, len(s.kv))
	for k, v := range s.kv {
		kv[k] = v
	}
	return kv, slices.Clone(s.msgs)
}

type opt func(*Config)

func newMember(t *testing.T, id string, opts ...opt) *Gossip {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Secret = []byte("cluster-secret")
	cfg.Profile = ProfileLocal
	cfg.Meta = Meta{Name: "hive-" + id, Version: "test"}
	for _, o := range opts {
		o(&cfg)
	}
	g, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Close() })
	require.NoError(t, g.Start(context.Background()))
	return g
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// cluster starts n members, all joined through the first.
func cluster(t *testing.T, ids ...string) []*Gossip {
	t.Helper()
	var gs []*Gossip
	for _, id := range ids {
		g := newMember(t, id)
		if len(gs) > 0 {
			n, err := g.Join(ctxT(t), []string{gs[0].Addr()})
			require.NoError(t, err)
			require.Equal(t, 1, n)
		}
		gs = append(gs, g)
	}
	for _, g := range gs {
		waitState(t, g, len(ids), StateAlive)
	}
	return gs
}

// waitState waits until g sees exactly n members, all in state st.
func waitState(t *testing.T, g *Gossip, n int, st State) {
	t.Helper()
	require.Eventually(t, func() bool {
		ms := g.Members()
		if len(ms) != n {
			return false
		}
		for _, m := range ms {
			if m.State != st {
				return false
			}
		}
		return true
	}, waitFor, tick, "%s: want %d members %s, have %+v", g.LocalMember().ID, n, st, g.Members())
}

func stateOf(g *Gossip, id string) (State, bool) {
	m, ok := g.Member(id)
	return m.State, ok
}

// waitEvent reads g's events until one of type typ about id arrives.
func waitEvent(t *testing.T, g *Gossip, typ EventType, id string) Event {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case ev, ok := <-g.Events():
			require.True(t, ok, "events closed")
			if ev.Type == typ && ev.Member.ID == id {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s: no %s event for %s", g.LocalMember().ID, typ, id)
		}
	}
}

// waitJoins reads g's events until it has seen a join for every id.
func waitJoins(t *testing.T, g *Gossip, ids ...string) {
	t.Helper()
	want := make(map[string]bool)
	for _, id := range ids {
		want[id] = true
	}
	timeout := time.After(waitFor)
	for len(want) > 0 {
		select {
		case ev, ok := <-g.Events():
			require.True(t, ok, "events closed")
			if ev.Type == EventJoin {
				require.Equal(t, StateAlive, ev.Member.State)
				delete(want, ev.Member.ID)
			}
		case <-timeout:
			t.Fatalf("%s: no join events for %v", g.LocalMember().ID, want)
		}
	}
}

func TestThreeMembersJoinAndSeeMeta(t *testing.T) {
	gs := cluster(t, "a", "b", "c")
	for _, g := range gs {
		require.Equal(t, 3, g.NumMembers())
		for _, other := range gs {
			m, ok := g.Member(other.LocalMember().ID)
			require.True(t, ok)
			require.Equal(t, other.Addr(), m.Addr)
			require.Equal(t, "hive-"+m.ID, m.Meta.Name)
			require.Equal(t, "test", m.Meta.Version)
		}
	}
	// Every member saw itself and the others join.
	for _, g := range gs {
		waitJoins(t, g, "a", "b", "c")
	}
	lm := gs[0].LocalMember()
	require.Equal(t, "a", lm.ID)
	require.Equal(t, StateAlive, lm.State)
	require.Equal(t, "hive-a", lm.Meta.Name)
}

func TestUpdateMetaPropagates(t *testing.T) {
	gs := cluster(t, "a", "b", "c")
	m := fullMeta()
	m.Name = "renamed"
	require.NoError(t, gs[1].UpdateMeta(ctxT(t), m))
	require.Equal(t, m, gs[1].LocalMember().Meta)
	for _, g := range []*Gossip{gs[0], gs[2]} {
		ev := waitEvent(t, g, EventUpdate, "b")
		require.Equal(t, m, ev.Member.Meta)
		require.Eventually(t, func() bool {
			got, ok := g.Member("b")
			return ok && got.Meta.Name == "renamed"
		}, waitFor, tick)
		got, _ := g.Member("b")
		require.Equal(t, m, got.Meta)
	}

	// Oversized metadata is refused and changes nothing.
	big := m
	big.P2PAddrs = slices.Repeat([]string{"/ip6/fd00:1234:5678:9abc:def0:1234:5678:9abc/tcp/7835"}, 10)
	require.ErrorIs(t, gs[1].UpdateMeta(ctxT(t), big), ErrMetaTooLarge)
	require.Equal(t, m, gs[1].LocalMember().Meta)
}

func TestGracefulLeaveShowsLeft(t *testing.T) {
	gs := cluster(t, "a", "b", "c")
	require.NoError(t, gs[2].Leave(ctxT(t)))
	require.Equal(t, StateLeft, gs[2].LocalMember().State)
	for _, g := range gs[:2] {
		ev := waitEvent(t, g, EventLeave, "c")
		require.Equal(t, StateLeft, ev.Member.State)
		require.Eventually(t, func() bool {
			st, ok := stateOf(g, "c")
			return ok && st == StateLeft
		}, waitFor, tick)
		require.Equal(t, 2, g.NumMembers())
	}
	require.NoError(t, gs[2].Close())
	// Neither survivor ever considered c failed.
	for _, g := range gs[:2] {
		st, ok := stateOf(g, "c")
		require.True(t, !ok || st == StateLeft, "state %s", st)
	}
	_, err := gs[2].Join(ctxT(t), []string{gs[0].Addr()})
	require.ErrorIs(t, err, ErrClosed)
}

func TestCrashedMemberBecomesSuspectThenDead(t *testing.T) {
	gs := cluster(t, "a", "b", "c")
	// Watch a's view of c from before the crash, recording every state.
	var mu sync.Mutex
	var seen []State
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if st, ok := stateOf(gs[0], "c"); ok {
				mu.Lock()
				if len(seen) == 0 || seen[len(seen)-1] != st {
					seen = append(seen, st)
				}
				mu.Unlock()
				if st == StateDead {
					return
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	require.NoError(t, gs[2].Close()) // no Leave: a crash as far as gossip knows
	ev := waitEvent(t, gs[0], EventFailed, "c")
	require.Equal(t, StateDead, ev.Member.State)
	waitEvent(t, gs[1], EventFailed, "c")
	select {
	case <-done: // the watcher saw c dead
	case <-time.After(waitFor):
		close(stop)
		<-done
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []State{StateAlive, StateSuspect, StateDead}, seen)
	require.Equal(t, 2, gs[0].NumMembers())
}

func TestWrongSecretCannotJoin(t *testing.T) {
	a := newMember(t, "a")
	intruder := newMember(t, "x", func(c *Config) { c.Secret = []byte("another-secret") })
	n, err := intruder.Join(ctxT(t), []string{a.Addr()})
	require.Error(t, err)
	require.Zero(t, n)
	require.Len(t, a.Members(), 1)
	require.Len(t, intruder.Members(), 1)
	// Nor can a member with the right secret join the intruder.
	b := newMember(t, "b")
	_, err = b.Join(ctxT(t), []string{intruder.Addr()})
	require.Error(t, err)
	// The right secret still works.
	_, err = b.Join(ctxT(t), []string{a.Addr()})
	require.NoError(t, err)
	waitState(t, a, 2, StateAlive)
}

func TestNamedBroadcastReplacesQueued(t *testing.T) {
	stA, stB := newKV(map[string]string{}), newKV(map[string]string{})
	a := newMember(t, "a", func(c *Config) { c.Delegate = stA })
	// Alone, a has nobody to gossip to, so its queue holds what we put in.
	require.NoError(t, a.Broadcast("load/a", []byte("v1")))
	require.NoError(t, a.Broadcast("load/a", []byte("v2")))
	require.NoError(t, a.Broadcast("other", []byte("o1")))
	require.Equal(t, 2, a.QueuedBroadcasts(), "v2 replaced v1")
	require.NoError(t, a.Broadcast("", []byte("u1")))
	require.NoError(t, a.Broadcast("", []byte("u2")))
	require.Equal(t, 4, a.QueuedBroadcasts(), "unkeyed messages are independent")
	require.ErrorIs(t, a.Broadcast("k", make([]byte, MaxBroadcastSize+1)), ErrMessageTooLarge)

	b := newMember(t, "b", func(c *Config) { c.Delegate = stB })
	_, err := b.Join(ctxT(t), []string{a.Addr()})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, msgs := stB.snapshot()
		return slices.Contains(msgs, "v2") && slices.Contains(msgs, "o1") &&
			slices.Contains(msgs, "u1") && slices.Contains(msgs, "u2")
	}, waitFor, tick)
	require.Eventually(t, func() bool { return a.QueuedBroadcasts() == 0 }, waitFor, tick)
	_, msgs := stB.snapshot()
	require.NotContains(t, msgs, "v1", "the replaced message was never sent")
	_, own := stA.snapshot()
	require.Empty(t, own, "a member does not receive its own broadcasts")
}

func TestPushPullMergesState(t *testing.T) {
	stA := newKV(map[string]string{"a": "1"})
	stB := newKV(map[string]string{"b": "2"})
	a := newMember(t, "a", func(c *Config) { c.Delegate = stA })
	b := newMember(t, "b", func(c *Config) { c.Delegate = stB })
	_, err := b.Join(ctxT(t), []string{a.Addr()})
	require.NoError(t, err)
	want := map[string]string{"a": "1", "b": "2"}
	for _, st := range []*kvState{stA, stB} {
		require.Eventually(t, func() bool {
			kv, _ := st.snapshot()
			return len(kv) == 2
		}, waitFor, tick)
		kv, _ := st.snapshot()
		require.Equal(t, want, kv)
	}
	// Later changes arrive by periodic push/pull (2 s in the local profile).
	stA.mu.Lock()
	stA.kv["late"] = "3"
	stA.mu.Unlock()
	require.Eventually(t, func() bool {
		kv, _ := stB.snapshot()
		return kv["late"] == "3"
	}, waitFor, tick)
}

func TestEventsNeverBlockMemberlist(t *testing.T) {
	// One-slot buffers nobody drains: events are dropped, gossip goes on.
	small := func(c *Config) { c.EventBuffer = 1 }
	a := newMember(t, "a", small)
	b := newMember(t, "b", small)
	c := newMember(t, "c", small)
	for _, g := range []*Gossip{b, c} {
		_, err := g.Join(ctxT(t), []string{a.Addr()})
		require.NoError(t, err)
	}
	for _, g := range []*Gossip{a, b, c} {
		waitState(t, g, 3, StateAlive)
	}
	require.NoError(t, b.UpdateMeta(ctxT(t), Meta{Name: "updated"}))
	require.Eventually(t, func() bool {
		m, ok := a.Member("b")
		return ok && m.Meta.Name == "updated"
	}, waitFor, tick)
	ev := <-a.Events()
	require.Equal(t, EventJoin, ev.Type)
	require.Equal(t, "a", ev.Member.ID, "the first event is our own join")
}

func TestLifecycle(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID = "a"
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Secret = []byte("s")
	cfg.Profile = ProfileLocal
	g, err := New(cfg)
	require.NoError(t, err)
	require.Empty(t, g.Members())
	require.Empty(t, g.Addr())
	require.Equal(t, 1, g.NumMembers())
	_, err = g.Join(ctxT(t), []string{"127.0.0.1:1"})
	require.ErrorIs(t, err, ErrNotStarted)
	require.ErrorIs(t, g.Leave(ctxT(t)), ErrNotStarted)
	require.NoError(t, g.UpdateMeta(ctxT(t), Meta{Name: "before-start"}))

	require.NoError(t, g.Start(ctxT(t)))
	require.ErrorIs(t, g.Start(ctxT(t)), ErrAlreadyStarted)
	require.NotEmpty(t, g.Addr())
	m, ok := g.Member("a")
	require.True(t, ok)
	require.Equal(t, "before-start", m.Meta.Name)
	_, err = g.Join(ctxT(t), nil)
	require.ErrorIs(t, err, ErrBadConfig)
	_, err = g.Join(ctxT(t), []string{"127.0.0.1:1"})
	require.Error(t, err, "nobody listens there")

	require.NoError(t, g.Leave(ctxT(t)), "leaving alone is immediate")
	require.ErrorIs(t, g.Leave(ctxT(t)), ErrLeft)
	require.ErrorIs(t, g.UpdateMeta(ctxT(t), Meta{}), ErrLeft)
	require.NoError(t, g.Close())
	require.NoError(t, g.Close(), "idempotent")
	for range g.Events() { //nolint:revive // drain until closed
	}
	require.ErrorIs(t, g.Start(ctxT(t)), ErrClosed)
	require.Nil(t, g.Members())
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"no node id", func(c *Config) { c.NodeID = "" }},
		{"no secret", func(c *Config) { c.Secret = nil }},
		{"bad profile", func(c *Config) { c.Profile = "wan" }},
		{"bind without port", func(c *Config) { c.BindAddr = "127.0.0.1" }},
		{"bind hostname", func(c *Config) { c.BindAddr = "example.com:1" }},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "1.2.3.4:x" }},
		{"bad meta", func(c *Config) { c.Meta.BootstrapExpect = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeID, cfg.Secret = "a", []byte("s")
			tt.mutate(&cfg)
			_, err := New(cfg)
			require.ErrorIs(t, err, ErrBadConfig)
		})
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.Secret = "a", []byte("s")
	cfg.Meta.Name = string(make([]byte, 600))
	_, err := New(cfg)
	require.ErrorIs(t, err, ErrMetaTooLarge)
}

func TestDeriveKey(t *testing.T) {
	k := deriveKey([]byte("s"))
	require.Len(t, k, 32)
	require.Equal(t, k, deriveKey([]byte("s")))
	require.NotEqual(t, k, deriveKey([]byte("t")))
}

// UpdateMeta whose wait ends before the broadcast has spread says so with
// ErrMetaSpreading, and the metadata is set: the others learn it without
// another update.
func TestUpdateMetaSpreadingIsSet(t *testing.T) {
	a := newMember(t, "a")
	b := newMember(t, "b")
	_, err := b.Join(ctxT(t), []string{a.Addr()})
	require.NoError(t, err)
	waitState(t, a, 2, StateAlive)
	waitState(t, b, 2, StateAlive)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, b.UpdateMeta(ctx, Meta{Name: "spreading"}), ErrMetaSpreading)
	require.Eventually(t, func() bool {
		m, ok := a.Member("b")
		return ok && m.Meta.Name == "spreading"
	}, waitFor, tick)
}

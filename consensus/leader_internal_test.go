package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/recent"
)

// fakeOps records what a reconcile pass changes and fails the operations
// listed in fail ("add b", "remove b", "propose b").
type fakeOps struct {
	log  []string
	fail map[string]bool
	// waited lists the proposals waited for, each with how many entries
	// the log had then.
	waited []string
}

var errRefused = errors.New("refused")

func (f *fakeOps) addServer(id string, voter bool) error {
	kind := "nonvoter"
	if voter {
		kind = "voter"
	}
	f.log = append(f.log, "add "+kind+" "+id)
	if f.fail["add "+id] {
		return errRefused
	}
	return nil
}

func (f *fakeOps) removeServer(id string) error {
	f.log = append(f.log, "remove "+id)
	if f.fail["remove "+id] {
		return errRefused
	}
	return nil
}

func (f *fakeOps) propose(cmd fsm.Command) func() error {
	var s, id string
	switch c := cmd.(type) {
	case fsm.UpsertNode:
		id, s = c.Node.ID, fmt.Sprintf("upsert %s %s", c.Node.ID, c.Node.State)
	case fsm.SetNodeState:
		id, s = c.ID, fmt.Sprintf("set %s %s", c.ID, c.State)
	case fsm.DeleteNode:
		id, s = c.ID, "delete "+c.ID
	default:
		s = fmt.Sprintf("%T", cmd)
	}
	f.log = append(f.log, s)
	return func() error {
		f.waited = append(f.waited, fmt.Sprintf("%s after %d", s, len(f.log)))
		if f.fail["propose "+id] {
			return errRefused
		}
		return nil
	}
}

// registry returns a registry holding nodes.
func registry(t *testing.T, nodes ...fsm.Node) *fsm.State {
	t.Helper()
	f := fsm.New(nil)
	for i, n := range nodes {
		b, err := fsm.Encode(fsm.UpsertNode{Node: n})
		require.NoError(t, err)
		_, err = f.ApplyCommand(uint64(i+1), b)
		require.NoError(t, err)
	}
	return f.State()
}

func regNode(id string, st fsm.NodeState) fsm.Node {
	return fsm.Node{ID: id, Name: "hive-" + id, State: st, UpdatedAt: time.Unix(1, 0).UTC()}
}

func member(id string, st MemberState) Member { return Member{ID: id, Name: "hive-" + id, State: st} }

func voter(id string) raft.Server {
	return raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id), Suffrage: raft.Voter}
}

func nonvoter(id string) raft.Server {
	return raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id), Suffrage: raft.Nonvoter}
}

// testPass is a pass of a leader "self" allowing 3 voters.
func testPass(t *testing.T, ops reconcileOps, st *fsm.State, servers []raft.Server, leaving ...string) *reconcilePass {
	t.Helper()
	c := &Consensus{
		cfg:  Config{LocalID: "self", MaxVoters: 3, ReapGrace: time.Minute},
		log:  slog.New(slog.DiscardHandler),
		left: recent.New[string](leavingGrace),
	}
	for _, id := range leaving {
		c.markLeaving(id)
	}
	return c.newPass(ops, st, servers)
}

func TestReconcileMember(t *testing.T) {
	tests := []struct {
		name       string
		servers    []raft.Server
		nodes      []fsm.Node
		m          Member
		leaving    []string
		fail       []string
		want       []string
		wantVoters int
		wantSrv    raft.ServerSuffrage // b's suffrage afterwards; -1: not in the configuration
		wantErr    bool
	}{
		// alive
		{name: "alive new member becomes a voter while there is room",
			servers: []raft.Server{voter("self")}, m: member("b", MemberAlive),
			want: []string{"add voter b", "upsert b alive"}, wantVoters: 2, wantSrv: raft.Voter},
		{name: "alive new member is a non-voter when voters are full",
			servers: []raft.Server{voter("self"), voter("x"), voter("y")}, m: member("b", MemberAlive),
			want: []string{"add nonvoter b", "upsert b alive"}, wantVoters: 3, wantSrv: raft.Nonvoter},
		{name: "alive voter with a wrong address is re-added as a voter",
			servers: []raft.Server{voter("self"), voter("x"), voter("y"), {ID: "b", Address: "old", Suffrage: raft.Voter}},
			nodes:   []fsm.Node{regNode("b", fsm.NodeAlive)}, m: member("b", MemberAlive),
			want: []string{"add voter b"}, wantVoters: 4, wantSrv: raft.Voter},
		{name: "alive member already in step changes nothing",
			servers: []raft.Server{voter("self"), voter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeAlive)},
			m: member("b", MemberAlive), want: nil, wantVoters: 2, wantSrv: raft.Voter},
		{name: "alive again after a failure: only the state is written",
			servers: []raft.Server{voter("self"), voter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeFailed)},
			m: member("b", MemberAlive), want: []string{"set b alive"}, wantVoters: 2, wantSrv: raft.Voter},
		{name: "alive with a new name: the entry is rewritten",
			servers: []raft.Server{voter("self"), voter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeFailed)},
			m: Member{ID: "b", Name: "renamed", State: MemberAlive}, want: []string{"upsert b alive"}, wantVoters: 2, wantSrv: raft.Voter},
		{name: "alive member that asked to leave is not added",
			servers: []raft.Server{voter("self")}, m: member("b", MemberAlive), leaving: []string{"b"},
			want: []string{"upsert b alive"}, wantVoters: 1, wantSrv: -1},
		{name: "alive member raft refuses waits for the next pass",
			servers: []raft.Server{voter("self")}, m: member("b", MemberAlive), fail: []string{"add b"},
			want: []string{"add voter b"}, wantVoters: 1, wantSrv: -1, wantErr: true},
		{name: "a refused registry write is reported",
			servers: []raft.Server{voter("self"), voter("b")}, m: member("b", MemberAlive), fail: []string{"propose b"},
			want: []string{"upsert b alive"}, wantVoters: 2, wantSrv: raft.Voter, wantErr: true},
		// suspect
		{name: "suspect unknown member is registered alive",
			servers: []raft.Server{voter("self")}, m: member("b", MemberSuspect),
			want: []string{"upsert b alive"}, wantVoters: 1, wantSrv: -1},
		{name: "suspect known member changes nothing",
			servers: []raft.Server{voter("self"), voter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeAlive)},
			m: member("b", MemberSuspect), want: nil, wantVoters: 2, wantSrv: raft.Voter},
		// failed
		{name: "failed member stays in raft, marked failed",
			servers: []raft.Server{voter("self"), voter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeAlive)},
			m: member("b", MemberFailed), want: []string{"set b failed"}, wantVoters: 2, wantSrv: raft.Voter},
		{name: "failed unknown member is registered failed",
			servers: []raft.Server{voter("self")}, m: member("b", MemberFailed),
			want: []string{"upsert b failed"}, wantVoters: 1, wantSrv: -1},
		{name: "failed member already recorded changes nothing",
			servers: []raft.Server{voter("self"), voter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeFailed)},
			m: member("b", MemberFailed), want: nil, wantVoters: 2, wantSrv: raft.Voter},
		// left
		{name: "left voter is removed and marked left",
			servers: []raft.Server{voter("self"), voter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeAlive)},
			m: member("b", MemberLeft), want: []string{"remove b", "set b left"}, wantVoters: 1, wantSrv: -1},
		{name: "left non-voter is removed",
			servers: []raft.Server{voter("self"), nonvoter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeLeft)},
			m: member("b", MemberLeft), want: []string{"remove b"}, wantVoters: 1, wantSrv: -1},
		{name: "left member gone from raft and recorded changes nothing",
			servers: []raft.Server{voter("self")}, nodes: []fsm.Node{regNode("b", fsm.NodeLeft)},
			m: member("b", MemberLeft), want: nil, wantVoters: 1, wantSrv: -1},
		{name: "left member unknown to the registry is not written",
			servers: []raft.Server{voter("self")}, m: member("b", MemberLeft), want: nil, wantVoters: 1, wantSrv: -1},
		{name: "a failed removal keeps the voter count",
			servers: []raft.Server{voter("self"), voter("b")}, nodes: []fsm.Node{regNode("b", fsm.NodeAlive)},
			m: member("b", MemberLeft), fail: []string{"remove b"},
			want: []string{"remove b", "set b left"}, wantVoters: 2, wantSrv: -1, wantErr: true},
		// this server
		{name: "this server is never added", servers: nil, m: member("self", MemberAlive),
			want: []string{"upsert self alive"}, wantVoters: 0, wantSrv: -1},
		{name: "this server is never removed", servers: []raft.Server{voter("self")},
			nodes: []fsm.Node{regNode("self", fsm.NodeAlive)}, m: member("self", MemberLeft),
			want: []string{"set self left"}, wantVoters: 1, wantSrv: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := &fakeOps{fail: map[string]bool{}}
			for _, f := range tt.fail {
				ops.fail[f] = true
			}
			p := testPass(t, ops, registry(t, tt.nodes...), tt.servers, tt.leaving...)
			p.reconcileMember(tt.m)
			require.Equal(t, tt.want, ops.log)
			require.Equal(t, tt.wantVoters, p.voters)
			srv, ok := p.servers["b"]
			if tt.wantSrv < 0 {
				require.False(t, ok, "b in the configuration: %+v", srv)
			} else {
				require.True(t, ok)
				require.Equal(t, tt.wantSrv, srv.Suffrage)
				require.Equal(t, raft.ServerAddress("b"), srv.Address)
			}
			if tt.wantErr {
				require.ErrorIs(t, p.wait(), errRefused)
			} else {
				require.NoError(t, p.wait())
			}
		})
	}
}

func TestReconcileReaped(t *testing.T) {
	const grace = time.Minute
	tests := []struct {
		name       string
		servers    []raft.Server
		nodes      []fsm.Node
		members    []Member
		absentFor  map[string]time.Duration // absent since, before this pass
		want       []string
		wantKicks  []time.Duration
		wantAbsent []string
		wantVoters int
	}{
		{name: "a node gossip forgot is marked failed and waited for",
			servers: []raft.Server{voter("self"), voter("x")}, nodes: []fsm.Node{regNode("self", fsm.NodeAlive), regNode("x", fsm.NodeAlive)},
			members: []Member{member("self", MemberAlive)},
			want:    []string{"set x failed"}, wantKicks: []time.Duration{grace}, wantAbsent: []string{"x"}, wantVoters: 2},
		{name: "still within the grace",
			servers: []raft.Server{voter("self"), voter("x")}, nodes: []fsm.Node{regNode("x", fsm.NodeFailed)},
			absentFor: map[string]time.Duration{"x": 20 * time.Second},
			want:      nil, wantKicks: []time.Duration{40 * time.Second}, wantAbsent: []string{"x"}, wantVoters: 2},
		{name: "after the grace it leaves raft and the registry",
			servers: []raft.Server{voter("self"), voter("x")}, nodes: []fsm.Node{regNode("x", fsm.NodeFailed)},
			absentFor: map[string]time.Duration{"x": grace},
			want:      []string{"remove x", "delete x"}, wantAbsent: []string{"x"}, wantVoters: 1},
		{name: "a node outside raft is only deleted",
			servers: []raft.Server{voter("self")}, nodes: []fsm.Node{regNode("x", fsm.NodeLeft)},
			absentFor: map[string]time.Duration{"x": 2 * grace},
			want:      []string{"delete x"}, wantAbsent: []string{"x"}, wantVoters: 1},
		{name: "a node back in gossip is no longer absent",
			servers: []raft.Server{voter("self"), voter("x")}, nodes: []fsm.Node{regNode("x", fsm.NodeAlive)},
			members:   []Member{member("x", MemberAlive)},
			absentFor: map[string]time.Duration{"x": 2 * grace, "gone": time.Second},
			want:      nil, wantAbsent: nil, wantVoters: 2},
		{name: "this server is never reaped",
			servers: []raft.Server{voter("self")}, nodes: []fsm.Node{regNode("self", fsm.NodeAlive)},
			want: nil, wantAbsent: nil, wantVoters: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := &fakeOps{}
			p := testPass(t, ops, registry(t, tt.nodes...), tt.servers)
			var kicks []time.Duration
			p.kickAfter = func(d time.Duration, _ string) { kicks = append(kicks, d) }
			absent := map[string]time.Time{}
			for id, d := range tt.absentFor {
				absent[id] = p.clock.Add(-d)
			}
			members := map[string]Member{"self": member("self", MemberAlive)}
			for _, m := range tt.members {
				members[m.ID] = m
			}
			p.reconcileReaped(members, absent)
			require.Equal(t, tt.want, ops.log)
			require.Equal(t, tt.wantKicks, kicks)
			var ids []string
			for id := range absent {
				ids = append(ids, id)
			}
			require.ElementsMatch(t, tt.wantAbsent, ids)
			require.Equal(t, tt.wantVoters, p.voters)
		})
	}
}

func TestPromoteNonvoters(t *testing.T) {
	tests := []struct {
		name    string
		servers []raft.Server
		members []Member
		fail    []string
		want    []string
		voters  int
	}{
		{"alive non-voters fill the room in id order",
			[]raft.Server{voter("self"), nonvoter("c"), nonvoter("b"), nonvoter("d")},
			[]Member{member("b", MemberAlive), member("c", MemberAlive), member("d", MemberAlive)},
			nil, []string{"add voter b", "add voter c"}, 3},
		{"suspect, failed and unknown non-voters wait",
			[]raft.Server{voter("self"), nonvoter("b"), nonvoter("c"), nonvoter("d")},
			[]Member{member("b", MemberSuspect), member("c", MemberFailed)},
			nil, nil, 1},
		{"no room",
			[]raft.Server{voter("self"), voter("x"), voter("y"), nonvoter("b")},
			[]Member{member("b", MemberAlive)}, nil, nil, 3},
		{"a refused promotion leaves room for the next",
			[]raft.Server{voter("self"), voter("x"), nonvoter("b"), nonvoter("c")},
			[]Member{member("b", MemberAlive), member("c", MemberAlive)},
			[]string{"add b"}, []string{"add voter b", "add voter c"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := &fakeOps{fail: map[string]bool{}}
			for _, f := range tt.fail {
				ops.fail[f] = true
			}
			p := testPass(t, ops, registry(t), tt.servers)
			members := map[string]Member{}
			for _, m := range tt.members {
				members[m.ID] = m
			}
			p.promoteNonvoters(func(id string) bool { return members[id].State == MemberAlive }, func() []Member { return tt.members })
			require.Equal(t, tt.want, ops.log)
			require.Equal(t, tt.voters, p.voters)
		})
	}
}

func TestReconcilePassRun(t *testing.T) {
	st := registry(t, regNode("self", fsm.NodeAlive), regNode("gone", fsm.NodeAlive))
	servers := []raft.Server{voter("self"), nonvoter("b")}

	// Without this server in the view nothing is reaped: the view may be
	// an empty startup list.
	ops := &fakeOps{}
	absent := map[string]time.Time{}
	p := testPass(t, ops, st, servers)
	require.NoError(t, p.run(context.Background(), []Member{member("b", MemberAlive)}, absent))
	require.Equal(t, []string{"upsert b alive", "add voter b"}, ops.log, "b is promoted after its entry")
	require.Empty(t, absent)

	// With it: members in id order (duplicates and empty ids dropped), then
	// the reaping, then promotions.
	ops = &fakeOps{}
	p = testPass(t, ops, st, servers)
	p.kickAfter = func(time.Duration, string) {}
	view := []Member{member("self", MemberAlive), member("c", MemberAlive), {}, member("b", MemberFailed), member("b", MemberAlive)}
	require.NoError(t, p.run(context.Background(), view, absent))
	require.Equal(t, []string{"upsert b alive", "add voter c", "upsert c alive", "set gone failed", "add voter b"}, ops.log)
	require.Equal(t, []string{"upsert b alive after 5", "upsert c alive after 5", "set gone failed after 5"}, ops.waited,
		"the registry writes are waited for together at the pass's end, not one by one")
	require.Contains(t, absent, "gone")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, testPass(t, &fakeOps{}, st, servers).run(ctx, view, absent), context.Canceled)
}

// A pass over changed members does what a full pass does for them: it
// reconciles the members it is given in the gossip view, reaps the ones
// gossip forgot, promotes while there is room, and looks at no other
// member (the full pass's "gone" entry is not touched).
func TestReconcilePassMembers(t *testing.T) {
	st := registry(t, regNode("self", fsm.NodeAlive), regNode("gone", fsm.NodeAlive), regNode("forgot", fsm.NodeAlive))
	servers := []raft.Server{voter("self"), nonvoter("b"), nonvoter("forgot")}
	view := map[string]Member{"self": member("self", MemberAlive), "b": member("b", MemberAlive), "c": member("c", MemberFailed)}
	lookup := func(id string) (Member, bool) { m, ok := view[id]; return m, ok }
	var reapKicks []string
	ops := &fakeOps{}
	p := testPass(t, ops, st, servers)
	p.kickAfter = func(_ time.Duration, id string) { reapKicks = append(reapKicks, id) }
	absent := map[string]time.Time{"b": time.Now()}
	require.NoError(t, p.runMembers(context.Background(), []string{"b", "c", "forgot", "unknown"}, lookup, absent))
	require.Equal(t, []string{"upsert b alive", "upsert c failed", "set forgot failed", "add voter b"}, ops.log)
	require.Equal(t, []string{"forgot"}, reapKicks, "the absent node is looked at again when its grace ends")
	require.NotContains(t, absent, "b", "a member gossip knows is no longer absent")
	require.Contains(t, absent, "forgot")

	// Without this server in the view nothing is reaped.
	delete(view, "self")
	ops = &fakeOps{}
	p = testPass(t, ops, st, servers)
	require.NoError(t, p.runMembers(context.Background(), []string{"forgot"}, lookup, map[string]time.Time{}))
	require.Equal(t, []string{"add voter b"}, ops.log, "nothing reaped; promotion as in a full pass")
}

// TestReconcileBlindView: a leader whose gossip view sees fewer than a
// majority of the voters alive or suspect (its own gossip cut off while
// raft still reaches the others) marks nobody failed and reaps nobody, in
// a full pass and in a pass over changed members alike; with a majority
// in view it does both as before.
func TestReconcileBlindView(t *testing.T) {
	const grace = time.Minute
	servers := []raft.Server{voter("self"), voter("a"), voter("b"), voter("c"), voter("d"), nonvoter("e")}
	nodes := []fsm.Node{regNode("self", fsm.NodeAlive), regNode("a", fsm.NodeAlive), regNode("b", fsm.NodeAlive),
		regNode("c", fsm.NodeAlive), regNode("d", fsm.NodeFailed), regNode("e", fsm.NodeAlive)}
	tests := []struct {
		name string
		view []Member // "d" is never in it: gossip forgot it long ago
		want []string
	}{
		{name: "only itself in view",
			view: []Member{member("self", MemberAlive), member("a", MemberFailed), member("b", MemberFailed), member("c", MemberFailed), member("e", MemberAlive)}},
		{name: "two of five voters, a non-voter does not count",
			view: []Member{member("self", MemberAlive), member("a", MemberSuspect), member("b", MemberFailed), member("c", MemberFailed), member("e", MemberAlive)}},
		{name: "three of five voters",
			view: []Member{member("self", MemberAlive), member("a", MemberAlive), member("b", MemberSuspect), member("c", MemberFailed), member("e", MemberAlive)},
			want: []string{"set c failed", "remove d", "delete d"}},
	}
	for _, tt := range tests {
		for _, full := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/full=%v", tt.name, full), func(t *testing.T) {
				ops := &fakeOps{}
				p := testPass(t, ops, registry(t, nodes...), servers)
				p.kickAfter = func(time.Duration, string) {}
				absent := map[string]time.Time{"d": p.clock.Add(-2 * grace)}
				view := map[string]Member{}
				for _, m := range tt.view {
					view[m.ID] = m
				}
				if full {
					require.NoError(t, p.run(context.Background(), tt.view, absent))
				} else {
					lookup := func(id string) (Member, bool) { m, ok := view[id]; return m, ok }
					require.NoError(t, p.runMembers(context.Background(), []string{"a", "b", "c", "d"}, lookup, absent))
				}
				var changes []string
				for _, op := range ops.log {
					if !strings.HasPrefix(op, "upsert") && !strings.HasPrefix(op, "add") {
						changes = append(changes, op)
					}
				}
				require.Equal(t, tt.want, changes)
			})
		}
	}
}

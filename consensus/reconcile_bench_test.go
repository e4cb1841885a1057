package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/recent"
)

// BenchmarkReconcilePass measures one reconcile pass of the leader over n
// members whose registry entries and raft servers are in step (nothing to
// write), and one where a single member has failed (one registry write,
// recorded, not applied): the leader runs a full pass on every membership
// change, so this is its CPU cost per change, raft's commit not included.
//
//	go test -run '^$' -bench ReconcilePass ./consensus/
func BenchmarkReconcilePass(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 5000} {
		members, st, servers := inStep(b, n)
		c := &Consensus{
			cfg:  Config{LocalID: members[0].ID, MaxVoters: 5, ReapGrace: time.Minute},
			log:  slog.New(slog.DiscardHandler),
			left: recent.New[string](leavingGrace),
		}
		for _, change := range []bool{false, true} {
			list := append([]Member(nil), members...)
			name := fmt.Sprintf("members=%d/no-change", n)
			if change {
				list[n/2].State = MemberFailed
				name = fmt.Sprintf("members=%d/one-failed", n)
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					ops := &fakeOps{}
					p := c.newPass(ops, st, servers)
					if err := p.run(context.Background(), list, map[string]time.Time{}); err != nil {
						b.Fatal(err)
					}
					if change && len(ops.log) != 1 {
						b.Fatalf("writes: %v", ops.log)
					}
				}
			})
		}
	}
}

// BenchmarkReconcileChanged measures what the leader now runs on a
// membership change: a pass over the one member that changed (here one
// that failed: one registry write, recorded), looked up by id, against
// BenchmarkReconcilePass's full pass over all n.
//
//	go test -run '^$' -bench 'Reconcile(Pass|Changed)' ./consensus/
func BenchmarkReconcileChanged(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 5000} {
		members, st, servers := inStep(b, n)
		byID := make(map[string]Member, n)
		for _, m := range members {
			byID[m.ID] = m
		}
		failed := members[n/2]
		failed.State = MemberFailed
		byID[failed.ID] = failed
		lookup := func(id string) (Member, bool) { m, ok := byID[id]; return m, ok }
		c := &Consensus{
			cfg:  Config{LocalID: members[0].ID, MaxVoters: 5, ReapGrace: time.Minute},
			log:  slog.New(slog.DiscardHandler),
			left: recent.New[string](leavingGrace),
		}
		b.Run(fmt.Sprintf("members=%d/one-failed", n), func(b *testing.B) {
			for b.Loop() {
				ops := &fakeOps{}
				p := c.newPass(ops, st, servers)
				if err := p.runMembers(context.Background(), []string{failed.ID}, lookup, map[string]time.Time{}); err != nil {
					b.Fatal(err)
				}
				if len(ops.log) != 1 {
					b.Fatalf("writes: %v", ops.log)
				}
			}
		})
	}
}

// inStep returns n alive members, a registry that has them all and a raft
// configuration with five voters and the rest non-voters.
func inStep(tb testing.TB, n int) ([]Member, *fsm.State, []raft.Server) {
	tb.Helper()
	f := fsm.New(nil)
	members := make([]Member, n)
	servers := make([]raft.Server, n)
	for i := range members {
		id := fmt.Sprintf("12D3KooW%044d", i) // a peer id's length
		m := Member{ID: id, Name: fmt.Sprintf("hive-%04d", i), HTTPAddr: "10.0.0.1:7833", GossipAddr: "10.0.0.1:7946",
			P2PAddrs: []string{"/ip4/10.0.0.1/tcp/7947"}, Version: "1.0.0", State: MemberAlive}
		members[i] = m
		cmd, err := fsm.Encode(fsm.UpsertNode{Node: fsm.Node{ID: id, Name: m.Name, HTTPAddr: m.HTTPAddr, GossipAddr: m.GossipAddr,
			P2PAddrs: m.P2PAddrs, Version: m.Version, State: fsm.NodeAlive}})
		require.NoError(tb, err)
		_, err = f.ApplyCommand(uint64(i+1), cmd)
		require.NoError(tb, err)
		servers[i] = nonvoter(id)
		if i < 5 {
			servers[i] = voter(id)
		}
	}
	return members, f.State(), servers
}

package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// TestLeaderAddsNoMemberOfAnotherCluster: two nodes that each started
// alone with the same secret (each its own cluster, registry and CA) are
// joined by gossip. Neither leader adds the other to its raft
// configuration (raft would overwrite the newcomer's log but not what it
// has applied: two registries mixed, a CA that no longer matches); each
// says it found a member of another cluster.
func TestLeaderAddsNoMemberOfAnotherCluster(t *testing.T) {
	a := nodetest.New(t, 1).Nodes[0]
	cb := nodetest.New(t, 1)
	b := cb.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), nodetest.WaitTimeout)
	defer cancel()
	for _, n := range []*node.Node{a, b} {
		_, err := n.WaitClusterCA(ctx)
		require.NoError(t, err)
	}
	_, err := b.Join(ctx, []string{a.GossipAddr()})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		return a.Consensus().Foreign()[b.ID()] != "" && b.Consensus().Foreign()[a.ID()] != ""
	}, nodetest.WaitTimeout, 50*time.Millisecond, "each leader sees the other's node as another cluster's")
	sa, err := a.Consensus().Servers()
	require.NoError(t, err)
	require.Len(t, sa, 1, "a's raft has only a")
	sb, err := b.Consensus().Servers()
	require.NoError(t, err)
	require.Len(t, sb, 1, "b's raft has only b")
	_, ok := a.Registry().Node(b.ID())
	require.False(t, ok, "a's registry does not list b")

	// Failed or suspect, it is not recorded either (a blip once put it in
	// the registry as an alive hive that nothing reaped).
	cb.Kill(0)
	require.Eventually(t, func() bool { s := a.GossipState(b.ID()); return s == "dead" || s == "suspect" },
		nodetest.WaitTimeout, 50*time.Millisecond)
	require.Never(t, func() bool { _, ok := a.Registry().Node(b.ID()); return ok }, 3*time.Second, 100*time.Millisecond,
		"a's registry does not list b once it is gone")
}

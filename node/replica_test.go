package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// Past five nodes a node is a replica: outside raft, it follows the
// registry from a voter's feed over libp2p, shows as such in the hive
// list, forwards its writes, and learns a new leader after the old one dies.
func TestReplicaNodeFollowsTheRegistry(t *testing.T) {
	c := nodetest.New(t, 6)
	leader := c.WaitConverged(5)
	var replica *node.Node
	require.Eventually(t, func() bool {
		for _, n := range c.Running() {
			if n.Consensus().Replica() && n.Consensus().FeedStats().Source != "" {
				replica = n
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 50*time.Millisecond, "one node follows a feed")
	require.NotContains(t, voters(t, leader), replica.ID())
	roles := map[string]int{}
	for _, h := range leader.Hives() {
		roles[h.Suffrage]++
		if h.ID == replica.ID() {
			require.Equal(t, "replica", h.Suffrage)
		}
	}
	require.Equal(t, map[string]int{"voter": 5, "replica": 1}, roles)

	write := func(name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := replica.Consensus().ApplyCommand(ctx, fsm.UpsertHost{Host: fsm.Host{Name: name, Host: "10.0.0.9", State: fsm.HostKnown}})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			for _, n := range c.Running() {
				if _, ok := n.Registry().Host(name); !ok {
					return false
				}
			}
			return true
		}, nodetest.WaitTimeout, 20*time.Millisecond, "host %s everywhere", name)
	}
	write("via-replica")

	for i, n := range c.Nodes {
		if n == leader {
			c.Kill(i)
			break
		}
	}
	// Every running node agrees on the new leader, the replica too.
	views := func() string {
		var out []string
		for _, n := range c.Running() {
			fs := n.Consensus().FeedStats()
			out = append(out, fmt.Sprintf("%s leader=%.8s leads=%v replica=%v fed=%.8s serving=%d stale=%v state=%s",
				n.Name(), n.LeaderID(), n.IsLeader(), n.Consensus().Replica(), fs.Source, fs.Serving, n.Consensus().Stale(), n.Consensus().State()))
		}
		return fmt.Sprint(out)
	}
	agreed := func() *node.Node {
		next := c.Leader()
		if next == nil || next == leader {
			return nil
		}
		for _, n := range c.Running() {
			if n.LeaderID() != next.ID() {
				return nil
			}
		}
		return next
	}
	var next *node.Node
	for deadline := time.Now().Add(nodetest.WaitTimeout); next == nil; time.Sleep(20 * time.Millisecond) {
		if next = agreed(); next == nil && time.Now().After(deadline) {
			t.Fatalf("no agreed leader: %s", views())
		}
	}
	require.False(t, replica.Consensus().Stale())
	write(fmt.Sprintf("after-%s", next.ID()))
}

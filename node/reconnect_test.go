package node_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// A member gone long enough that gossip forgot it and the leader removed it
// from Raft and the registry is reached again by the others once it is
// back, although it knows nobody to join (no peers.json, no --join, no
// mDNS): the others keep retrying the members they knew. The leader re-adds
// it as a voter.
func TestForgottenMemberIsReconnected(t *testing.T) {
	c := nodetest.New(t, 3, func(i int, cfg *node.Config) { cfg.ReapGrace = time.Second })
	gone := c.Nodes[2]
	id := gone.ID()
	c.Kill(2)
	leader := c.WaitLeader()
	require.Eventually(t, func() bool {
		for _, n := range c.Running() {
			if _, known := n.Registry().Node(id); known {
				return false
			}
		}
		_, voter := voters(t, leader)[id]
		return !voter
	}, 2*nodetest.WaitTimeout, 100*time.Millisecond, "the leader reaps the absent member")

	c.ForgetPeers(2)
	start := time.Now()
	back := c.Restart(2)
	require.Equal(t, id, back.ID())
	require.Eventually(t, func() bool {
		leader := c.Leader()
		if leader == nil {
			return false
		}
		rn, ok := leader.Registry().Node(id)
		_, voter := voters(t, leader)[id]
		return ok && rn.State == "alive" && voter && back.LeaderID() == leader.ID()
	}, nodetest.WaitTimeout, 100*time.Millisecond, "re-admitted as a voter")
	t.Logf("re-admitted %v after it came back", time.Since(start))
}

func voters(t *testing.T, n *node.Node) map[string]bool {
	t.Helper()
	servers, err := n.Consensus().Servers()
	require.NoError(t, err)
	out := map[string]bool{}
	for _, s := range servers {
		if s.Suffrage == "voter" {
			out[s.ID] = true
		}
	}
	return out
}

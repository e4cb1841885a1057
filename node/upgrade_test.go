package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// A rolling upgrade from builds that support registry version 1 to this
// build: while any server runs the old build, the registry stays at 1
// (nothing the old build cannot apply is written, writes keep working and
// no replica halts); once the last server is upgraded, the leader raises
// it and every replica agrees.
func TestRollingUpgradeRaisesRegistryVersion(t *testing.T) {
	c := nodetest.New(t, 3, func(i int, cfg *node.Config) { cfg.RegistryVersion = 1 })
	versions := func() []int {
		var out []int
		for _, n := range c.Running() {
			st := status(t, n)
			require.Empty(t, st.RegistryHalted, "%s halted", n.Name())
			out = append(out, st.RegistryVersion)
		}
		return out
	}
	require.Equal(t, []int{1, 1, 1}, versions())
	for i := range c.Nodes {
		c.Kill(i)
		c.RestartWith(i, func(cfg *node.Config) { cfg.RegistryVersion = 0 })
		c.WaitConverged(3)
		// A write still works in the mixed cluster.
		run(t, c.Nodes[i], map[string]any{"operation": "apikey_create", "name": "k" + string(rune('a'+i)), "scope": "inference"}, nil)
		if i < len(c.Nodes)-1 {
			// Make an upgraded node the leader: the one that would raise
			// the version.
			if l := c.WaitLeader(); c.Index(l) > i {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				require.NoError(t, l.TransferLeadershipTo(ctx, c.Nodes[i].ID()))
				cancel()
			}
			require.Eventually(t, func() bool {
				l := c.Leader()
				return l != nil && c.Index(l) <= i
			}, nodetest.WaitTimeout, 20*time.Millisecond, "an upgraded node leads")
			// Over several of the leader's worker-loop passes, the
			// version never moves.
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
				require.Equal(t, []int{1, 1, 1}, versions(), "raised while a server still runs the old build")
			}
		}
	}
	require.Eventually(t, func() bool {
		for _, v := range versions() {
			if v != fsm.Version {
				return false
			}
		}
		return true
	}, nodetest.WaitTimeout, 100*time.Millisecond)
}

// A node downgraded after the registry version rose halts its registry
// replica; should it become the leader, it hands leadership to a voter
// that can apply the log, so writes keep working.
func TestDowngradedNodeDoesNotLead(t *testing.T) {
	c := nodetest.New(t, 3)
	c.WaitConverged(3)
	require.Eventually(t, func() bool { return status(t, c.Nodes[0]).RegistryVersion == fsm.Version },
		nodetest.WaitTimeout, 50*time.Millisecond)
	run(t, c.Nodes[1], map[string]any{"operation": "apikey_create", "name": "before", "scope": "inference"}, nil)
	c.Kill(0)
	old := c.RestartWith(0, func(cfg *node.Config) { cfg.RegistryVersion = 2 })
	require.Eventually(t, func() bool { return status(t, old).RegistryHalted != "" },
		nodetest.WaitTimeout, 50*time.Millisecond, "the downgraded node never halted")
	l := c.WaitLeader()
	if l != old {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		require.NoError(t, l.TransferLeadershipTo(ctx, old.ID()))
		cancel()
	}
	require.Eventually(t, func() bool {
		l := c.Leader()
		return l != nil && l != old
	}, nodetest.WaitTimeout, 20*time.Millisecond, "the halted node kept leading")
	run(t, c.Nodes[1], map[string]any{"operation": "apikey_create", "name": "after", "scope": "inference"}, nil)
}

package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/nodetest"
)

// A node whose registry entry the leader deleted (reaped after a long
// absence) and re-created (re-admitted) stores its capabilities and
// holdings again without a restart.
func TestReadmittedNodeRestoresHoldings(t *testing.T) {
	c := nodetest.New(t, 3)
	leader := c.WaitConverged(3)
	n1 := c.Nodes[1]
	run(t, c.Nodes[0], map[string]any{"operation": "model_download", "hive": "node1", "model": "builtin:stories260k"}, nil)
	restored := func() bool {
		rn, ok := leader.Registry().Node(n1.ID())
		if !ok || rn.Capabilities == nil {
			return false
		}
		for _, h := range leader.Registry().Models() {
			if h.NodeID == n1.ID() {
				return true
			}
		}
		return false
	}
	require.Eventually(t, restored, nodetest.WaitTimeout, 20*time.Millisecond)

	// What the reaper does: DeleteNode cascades to the node's holdings.
	b, err := fsm.Encode(fsm.DeleteNode{ID: n1.ID()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = leader.Apply(ctx, b)
	require.NoError(t, err)
	start := time.Now()
	require.False(t, restored())
	// The member is alive in gossip: the leader re-admits it, and the node
	// stores what it has again.
	require.Eventually(t, restored, nodetest.WaitTimeout, 20*time.Millisecond, "capabilities and holdings are back")
	t.Logf("capabilities and holdings back %v after the entry was deleted", time.Since(start))
}

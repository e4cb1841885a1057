package node_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
)

// A node restarted while the rest of its cluster is down serves the
// registry it last knew, marked stale, and routes to its own live workers:
// the one the registry lists and one spawned while there is no quorum.
func TestRestartWithoutQuorumServesLastRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 3)
	w := spawn(t, c.Nodes[0], "node0", 1)
	waitSchedulable(t, c, 1)
	before := c.Nodes[0].Status()
	require.Len(t, before.Nodes, 3)
	require.False(t, before.Stale)

	c.Kill(1)
	c.Kill(2)
	c.Kill(0)
	start := time.Now()
	n := c.Restart(0)
	st := n.Status()
	t.Logf("status %v after the restart began: %d nodes, %d workers, %d models, stale=%v",
		time.Since(start), len(st.Nodes), len(st.Workers), len(st.Models), st.Stale)
	require.Len(t, st.Nodes, 3, "the registry is served at once")
	require.NotEmpty(t, st.Models)
	require.True(t, st.Stale)
	require.NotNil(t, st.LastLeaderContact)
	require.Eventually(t, func() bool {
		for _, v := range n.Status().Workers {
			if v.ID == w.WorkerID {
				return true
			}
		}
		return false
	}, 5*time.Second, 20*time.Millisecond)

	// The registry's worker is routable once its re-adopted process
	// reports again.
	require.Eventually(t, func() bool { return len(n.ServedModels()) > 0 }, 10*time.Second, 20*time.Millisecond)
	t.Logf("routable %v after the restart began", time.Since(start))
	res, _ := infer(t, n, map[string]any{"prompt": "Lily"})
	require.Equal(t, w.WorkerID, res.WorkerID)

	// A worker spawned without quorum never reaches the registry, yet its
	// node routes to it.
	var w2 api.SpawnResult
	run(t, n, map[string]any{"operation": "worker_spawn", "hive": "node0", "model": "builtin:stories260k", "threads": 1, "slots": 1}, &w2)
	require.Equal(t, "registering", w2.State)
	_, listed := n.Registry().Worker(w2.WorkerID)
	require.False(t, listed)
	res, _ = infer(t, n, map[string]any{"prompt": "Lily", "worker_id": w2.WorkerID})
	require.Equal(t, w2.WorkerID, res.WorkerID)
}

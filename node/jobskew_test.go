package node_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/nodetest"
)

// A job forwarded to a hive of an older build, which ignores request
// fields it does not know, is refused when it sets one such a build may
// not know (kv_cache, shards, ...) instead of running without it; to a
// hive of this build it goes through (and fails there for its unknown
// model); jobs without such fields go to the older hive as before.
func TestForwardToLooseHiveRefusesFieldsItWouldIgnore(t *testing.T) {
	c := nodetest.New(t, 3)
	c.WaitConverged(3)
	n0 := c.Nodes[0]
	require.Eventually(t, func() bool { return n0.PeerServesStrictJobs(c.Nodes[1].ID()) }, 10*time.Second, 20*time.Millisecond)
	c.Nodes[1].ServeLooseJobsOnly() // node1 acts as an older build
	require.Eventually(t, func() bool { return !n0.PeerServesStrictJobs(c.Nodes[1].ID()) }, 10*time.Second, 20*time.Millisecond,
		"node0 never learnt that node1 dropped the protocol")
	for _, tc := range []struct {
		name string
		req  map[string]any
		code string
		msg  string
	}{
		{"kv cache to an older hive", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "hive": "node1", "kv_cache": "f32"},
			"upgrade_required", "ignore kv_cache of worker_spawn"},
		{"group headed by an older hive", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "shards": 2, "hives": []string{"node1", "node2"}},
			"upgrade_required", "ignore hives, shards of worker_spawn"},
		{"kv cache to a hive of this build", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "hive": "node2", "kv_cache": "f32"},
			"", "nosuch"},
		{"zero values to an older hive", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "hive": "node1", "kv_cache": "", "shards": 0},
			"", "nosuch"},
		{"plain spawn to an older hive", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "hive": "node1"},
			"", "nosuch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			je := runErr(t, n0, tc.req)
			require.Contains(t, je.Message, tc.msg)
			if tc.code != "" {
				require.Equal(t, tc.code, je.Code, je.Message)
			} else {
				require.NotEqual(t, "upgrade_required", je.Code, je.Message)
			}
		})
	}
	var out struct {
		Models []any `json:"models"`
	}
	run(t, n0, map[string]any{"operation": "model_list", "hive": "node1"}, &out)
}

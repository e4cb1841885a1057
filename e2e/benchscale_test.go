package e2e

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// `rbee bench scale` on three real node processes: its main figures are
// there and plausible, admission (raft's configuration and the registry)
// included.
func TestBenchScaleThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three node processes")
	}
	bin := buildRbee(t)
	out := cli(t, bin, "bench", "scale", "--nodes", "3", "--idle", "1s", "--samples", "2", "--failover-rounds", "1", "-o", "json")
	var doc struct {
		Results []map[string]any `json:"results"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	require.Len(t, doc.Results, 1)
	r := doc.Results[0]
	require.NotContains(t, r, "error")
	require.NotContains(t, r, "failover_error")
	num := func(k string) float64 {
		t.Helper()
		v, ok := r[k].(float64)
		require.True(t, ok, "%s: %v", k, r[k])
		return v
	}
	require.EqualValues(t, 3, num("nodes"))
	require.Greater(t, num("converge_all_ms"), 0.0)
	require.Greater(t, num("admitted_all_ms"), 0.0)
	require.Greater(t, num("status_json_bytes"), 0.0)
	require.GreaterOrEqual(t, num("failover_first_write_ms"), num("failover_first_survivor_ms"), "the first write is timed after a survivor saw the new leader")
	for _, k := range []string{"registry_write_leader_ms", "registry_write_follower_ms", "rss_bytes", "status_api_ms"} {
		m, ok := r[k].(map[string]any)
		require.True(t, ok, "%s: %v", k, r[k])
		require.Greater(t, m["median"].(float64), 0.0, k)
	}
}

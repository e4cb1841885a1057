package e2e

import (
	"encoding/json"
	"regexp"
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
	// Every field is named in --help (which gives its unit), and none is
	// null: a figure is there or its key is not.
	help := cli(t, bin, "bench", "scale", "--help")
	for k, v := range r {
		require.Regexp(t, `(^|[\s/])`+regexp.QuoteMeta(k)+`($|\s)`, help, "bench scale --help names %s", k)
		require.NotNil(t, v, k)
		if m, ok := v.(map[string]any); ok {
			for mk, mv := range m {
				require.NotNil(t, mv, "%s.%s", k, mk)
			}
		}
	}
	for _, k := range []string{"registry_write_leader_ms", "registry_write_follower_ms", "rss_bytes", "status_api_ms"} {
		m, ok := r[k].(map[string]any)
		require.True(t, ok, "%s: %v", k, r[k])
		require.Greater(t, m["median"].(float64), 0.0, k)
	}
}

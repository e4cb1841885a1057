package node

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReconnectorBackoff(t *testing.T) {
	r := newReconnector()
	r.learn("addr:10.0.0.2:7834", "10.0.0.2:7834")
	r.learn("b", "10.0.0.2:7834") // the peers.json entry gets a name
	r.learn("c", "10.0.0.3:7834")
	never := func(string, string) bool { return false }
	t0 := time.Unix(1_000_000, 0)

	tests := []struct {
		name string
		at   time.Duration
		skip func(key, addr string) bool
		want map[string]string
	}{
		{"first pass tries all", 0, never, map[string]string{"b": "10.0.0.2:7834", "c": "10.0.0.3:7834"}},
		{"within the first backoff", 500 * time.Millisecond, never, map[string]string{}},
		{"after 1 s", time.Second, never, map[string]string{"b": "10.0.0.2:7834", "c": "10.0.0.3:7834"}},
		{"within the doubled backoff", 2500 * time.Millisecond, never, map[string]string{}},
		{"alive members are skipped", 3 * time.Second, func(k, _ string) bool { return k == "c" }, map[string]string{"b": "10.0.0.2:7834"}},
		{"never given up", time.Hour, never, map[string]string{"b": "10.0.0.2:7834", "c": "10.0.0.3:7834"}},
		{"the backoff is at most 30 s", time.Hour + 30*time.Second, never, map[string]string{"b": "10.0.0.2:7834", "c": "10.0.0.3:7834"}},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, r.due(t0.Add(tc.at), tc.skip), tc.name)
	}
	r.forget("b") // left gracefully
	r.reachable("c")
	require.Equal(t, map[string]string{"c": "10.0.0.3:7834"}, r.due(t0.Add(2*time.Hour), never))
}

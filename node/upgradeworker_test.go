package node_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// A node restarted on a new build (same data dir) spawns the cpu worker of
// its new version, not the one its earlier version catalogued, which it
// keeps for a spawn that names it.
func TestUpgradedNodeSpawnsItsOwnWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	bin := buildWorker(t)
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.Version = "v-old"
	})
	n := c.WaitLeader()
	require.Equal(t, "v-old", spawn(t, n, "", 1).BinaryVersion)
	c.Kill(0)
	n = c.RestartWith(0, func(cfg *node.Config) { cfg.Version = "v-new" })
	c.WaitLeader()
	for _, tc := range []struct{ version, want string }{
		{"", "v-new"},
		{"v-old", "v-old"},
		{"", "v-new"},
	} {
		var res api.SpawnResult
		run(t, n, map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1, "version": tc.version}, &res)
		require.Equal(t, tc.want, res.BinaryVersion, "spawn with version %q", tc.version)
	}
	var bins api.BinaryListResult
	run(t, n, map[string]any{"operation": "worker_binary_list"}, &bins)
	var versions []string
	for _, b := range bins.Binaries {
		versions = append(versions, b.Version)
	}
	require.ElementsMatch(t, []string{"v-old", "v-new"}, versions)
}

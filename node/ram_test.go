package node_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/nodetest"
	"github.com/rbee-project/rbee/node/placement"
)

// TestMemoryLimitCountsWorkers: under --memory-limit a hive admits CPU
// workers for their estimates: spawns at once cannot all take the same
// free RAM, a running worker's RAM is not offered again (in the spawn's
// check and in the free RAM the hive reports to the registry), and a
// retired worker's RAM is.
func TestMemoryLimitCountsWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	const path = "../testdata/model/stories260K.gguf"
	st, err := os.Stat(path)
	require.NoError(t, err)
	est := placement.Estimate(modelcat.Entry{Path: path, Size: st.Size()}, 0)
	// One worker fits; a second (its KV cache and margin, the file is
	// mapped once) does not.
	limit := est.Total() + est.Total()/2
	require.Greater(t, est.KV+est.Margin, limit-est.Total())

	bin := buildWorker(t)
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
		cfg.MemoryLimit = limit
	})
	n := c.Nodes[0]
	ramFree := func() uint64 {
		rn, ok := n.Registry().Node(n.ID())
		if !ok || rn.Capabilities == nil {
			return 0
		}
		return rn.Capabilities.RAMFree
	}
	require.Eventually(t, func() bool { return ramFree() == limit }, nodetest.WaitTimeout, 50*time.Millisecond)

	// Two spawns at once: one runs, the other is refused with the numbers.
	req := map[string]any{"operation": "worker_spawn", "hive": n.Name(), "model": "builtin:stories260k", "threads": 1}
	var wg sync.WaitGroup
	results := make([]api.SpawnResult, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			errs[i] = client.New(n.URL(), n.AdminKey()).Result(ctx, req, &results[i], nil)
		})
	}
	wg.Wait()
	var won api.SpawnResult
	var refused []error
	for i := range 2 {
		if errs[i] == nil {
			won = results[i]
		} else {
			refused = append(refused, errs[i])
		}
	}
	require.Len(t, refused, 1, "exactly one of two spawns fits: %v", errs)
	var je *client.JobError
	require.ErrorAs(t, refused[0], &je)
	require.Equal(t, "unavailable", je.Code, je.Message)
	require.Contains(t, je.Message, "--memory-limit")
	require.NotEmpty(t, won.WorkerID)

	// The registry hears what is left; a third spawn is refused too.
	require.Eventually(t, func() bool { return ramFree() == limit-est.Total() }, nodetest.WaitTimeout, 50*time.Millisecond)
	je = runErr(t, n, req)
	require.Equal(t, "unavailable", je.Code, je.Message)

	// Retired, its RAM is free again: the spawn fits.
	run(t, n, map[string]any{"operation": "active_worker_retire", "worker_id": won.WorkerID}, nil)
	require.Eventually(t, func() bool { return ramFree() == limit }, nodetest.WaitTimeout, 50*time.Millisecond)
	var again api.SpawnResult
	run(t, n, req, &again)
	require.NotEmpty(t, again.WorkerID)
}

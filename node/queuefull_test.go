package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/client"
)

// TestFullQueuesWaitForAPlace: more concurrent requests than the workers
// have slots and queue places. A worker's 429 is no failure: every request
// waits for a place and gets the whole answer, none a 503.
func TestFullQueuesWaitForAPlace(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 3)
	slow := slowModel(t)
	for _, n := range c.Nodes[:2] {
		// One slot and one queue place each: 4 requests fit, 8 are sent.
		run(t, c.Nodes[0], map[string]any{"operation": "worker_spawn", "hive": n.Name(), "model": slow, "threads": 1, "slots": 1, "queue": 1}, nil)
	}
	waitSchedulable(t, c, 2)
	req := map[string]any{"operation": "infer", "model": "slow", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 30}
	var want api.InferResult
	run(t, c.Nodes[0], req, &want)
	require.Equal(t, 30, want.TokensOut)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 8
	errs := make([]error, n)
	got := make([]api.InferResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = client.New(c.Nodes[i%3].URL(), "").Result(ctx, req, &got[i], nil)
		}()
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "request %d", i)
		require.Equal(t, want.Text, got[i].Text, "request %d", i)
	}
}

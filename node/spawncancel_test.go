package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
)

// A spawn cancelled while it waits for the registry must not leave its
// worker running: the job ends "cancelled", so nothing may remain of it.
// Without a quorum the wait lasts seconds, long enough to cancel in.
func TestSpawnCancelledWhileRegisteringStopsTheWorker(t *testing.T) {
	c := servingCluster(t, 3)
	c.WaitConverged(3)
	n := c.Nodes[0]
	c.Kill(1)
	c.Kill(2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := client.New(n.URL(), n.AdminKey())
	id, err := cl.Submit(ctx, map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1})
	require.NoError(t, err)
	var status, workerWaiting string
	err = cl.Follow(ctx, id, func(ev jobs.Event) error {
		switch {
		case ev.Type == jobs.TypeNarration && strings.Contains(ev.Message, "waiting for the registry") && workerWaiting == "":
			workerWaiting = ev.Message
			return cl.Cancel(ctx, id)
		case ev.Type == jobs.TypeDone:
			status = ev.Status
		}
		return nil
	})
	require.NotEmpty(t, workerWaiting, "the spawn never reached the registry wait: %v", err)
	var je *client.JobError
	require.ErrorAs(t, err, &je)
	require.Equal(t, jobs.CodeCancelled, je.Code, "%v", err)
	require.Equal(t, jobs.StatusCancelled, status)
	require.Eventually(t, func() bool {
		var res struct {
			Processes []map[string]any `json:"processes"`
		}
		run(t, n, map[string]any{"operation": "worker_process_list"}, &res)
		return len(res.Processes) == 0
	}, 20*time.Second, 100*time.Millisecond, "the cancelled spawn's worker still runs (%s)", workerWaiting)
}

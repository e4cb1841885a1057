package node_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"

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

// A second spawn under a worker id this node already runs (or is starting)
// is a conflict, as the same id on another node is: not "unavailable",
// which tells the user to retry.
func TestSpawnOfAWorkerIDInUseOnTheSameNodeIsAConflict(t *testing.T) {
	c := servingCluster(t, 1)
	n := c.Nodes[0]
	c.WaitLeader()
	req := func(id string) map[string]any {
		return map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1, "worker_id": id}
	}
	for _, tc := range []struct {
		name string
		at   int // spawns of the id at once
	}{
		{"after the first is ready", 1},
		{"while the first starts", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "same-" + strings.ReplaceAll(tc.name, " ", "-")
			errs := make(chan *client.JobError, tc.at)
			for range tc.at {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					err := client.New(n.URL(), n.AdminKey()).Run(ctx, req(id), func(jobs.Event) error { return nil })
					var je *client.JobError
					if err != nil && !errors.As(err, &je) {
						je = &client.JobError{Code: "client", Message: err.Error()}
					}
					errs <- je
				}()
			}
			var refused []*client.JobError
			for range tc.at {
				if je := <-errs; je != nil {
					refused = append(refused, je)
				}
			}
			if tc.at == 1 {
				refused = append(refused, runErr(t, n, req(id)))
			}
			require.Len(t, refused, 1, "exactly one spawn of %s must win: %+v", id, refused)
			require.Equal(t, jobs.CodeConflict, refused[0].Code, "%v", refused[0])
		})
	}
}

// A worker retired (through another node) before it was ready ends its
// spawn with a conflict that says so, not "exited before it was
// registered", and nothing of it keeps running. The retire races the
// worker's ready heartbeat: a few tries make sure one lands first.
func TestSpawnRetiredBeforeReadySaysSo(t *testing.T) {
	c := servingCluster(t, 2)
	c.WaitConverged(2)
	hive, other := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := client.New(hive.URL(), hive.AdminKey())
	var err error
	for try := 0; try < 10 && err == nil; try++ {
		wid := fmt.Sprintf("early-%d", try)
		id, serr := cl.Submit(ctx, map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1, "worker_id": wid})
		require.NoError(t, serr)
		retire := make(chan error, 1)
		err = cl.Follow(ctx, id, func(ev jobs.Event) error {
			if ev.Type == jobs.TypeNarration && strings.Contains(ev.Message, "starting a worker") {
				go func() {
					retire <- client.New(other.URL(), other.AdminKey()).Run(ctx, map[string]any{"operation": "active_worker_retire", "worker_id": wid},
						func(jobs.Event) error { return nil })
				}()
			}
			return nil
		})
		select {
		case rerr := <-retire:
			require.NoError(t, rerr)
		case <-ctx.Done():
			t.Fatalf("no retire was sent (the spawn ended before it narrated its start: %v)", err)
		}
	}
	if err == nil {
		t.Skip("every worker was ready before its retire reached the registry")
	}
	var je *client.JobError
	require.ErrorAs(t, err, &je)
	require.Equal(t, jobs.CodeConflict, je.Code, "%v", err)
	require.Contains(t, je.Message, "retired")
	require.Eventually(t, func() bool {
		var res struct {
			Processes []map[string]any `json:"processes"`
		}
		run(t, hive, map[string]any{"operation": "worker_process_list"}, &res)
		return len(res.Processes) == 0
	}, 20*time.Second, 100*time.Millisecond)
}

// A node declared dead by gossip takes its workers' live reports with it:
// while no leader can drop its workers from the registry (no quorum),
// `worker list` must not go on showing them live with a heartbeat age
// frozen at what it was when the node died.
func TestDeadNodesWorkersAreNotShownLive(t *testing.T) {
	c := servingCluster(t, 2)
	c.WaitConverged(2)
	n0 := c.Nodes[0]
	w := spawn(t, n0, "node1", 1)
	require.Eventually(t, func() bool {
		v, ok := liveWorker(t, n0, w.WorkerID)
		return ok && v.LiveState != ""
	}, 20*time.Second, 100*time.Millisecond)
	c.Kill(1)
	require.Eventually(t, func() bool {
		v, ok := liveWorker(t, n0, w.WorkerID)
		return !ok || (v.LiveState == "" && v.LastHeartbeatAgeMs < 0)
	}, 30*time.Second, 200*time.Millisecond, "node1 is dead, yet its worker is shown live")
}

// TestSpawnOnGossipCutNodeRegisters: a spawn on a node whose gossip is
// cut off (the leader's gossip calls it dead) while raft still reaches it
// is registered, and the spawn ends "ready"; stopped, the worker leaves
// the registry. Before, the leader registers (and deletes) workers only
// from the load reports gossip brings it, and this node's never came: the
// spawn waited a minute and ended "not registered yet (no leader?)" though
// there was a leader.
func TestSpawnOnGossipCutNodeRegisters(t *testing.T) {
	cut := nodetest.NewGossipCut()
	bin := buildWorker(t)
	c := nodetest.New(t, 3, cut.Option, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
	})
	leader := c.WaitLeader()
	var x *node.Node
	for _, n := range c.Nodes {
		if n != leader {
			x = n
			break
		}
	}
	cut.Isolate(c, x)
	require.Eventually(t, func() bool {
		return leader.GossipState(x.ID()) == gossip.StateDead.String()
	}, nodetest.WaitTimeout, 50*time.Millisecond, "the leader's gossip calls the cut node dead")
	require.Equal(t, leader.ID(), c.WaitLeader().ID(), "raft keeps its leader")

	res := spawn(t, x, x.Name(), 1)
	require.Equal(t, "ready", res.State, "registered, not left waiting for the leader")
	w, ok := leader.Registry().Worker(res.WorkerID)
	require.True(t, ok)
	require.Equal(t, x.ID(), w.NodeID)

	// Its process stopped, it leaves the registry as well.
	run(t, x, map[string]any{"operation": "worker_process_delete", "hive": x.Name(), "pid": res.PID}, nil)
	require.Eventually(t, func() bool {
		_, ok := leader.Registry().Worker(res.WorkerID)
		return !ok
	}, nodetest.WaitTimeout, 50*time.Millisecond, "the stopped worker left the registry")
}

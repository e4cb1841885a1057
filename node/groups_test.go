package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
	"github.com/rbee-project/rbee/node/placement"
)

// groupCluster is a serving cluster of 3 nodes whose registry takes
// groups, and the greedy text the groups must answer.
func groupCluster(t *testing.T) (*nodetest.Cluster, string) {
	t.Helper()
	c := servingCluster(t, 3)
	// Groups need this build's registry version on every node.
	require.Eventually(t, func() bool {
		for _, n := range c.Running() {
			if n.Registry().RegistryVersion() != fsm.Version {
				return false
			}
		}
		return true
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	return c, greedy(t, "Once upon a time", 24)
}

func spawnGroup(t *testing.T, via *node.Node, mode string, hives ...string) api.GroupSpawnResult {
	t.Helper()
	var res api.GroupSpawnResult
	run(t, via, map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1, "slots": 1,
		"shards": len(hives), "hives": hives, "mode": mode}, &res)
	require.Equal(t, "ready", res.State)
	require.Len(t, res.Group.Shards, len(hives))
	return res
}

func groupOf(t *testing.T, n *node.Node, id string) (api.GroupView, bool) {
	t.Helper()
	var list api.WorkerListResult
	run(t, n, map[string]any{"operation": "active_worker_list"}, &list)
	for _, g := range list.Groups {
		if g.ID == id {
			return g, true
		}
	}
	return api.GroupView{}, false
}

// TestShardedGroups: a 2-node pipeline group and a 2-node tensor group of
// real worker processes, their stages linked over libp2p by the nodes,
// answer with the greedy text of the whole model, through every node; the
// list shows each group with its shards; only the head is scheduled; a
// retire drains the whole group and the entry goes.
func TestShardedGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c, want := groupCluster(t)
	for _, mode := range []string{"pipeline", "tensor"} {
		t.Run(mode, func(t *testing.T) {
			// Placed from node0, which hosts no shard.
			g := spawnGroup(t, c.Nodes[0], mode, "node1", "node2")
			require.Equal(t, "node1", g.Group.Shards[0].Node, "the first hive is the head")
			require.Equal(t, mode, g.Group.Mode)
			waitSchedulable(t, c, 1)
			for _, n := range c.Nodes {
				res, text := infer(t, n, map[string]any{"prompt": "Once upon a time"})
				require.Equal(t, want, text, "via %s", n.Name())
				require.Equal(t, g.WorkerID, res.WorkerID, "the head serves")
			}
			// The head connected straight to the other shard's worker:
			// node2's worker offered its direct stage port, node1's bridge
			// sent the head there, and carried no link itself (a failed
			// direct connection would have fallen back to it).
			require.GreaterOrEqual(t, metric(t, c.Nodes[2], "rbee_shard_direct_offers_total"), 1.0)
			require.GreaterOrEqual(t, metric(t, c.Nodes[1], "rbee_shard_direct_redirects_total"), 1.0)
			require.Equal(t, 0.0, metric(t, c.Nodes[1], "rbee_shard_bridged_links_total"))

			gv, ok := groupOf(t, c.Nodes[2], g.Group.ID)
			require.True(t, ok)
			require.Equal(t, "ready", gv.State)
			require.Equal(t, []string{"node1", "node2"}, []string{gv.Shards[0].Node, gv.Shards[1].Node})
			var wv api.WorkerView
			run(t, c.Nodes[2], map[string]any{"operation": "active_worker_get", "worker_id": g.Group.ID}, &wv)
			require.Equal(t, g.WorkerID, wv.ID, "a group's id names its head")
			require.NotNil(t, wv.Group)

			// Retiring any shard retires the group.
			run(t, c.Nodes[0], map[string]any{"operation": "active_worker_retire", "worker_id": g.Group.Shards[1].WorkerID}, nil)
			require.Eventually(t, func() bool {
				_, ok := groupOf(t, c.Nodes[0], g.Group.ID)
				return !ok
			}, 60*time.Second, 200*time.Millisecond, "the entry goes once its shards are gone")
			waitSchedulable(t, c, 0)
		})
	}
}

// TestShardedGroupReplanned: a shard's process is killed; the group
// fails, its head leaves the schedule, and the leader re-plans it on the
// alive hives within 30 s, under the same id, serving the same text.
func TestShardedGroupReplanned(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c, want := groupCluster(t)
	g := spawnGroup(t, c.Nodes[0], "pipeline", "node1", "node2")
	waitSchedulable(t, c, 1)

	var procs api.ProcessListResult
	run(t, c.Nodes[0], map[string]any{"operation": "worker_process_list", "hive": "node2"}, &procs)
	pid := 0
	for _, p := range procs.Processes {
		if p.WorkerID == g.Group.Shards[1].WorkerID {
			pid = p.PID
		}
	}
	require.NotZero(t, pid)

	// A request in flight when the shard dies ends (an error event, or
	// the text of a worker that took it over) instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := make(chan struct{})
	var once sync.Once
	ended := make(chan error, 1)
	go func() {
		ended <- client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Run(ctx,
			map[string]any{"operation": "infer", "model": "stories260k", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 400},
			func(ev jobs.Event) error {
				if ev.Type == jobs.TypeToken {
					once.Do(func() { close(first) })
				}
				return nil
			})
	}()
	select {
	case <-first:
	case err := <-ended:
		t.Fatalf("the request ended before its first token: %v", err)
	}
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	select {
	case err := <-ended:
		var je *client.JobError
		if errors.As(err, &je) {
			t.Logf("in-flight request: %s: %s", je.Code, je.Message)
			require.Contains(t, je.Message, "shard", "the error names the shard")
		} else {
			t.Logf("in-flight request: %v (finished before the failure reached it, or resumed)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the in-flight request did not end within 30 s of the shard's death")
	}

	// The group passes through failed (until the leader's next pass
	// re-plans it, which can be quicker than a poll) and starting (while
	// the re-plan spawns its shards, a second or more): seeing either
	// shows the failure path was taken.
	failed := false
	require.Eventually(t, func() bool {
		gv, ok := groupOf(t, c.Nodes[0], g.Group.ID)
		if ok && (gv.State == "failed" || gv.State == "starting") {
			failed = true
		}
		return ok && gv.State == "ready" && gv.Shards[1].WorkerID != g.Group.Shards[1].WorkerID
	}, 30*time.Second, 100*time.Millisecond, "re-planned within 30 s")
	require.True(t, failed, "the group was seen failed or being re-planned")
	waitSchedulable(t, c, 1)
	_, text := infer(t, c.Nodes[0], map[string]any{"prompt": "Once upon a time"})
	require.Equal(t, want, text)
}

// TestAutoSplit: with every node's --memory-limit below what the model
// needs alone but above half of it (with the margin each), a plain spawn
// without a hive becomes a 2-shard group that answers like the whole
// model.
func TestAutoSplit(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := tightCluster(t, fsm.Version, -1)
	// A worker id names one worker: the split that would drop it is
	// refused, saying why, and starts nothing.
	je := runErr(t, c.Nodes[2], map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1, "worker_id": "w-mine"})
	require.Equal(t, "bad_request", je.Code, je.Message)
	require.Contains(t, je.Message, "w-mine")
	var res api.GroupSpawnResult
	evs := run(t, c.Nodes[2], map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1}, &res)
	require.NotNil(t, res.Group.Shards, "a group, events: %+v", evs)
	require.Len(t, res.Group.Shards, 2)
	require.Equal(t, "ready", res.State)
	waitSchedulable(t, c, 1)
	_, text := infer(t, c.Nodes[2], map[string]any{"prompt": "Once upon a time"})
	require.Equal(t, greedy(t, "Once upon a time", 24), text)
}

// TestAutoSplitNeedsVersion3: while the registry is below version 3 (a
// rolling upgrade: some server's build knows no groups) the same spawn is
// not split.
func TestAutoSplitNeedsVersion3(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := tightCluster(t, 2, -1)
	// Unsplit, it does not fit the node's --memory-limit: refused,
	// saying so, rather than run over the limit.
	je := runErr(t, c.Nodes[2], map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1})
	require.Equal(t, "unavailable", je.Code, je.Message)
	require.Contains(t, je.Message, "--memory-limit")
	require.Empty(t, c.Nodes[2].Registry().Groups())
	require.Empty(t, c.Nodes[2].Registry().Workers())
}

// TestAutoPlaceWhole: when the node a plain spawn reaches has too little
// RAM for the model but another hive has enough for all of it, the worker
// runs there whole (not split, not refused), also when named by the
// catalog id of a file this node took from a path. A model given as a
// path (a file of this hive) stays here, refused with the figures.
func TestAutoPlaceWhole(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := tightCluster(t, fsm.Version, 2)
	path, err := filepath.Abs("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	je := runErr(t, c.Nodes[0], map[string]any{"operation": "worker_spawn", "model": path, "threads": 1})
	require.Equal(t, "unavailable", je.Code, je.Message)
	require.Contains(t, je.Message, "--memory-limit")

	// By its catalog id (or a short name), which node2 resolves from the
	// registry and copies from node0, the model moves.
	require.Eventually(t, func() bool {
		for _, h := range c.Nodes[2].Registry().Models() {
			if h.NodeID == c.Nodes[0].ID() && h.ModelID == "local--stories260k" {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	var res api.SpawnResult
	evs := run(t, c.Nodes[0], map[string]any{"operation": "worker_spawn", "model": "local--stories260k", "threads": 1}, &res)
	require.Equal(t, "node2", res.Node, "events: %+v", evs)
	require.Equal(t, "ready", res.State)
	require.Empty(t, c.Nodes[0].Registry().Groups(), "not split")
	waitSchedulable(t, c, 1)
	_, text := infer(t, c.Nodes[0], map[string]any{"prompt": "Once upon a time"})
	require.Equal(t, greedy(t, "Once upon a time", 24), text)
}

// tightCluster is 3 nodes of registry version version whose memory limit
// is below the stories260K fixture's estimate, so that a cpu spawn
// without a hive is split over two of them; node roomy (unless -1) has
// room for the whole model.
func tightCluster(t *testing.T, version, roomy int) *nodetest.Cluster {
	t.Helper()
	return limitCluster(t, version, func(i int, est placement.MemEstimate) uint64 {
		if i == roomy {
			return est.Total() + 64<<20 // the whole model, with room to spare
		}
		body := est.Total() - 512<<20 // weights + KV cache + 10 %, without the fixed margin
		limit := 512<<20 + body*3/4
		require.Greater(t, est.Total(), limit)
		return limit
	})
}

// limitCluster is 3 nodes of registry version version, node i with the
// --memory-limit limit gives it for the stories260K fixture's estimate.
func limitCluster(t *testing.T, version int, limit func(i int, est placement.MemEstimate) uint64) *nodetest.Cluster {
	t.Helper()
	const path = "../testdata/model/stories260K.gguf"
	st, err := os.Stat(path)
	require.NoError(t, err)
	est := placement.Estimate(modelcat.Entry{Path: path, Size: st.Size()}, 0)
	limits := map[int]uint64{}
	for i := range 3 {
		limits[i] = limit(i, est)
	}
	bin := buildWorker(t)
	c := nodetest.New(t, 3, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
		cfg.MemoryLimit = limits[i]
		if version < fsm.Version {
			cfg.RegistryVersion = version
		}
	})
	require.Eventually(t, func() bool {
		for _, n := range c.Running() {
			if n.Registry().RegistryVersion() != version {
				return false
			}
			for i, cn := range c.Nodes {
				rn, ok := n.Registry().Node(cn.ID())
				if !ok || rn.Capabilities == nil || rn.Capabilities.RAMFree != limits[i] {
					return false
				}
			}
		}
		return true
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	return c
}

// TestShardedGroupNodeDies: the node of a group's shard dies; once the
// leader records it failed, the group is re-planned on the nodes left,
// within 30 s, and serves the same text.
func TestShardedGroupNodeDies(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c, want := groupCluster(t)
	leader := c.WaitLeader()
	killShardNode(t, c, leader, 30*time.Second)
	_, text := infer(t, leader, map[string]any{"prompt": "Once upon a time"})
	require.Equal(t, want, text)
}

// killShardNode places a pipeline group on the two nodes that do not
// lead, kills the node of its second shard and waits (up to within) for
// the group to be re-planned, ready, on the nodes left. It returns the
// group as first placed and the killed node's index.
func killShardNode(t *testing.T, c *nodetest.Cluster, leader *node.Node, within time.Duration) (api.GroupSpawnResult, int) {
	t.Helper()
	var hives []string
	var victim int
	for i, n := range c.Nodes {
		if n != leader {
			hives = append(hives, n.Name())
			victim = i
		}
	}
	g := spawnGroup(t, leader, "pipeline", hives...)
	waitSchedulable(t, c, 1)
	c.Kill(victim)
	require.Eventually(t, func() bool {
		gv, ok := groupOf(t, leader, g.Group.ID)
		if !ok || gv.State != "ready" {
			return false
		}
		for _, s := range gv.Shards {
			if s.Node == hives[1] {
				return false
			}
		}
		return true
	}, within, 200*time.Millisecond, "re-planned on the nodes left within %s", within)
	// No wait for the new head's report here: the group's entry turns
	// ready before its node's report of the head reaches every node, and
	// a request in between waits for it (relay.DefaultArriveWait).
	return g, victim
}

// TestShardedGroupsOnFixtures: on the K-quant and qwen2 fixtures (given as
// paths: the other shard's hive copies the file from the head's), a
// pipeline and a tensor group answer with the same greedy text as one
// unsharded worker, through the node.
func TestShardedGroupsOnFixtures(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c, _ := groupCluster(t)
	for _, fixture := range []string{"kquant/kquant-Q4_K.gguf", "kquant/kquant-Q6_K.gguf", "qwen2/qwen2-random-F32.gguf"} {
		path, err := filepath.Abs(filepath.Join("..", "testdata", "gguf", fixture))
		require.NoError(t, err)
		var single api.SpawnResult
		run(t, c.Nodes[0], map[string]any{"operation": "worker_spawn", "hive": "node0", "model": path, "threads": 1, "slots": 1}, &single)
		ask := func(workerID string) string {
			var res api.InferResult
			run(t, c.Nodes[0], map[string]any{"operation": "infer", "worker_id": workerID, "prompt": "Once upon a time",
				"temperature": 0, "max_tokens": 16}, &res)
			require.Equal(t, workerID, res.WorkerID)
			return res.Text
		}
		want := ask(single.WorkerID)
		require.NotEmpty(t, want)
		for _, mode := range []string{"pipeline", "tensor"} {
			var g api.GroupSpawnResult
			run(t, c.Nodes[0], map[string]any{"operation": "worker_spawn", "model": path, "threads": 1, "slots": 1,
				"hives": []string{"node1", "node2"}, "mode": mode}, &g)
			require.Equal(t, "ready", g.State, "%s %s", fixture, mode)
			require.Eventually(t, func() bool {
				w, ok := c.Nodes[0].Registry().Worker(g.WorkerID)
				return ok && w.State == fsm.WorkerReady
			}, nodetest.WaitTimeout, 50*time.Millisecond)
			require.Equal(t, want, ask(g.WorkerID), "%s %s", fixture, mode)
			run(t, c.Nodes[0], map[string]any{"operation": "active_worker_retire", "worker_id": g.Group.ID}, nil)
		}
		run(t, c.Nodes[0], map[string]any{"operation": "active_worker_retire", "worker_id": single.WorkerID}, nil)
	}
}

// TestShardedGroupOrphanAfterRestart: a shard's node is killed, the group
// is re-planned without it, and the node restarts and re-adopts its old
// shard worker. That worker is registered with its group, so it is never
// scheduled (every request is served), and its node stops it.
func TestShardedGroupOrphanAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c, want := groupCluster(t)
	leader := c.WaitLeader()
	g, victim := killShardNode(t, c, leader, 60*time.Second)
	old := g.Group.Shards[1].WorkerID
	back := c.Restart(victim)
	require.Equal(t, 1, back.WorkerProcesses(), "the old shard was re-adopted")

	registered, schedulable := false, false
	var texts []string
	require.Eventually(t, func() bool {
		var list api.WorkerListResult
		run(t, leader, map[string]any{"operation": "active_worker_list"}, &list)
		for _, w := range list.Workers {
			if w.ID == old {
				registered = true
				schedulable = schedulable || w.Schedulable
			}
		}
		// Every request is served by the re-planned group, never by the
		// orphan (whose API refuses requests).
		_, text := infer(t, leader, map[string]any{"prompt": "Once upon a time"})
		texts = append(texts, text)
		return back.WorkerProcesses() == 0 || schedulable
	}, 90*time.Second, 300*time.Millisecond, "the restarted node stops its orphaned shard")
	require.False(t, schedulable, "the orphaned shard %s was schedulable", old)
	for _, text := range texts {
		require.Equal(t, want, text)
	}
	t.Logf("orphan seen registered: %v; %d requests served meanwhile", registered, len(texts))
	gv, ok := groupOf(t, leader, g.Group.ID)
	require.True(t, ok)
	require.Equal(t, "ready", gv.State, "the group still serves")
}

// TestShardedGroupRetireWhileStarting: a group retired while its
// placement runs stays retired:
// the placement's ready write is refused, its shards stop and the entry
// goes; nothing is re-planned.
func TestShardedGroupRetireWhileStarting(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c, _ := groupCluster(t)
	via := c.Nodes[0]
	done := make(chan error, 1)
	go func() {
		var res api.GroupSpawnResult
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		done <- client.New(via.URL(), via.AdminKey()).Result(ctx, map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k",
			"threads": 1, "slots": 1, "shards": 2, "hives": []string{"node1", "node2"}, "mode": "pipeline"}, &res, nil)
	}()
	// Retire it as soon as the list shows it starting (the reviewer's
	// timing: before its shards are registered, the placement goes on).
	var gid string
	require.Eventually(t, func() bool {
		var list api.WorkerListResult
		run(t, via, map[string]any{"operation": "active_worker_list"}, &list)
		for _, g := range list.Groups {
			if g.State == "starting" {
				gid = g.ID
			}
		}
		return gid != ""
	}, 60*time.Second, 20*time.Millisecond)
	var out api.GroupView
	run(t, via, map[string]any{"operation": "active_worker_retire", "worker_id": gid}, &out)
	require.Equal(t, "retiring", out.State)
	var spawnErr error
	select {
	case spawnErr = <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("the spawn did not end")
	}
	if spawnErr == nil {
		t.Log("the placement wrote ready before the retire")
	}
	// The entry goes once its shards are gone; it is never ready again.
	var cameBack fsm.GroupState
	require.Eventually(t, func() bool {
		g, ok := via.Registry().Group(gid)
		if ok && g.State != fsm.GroupRetiring {
			cameBack = g.State
			return true
		}
		return !ok
	}, 60*time.Second, 100*time.Millisecond)
	require.Empty(t, cameBack, "the retired group %s came back", gid)
	require.Eventually(t, func() bool {
		total := 0
		for _, n := range c.Running() {
			total += n.WorkerProcesses()
		}
		return total == 0
	}, 60*time.Second, 100*time.Millisecond, "every shard stopped")
	require.Never(t, func() bool { _, ok := via.Registry().Group(gid); return ok }, 3*time.Second, 100*time.Millisecond,
		"the retired group does not come back")
}

// TestStartingGroupOfASkewedPlacerIsNotFailed: a group entry written
// "starting" by a placing node whose wall clock is behind the leader's by
// more than the start limit (machines of a LAN without NTP, or the
// leader's clock jumped ahead) is a placement in progress, not one that
// lost its node: the leader counts the limit on its own clock from when it
// first saw it, and leaves it starting.
func TestStartingGroupOfASkewedPlacerIsNotFailed(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	require.Eventually(t, func() bool { return n.Registry().RegistryVersion() == fsm.Version }, nodetest.WaitTimeout, 50*time.Millisecond)
	behind := time.Now().Add(-2 * time.Hour).UTC()
	g := fsm.Group{ID: "g-skewed", Model: "builtin--stories260k", Mode: fsm.GroupPipeline, State: fsm.GroupStarting,
		Shards:    []fsm.GroupShard{{NodeID: n.ID(), WorkerID: "w-head", Lo: 0, Hi: 3}, {NodeID: n.ID(), WorkerID: "w-tail", Lo: 3, Hi: 5}},
		Placement: "p-1", CreatedAt: behind, UpdatedAt: behind}
	b, err := fsm.Encode(fsm.UpsertGroup{Group: g})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = n.Apply(ctx, b)
	require.NoError(t, err)
	// The leader's group pass runs twice a second: several passes.
	require.Never(t, func() bool {
		got, ok := n.Registry().Group(g.ID)
		return !ok || got.State != fsm.GroupStarting
	}, 3*time.Second, 50*time.Millisecond, "a placement in progress was failed by the placer's clock")
}

// TestShardedGroupNeedsRoom: a group whose parts do not fit their hives'
// free RAM (under --memory-limit) is refused before anything starts,
// saying which hive lacks what; and a group whose shard's node dies is
// not re-planned onto a hive without the room: it stays failed, saying
// why, and nothing runs there.
func TestShardedGroupNeedsRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	const small = 100 << 20 // less than any part's fixed margin
	c := limitCluster(t, fsm.Version, func(i int, est placement.MemEstimate) uint64 {
		if i == 2 {
			return small
		}
		return est.Total() // room for a part each, not for two
	})
	for _, mode := range []string{"pipeline", "tensor"} {
		je := runErr(t, c.Nodes[0], map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1,
			"hives": []string{"node0", "node2"}, "mode": mode})
		require.Equal(t, "unavailable", je.Code, je.Message)
		require.Contains(t, je.Message, "node2 needs", je.Message)
		require.NotContains(t, je.Message, "node0 needs", je.Message)
	}
	for _, n := range c.Nodes {
		require.Empty(t, n.Registry().Groups(), n.Name())
		require.Zero(t, n.WorkerProcesses(), n.Name())
	}

	leader := c.WaitLeader()
	victim := 1
	if leader == c.Nodes[1] {
		victim = 0
	}
	g := spawnGroup(t, c.Nodes[2], "pipeline", "node0", "node1")
	c.Kill(victim)
	var gv api.GroupView
	require.Eventually(t, func() bool {
		var ok bool
		gv, ok = groupOf(t, c.Nodes[2], g.Group.ID)
		return ok && gv.State == "failed" && strings.Contains(gv.Error, "re-plan failed")
	}, 60*time.Second, 200*time.Millisecond, "the group stays failed, saying why: %+v", gv)
	require.Contains(t, gv.Error, "node2 needs")
	require.Zero(t, c.Nodes[2].WorkerProcesses(), "no shard was started on node2")
	// The status (and so the web page) lists it, with why.
	var st api.StatusResult
	run(t, c.Nodes[2], map[string]any{"operation": "status"}, &st)
	require.Len(t, st.Groups, 1)
	require.Equal(t, gv.Error, st.Groups[0].Error)
}

// TestGroupOfAPathIsHeadedHere: a model given as a path is a file of the
// node the request reached, so a group of it placed without hives (by
// --shards, or split by itself) is headed by that node even where other
// hives report more free RAM; the others copy the file from it.
func TestGroupOfAPathIsHeadedHere(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	path, err := filepath.Abs("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		req  map[string]any
	}{
		{"shards", map[string]any{"shards": 2}},
		{"auto split", map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// node0 holds a part, not the whole model; node1 a little
			// more; node2 no part at all.
			c := limitCluster(t, fsm.Version, func(i int, est placement.MemEstimate) uint64 {
				tight := 512<<20 + (est.Total()-512<<20)*3/4
				return []uint64{tight, tight + 64<<10, 100 << 20}[i]
			})
			req := map[string]any{"operation": "worker_spawn", "model": path, "threads": 1}
			for k, v := range tc.req {
				req[k] = v
			}
			var res api.GroupSpawnResult
			evs := run(t, c.Nodes[0], req, &res)
			require.NotNil(t, res.Group, "a group, events: %+v", evs)
			require.Equal(t, "ready", res.State)
			require.Equal(t, []string{"node0", "node1"}, []string{res.Group.Shards[0].Node, res.Group.Shards[1].Node}, "node0 has the file: it heads")
			waitSchedulable(t, c, 1)
			_, text := infer(t, c.Nodes[0], map[string]any{"prompt": "Once upon a time"})
			require.Equal(t, greedy(t, "Once upon a time", 24), text)
		})
	}
}

// TestShardedGroupRetireDrains: a group retired while a request streams
// on it finishes that request (every token it asked for, no error), then
// every shard stops and the entry goes.
func TestShardedGroupRetireDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c, _ := groupCluster(t)
	for _, mode := range []string{"pipeline", "tensor"} {
		t.Run(mode, func(t *testing.T) {
			g := spawnGroup(t, c.Nodes[0], mode, "node1", "node2")
			waitSchedulable(t, c, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			const want = 1500 // long enough to be in flight when the retire lands
			var mu sync.Mutex
			tokens := 0
			first := make(chan struct{})
			var once sync.Once
			ended := make(chan error, 1)
			var res api.InferResult
			go func() {
				ended <- client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Run(ctx,
					map[string]any{"operation": "infer", "model": "stories260k", "prompt": "Once upon a time", "temperature": 0, "max_tokens": want},
					func(ev jobs.Event) error {
						if ev.Type == jobs.TypeToken {
							mu.Lock()
							tokens++
							mu.Unlock()
							once.Do(func() { close(first) })
						}
						if ev.Type == jobs.TypeResult {
							return json.Unmarshal(ev.Result, &res)
						}
						return nil
					})
			}()
			select {
			case <-first:
			case err := <-ended:
				t.Fatalf("the request ended before its first token: %v", err)
			}
			var out api.GroupView
			run(t, c.Nodes[0], map[string]any{"operation": "active_worker_retire", "worker_id": g.Group.ID}, &out)
			require.Equal(t, "retiring", out.State)
			select {
			case err := <-ended:
				t.Fatalf("the request ended (%v) before the retire was answered: not in flight", err)
			default:
			}
			require.NoError(t, <-ended, "the request in flight finishes")
			require.Equal(t, want, tokens, "every token asked for")
			require.Equal(t, g.WorkerID, res.WorkerID)
			require.Eventually(t, func() bool {
				_, ok := groupOf(t, c.Nodes[0], g.Group.ID)
				total := 0
				for _, n := range c.Running() {
					total += n.WorkerProcesses()
				}
				return !ok && total == 0
			}, 60*time.Second, 200*time.Millisecond, "every shard stops and the entry goes")
		})
	}
}

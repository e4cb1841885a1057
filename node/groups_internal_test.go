package node

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
)

// TestUnroutable: only a ready or starting group's head takes requests;
// a worker started for a group that does not list it as its head (an
// orphaned shard re-adopted after a re-plan, or one whose group is gone)
// never does, whatever the registry's worker state.
func TestUnroutable(t *testing.T) {
	group := func(id string, st fsm.GroupState, workers ...string) fsm.Group {
		g := fsm.Group{ID: id, State: st}
		for _, w := range workers {
			g.Shards = append(g.Shards, fsm.GroupShard{WorkerID: w})
		}
		return g
	}
	groups := []fsm.Group{
		group("g-ready", fsm.GroupReady, "h1", "s1"),
		group("g-start", fsm.GroupStarting, "h2", "s2"),
		group("g-failed", fsm.GroupFailed, "h3", "s3"),
	}
	workers := []fsm.Worker{
		{ID: "h1", Group: "g-ready"}, {ID: "s1", Group: "g-ready"},
		{ID: "h2", Group: "g-start"}, {ID: "s2", Group: "g-start"},
		{ID: "h3", Group: "g-failed"}, {ID: "s3", Group: "g-failed"},
		{ID: "orphan-replanned", Group: "g-ready"}, // its group lists new workers
		{ID: "orphan-gone", Group: "g-deleted"},
		{ID: "h1-elsewhere", Group: "g-start"},
		{ID: "plain"},
	}
	got := unroutable(groups, workers)
	for _, id := range []string{"s1", "s2", "h3", "s3", "orphan-replanned", "orphan-gone", "h1-elsewhere"} {
		require.True(t, got[id], id)
	}
	for _, id := range []string{"h1", "h2", "plain"} {
		require.False(t, got[id], id)
	}
	// No group at all: a worker started for one is still out.
	require.True(t, unroutable(nil, []fsm.Worker{{ID: "w", Group: "g"}})["w"])
}

// TestReplanDelay: a failing re-plan backs off from 10 s to 10 min.
func TestReplanDelay(t *testing.T) {
	require.Equal(t, 10*time.Second, replanDelay(0))
	require.Equal(t, 20*time.Second, replanDelay(1))
	require.Equal(t, 80*time.Second, replanDelay(3))
	require.Equal(t, 10*time.Minute, replanDelay(6))
	require.Equal(t, 10*time.Minute, replanDelay(1000))
}

// TestReplanRequestKeepsTheSpawn: a re-plan spawns the group with its own
// parameters, the worker version pin among them (it was dropped, so a
// group pinned to a version came back on each hive's default binary).
func TestReplanRequestKeepsTheSpawn(t *testing.T) {
	g := fsm.Group{ID: "g-1", Model: "builtin--stories260k", Mode: fsm.GroupTensor, Threads: 2, Slots: 3, Ctx: 512,
		KVCache: "f32", Version: "v0.9.1"}
	r := replanRequest(g, []string{"b", "c"})
	require.Equal(t, api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: "b"}, Model: g.Model, Threads: 2, Slots: 3, Ctx: 512,
		KVCache: "f32", Version: "v0.9.1", Shards: 2, Hives: []string{"b", "c"}, Mode: fsm.GroupTensor, Group: "g-1"}, r)
}

// TestGroupStartCountedOnTheLeadersClock: the leader fails a placement
// that has been starting for groupStartLimit by its own clock, from when
// it first saw it, whatever the entry's UpdatedAt says (the placing node's
// wall clock: behind the leader's by an hour, a placement written a second
// ago was failed at once). A new placement of the same id starts afresh,
// and a group that is no longer starting is forgotten.
func TestGroupStartCountedOnTheLeadersClock(t *testing.T) {
	now := time.Now()
	skewed := fsm.Group{ID: "g-1", State: fsm.GroupStarting, Placement: "p1", UpdatedAt: now.Add(-time.Hour).UTC()}
	s := newGroupState()
	for _, tc := range []struct {
		name string
		g    fsm.Group
		at   time.Duration // after now
		want time.Duration
	}{
		{"first sight, written an hour ago by a clock behind", skewed, 0, 0},
		{"within the limit", skewed, 10 * time.Minute, 10 * time.Minute},
		{"past the limit", skewed, groupStartLimit + time.Second, groupStartLimit + time.Second},
		{"a new placement starts afresh", fsm.Group{ID: "g-1", State: fsm.GroupStarting, Placement: "p2"}, groupStartLimit + 2*time.Second, 0},
		{"and counts from there", fsm.Group{ID: "g-1", State: fsm.GroupStarting, Placement: "p2"}, groupStartLimit + 5*time.Second, 3 * time.Second},
	} {
		require.Equal(t, tc.want, s.startingFor(tc.g, now.Add(tc.at)), tc.name)
	}
	require.False(t, s.startingFor(skewed, now) > groupStartLimit)

	s.forgetStarting(map[string]fsm.Group{"g-1": {ID: "g-1", State: fsm.GroupReady}})
	require.Empty(t, s.starting, "a ready group is forgotten")
}

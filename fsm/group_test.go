package fsm

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func sampleGroup(id string) Group {
	return Group{ID: id, Model: "stories260k", Mode: GroupPipeline, State: GroupStarting,
		Shards:    []GroupShard{{NodeID: "n1", WorkerID: id + "-0", Lo: 0, Hi: 3}, {NodeID: "n2", WorkerID: id + "-1", Lo: 3, Hi: 5}},
		Threads:   1,
		UpdatedAt: time.Unix(100, 0).UTC()}
}

func TestGroups(t *testing.T) {
	f := New(nil)
	g := sampleGroup("g-1")
	res := applyAll(t, f, SetRegistryVersion{Version: 3}, UpsertGroup{Group: g})
	require.True(t, res[1].Changed)
	got, ok := f.Group("g-1")
	require.True(t, ok)
	require.Equal(t, g.UpdatedAt, got.CreatedAt, "created at the first write")
	of, ok := f.GroupOf("g-1-1")
	require.True(t, ok)
	require.Equal(t, "g-1", of.ID)

	// Accessors hand out copies.
	got.Shards[0].NodeID = "changed"
	again, _ := f.Group("g-1")
	require.Equal(t, "n1", again.Shards[0].NodeID)

	// The same entry again changes nothing; a state change keeps CreatedAt.
	require.False(t, applyAll(t, f, UpsertGroup{Group: g})[0].Changed)
	g2 := g.Clone()
	g2.State, g2.UpdatedAt = GroupReady, time.Unix(200, 0).UTC()
	require.True(t, applyAll(t, f, UpsertGroup{Group: g2})[0].Changed)
	got, _ = f.Group("g-1")
	require.Equal(t, GroupReady, got.State)
	require.Equal(t, g.UpdatedAt, got.CreatedAt)

	// Groups survive a snapshot (format 4 at version 3).
	snap := snapshotOf(t, f)
	st, err := ReadSnapshot(bytes.NewReader(snap))
	require.NoError(t, err)
	require.Equal(t, f.Groups(), st.Groups())
	// A build of registry version 2 halts on the command instead of
	// skipping it.
	require.Equal(t, 3, Since(TypeUpsertGroup))
	require.ErrorIs(t, CheckWritable(enc(t, UpsertGroup{Group: g}), 2), ErrNeedsVersion)

	require.True(t, applyAll(t, f, DeleteGroup{ID: "g-1"})[0].Changed)
	require.False(t, applyAll(t, f, DeleteGroup{ID: "g-1"})[0].Changed)
	require.Empty(t, f.Groups())
}

func TestBadGroupsRejected(t *testing.T) {
	mod := func(fn func(*Group)) Group {
		g := sampleGroup("g-1")
		fn(&g)
		return g
	}
	for name, g := range map[string]Group{
		"no id":         mod(func(g *Group) { g.ID = "" }),
		"bad mode":      mod(func(g *Group) { g.Mode = "diagonal" }),
		"bad state":     mod(func(g *Group) { g.State = "happy" }),
		"one shard":     mod(func(g *Group) { g.Shards = g.Shards[:1] }),
		"gap":           mod(func(g *Group) { g.Shards[1].Lo = 4 }),
		"empty range":   mod(func(g *Group) { g.Shards[1].Hi = 3 }),
		"head not at 0": mod(func(g *Group) { g.Shards[0].Lo = 1 }),
		"same worker":   mod(func(g *Group) { g.Shards[1].WorkerID = g.Shards[0].WorkerID }),
		"no node":       mod(func(g *Group) { g.Shards[1].NodeID = "" }),
	} {
		_, err := Encode(UpsertGroup{Group: g})
		require.ErrorIs(t, err, ErrInvalid, name)
	}
}

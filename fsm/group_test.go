package fsm

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
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
		"bad KV cache":  mod(func(g *Group) { g.KVCache = "q4_0" }),
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

// applyErr applies one command that must be refused and returns the error.
func applyErr(t *testing.T, f *FSM, c Command) error {
	t.Helper()
	before := f.Index()
	res := f.Apply(&raft.Log{Index: f.Index() + 1, Type: raft.LogCommand, Data: enc(t, c)})
	err, ok := res.(error)
	require.True(t, ok, "%s applied: %v", c.Type(), res)
	require.Equal(t, before, f.Index(), "a refused command changes nothing")
	return err
}

// A retired group stays retired: a placement's stale ready write, a
// re-plan or the leader's failed write from an old copy are conflicts, and
// a deleted group is not brought back by a write expecting it.
func TestGroupRetireSticks(t *testing.T) {
	f := New(nil)
	g := sampleGroup("g-1")
	g.Placement = "p-1"
	applyAll(t, f, SetRegistryVersion{Version: 3}, UpsertGroup{Group: g, Expect: &GroupExpect{Absent: true}})

	r := g.Clone()
	r.State = GroupRetiring
	applyAll(t, f, UpsertGroup{Group: r})

	ready := g.Clone()
	ready.State = GroupReady
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: ready, Expect: &GroupExpect{State: GroupStarting, Placement: "p-1"}}), ErrConflict)
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: ready}), ErrConflict, "nothing moves out of retiring")
	failed := g.Clone()
	failed.State = GroupFailed
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: failed, Expect: &GroupExpect{State: GroupReady}}), ErrConflict)
	got, _ := f.Group("g-1")
	require.Equal(t, GroupRetiring, got.State)

	applyAll(t, f, DeleteGroup{ID: "g-1", Expect: &GroupExpect{State: GroupRetiring}})
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: ready, Expect: &GroupExpect{State: GroupStarting, Placement: "p-1"}}), ErrConflict)
	replan := g.Clone()
	replan.Placement = "p-2"
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: replan, Expect: &GroupExpect{State: GroupFailed}}), ErrConflict)
	_, ok := f.Group("g-1")
	require.False(t, ok, "a deleted group stays deleted")
}

// Compare-and-set: a write that expects what it read succeeds once; a
// second placement of the same group conflicts; an identical retry is a
// no-op.
func TestGroupCompareAndSet(t *testing.T) {
	f := New(nil)
	g := sampleGroup("g-1")
	g.Placement = "p-1"
	create := UpsertGroup{Group: g, Expect: &GroupExpect{Absent: true}}
	applyAll(t, f, SetRegistryVersion{Version: 3}, create)
	require.False(t, applyAll(t, f, create)[0].Changed, "a retry of the committed write")
	other := sampleGroup("g-1")
	other.Placement = "p-x"
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: other, Expect: &GroupExpect{Absent: true}}), ErrConflict)

	ready := g.Clone()
	ready.State = GroupReady
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: ready, Expect: &GroupExpect{State: GroupStarting, Placement: "p-2"}}), ErrConflict,
		"another placement's token")
	require.True(t, applyAll(t, f, UpsertGroup{Group: ready, Expect: &GroupExpect{State: GroupStarting, Placement: "p-1"}})[0].Changed)

	// A failed group is re-planned once: the second re-plan read the same
	// failed entry and conflicts.
	failed := ready.Clone()
	failed.State = GroupFailed
	applyAll(t, f, UpsertGroup{Group: failed, Expect: &GroupExpect{State: GroupReady, Placement: "p-1"}})
	re1 := sampleGroup("g-1")
	re1.Placement, re1.Shards[0].WorkerID, re1.Shards[1].WorkerID = "p-2", "a-0", "a-1"
	re2 := re1.Clone()
	re2.Placement, re2.Shards[0].WorkerID, re2.Shards[1].WorkerID = "p-3", "b-0", "b-1"
	expect := &GroupExpect{State: GroupFailed, Placement: "p-1"}
	applyAll(t, f, UpsertGroup{Group: re1, Expect: expect})
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: re2, Expect: expect}), ErrConflict)

	// A delete expecting another state conflicts.
	require.ErrorIs(t, applyErr(t, f, DeleteGroup{ID: "g-1", Expect: &GroupExpect{State: GroupRetiring}}), ErrConflict)
	_, err := Encode(DeleteGroup{ID: "g-1", Expect: &GroupExpect{Absent: true}})
	require.ErrorIs(t, err, ErrInvalid)
}

// One worker is a shard of one group at most.
func TestGroupWorkerInTwoGroupsRejected(t *testing.T) {
	f := New(nil)
	applyAll(t, f, SetRegistryVersion{Version: 3}, UpsertGroup{Group: sampleGroup("g-1")})
	h := sampleGroup("g-2")
	h.Shards[1].WorkerID = "g-1-1"
	require.ErrorIs(t, applyErr(t, f, UpsertGroup{Group: h}), ErrConflict)
	require.Len(t, f.Groups(), 1)
}

// A worker's group is a version 3 field: not written before the cluster
// is at 3.
func TestWorkerGroupNeedsVersion3(t *testing.T) {
	w := Worker{ID: "w-1", NodeID: "n1", Model: "m", State: WorkerReady, Group: "g-1", UpdatedAt: time.Unix(1, 0).UTC()}
	require.ErrorIs(t, CheckWritable(enc(t, UpsertWorker{Worker: w}), 2), ErrNeedsVersion)
	require.NoError(t, CheckWritable(enc(t, UpsertWorker{Worker: w}), 3))
	w.Group = ""
	require.NoError(t, CheckWritable(enc(t, UpsertWorker{Worker: w}), 2))

	f := New(nil)
	w.Group = "g-1"
	applyAll(t, f, SetRegistryVersion{Version: 3}, UpsertWorker{Worker: w})
	got, ok := f.Worker("w-1")
	require.True(t, ok)
	require.Equal(t, "g-1", got.Group)
	st, err := ReadSnapshot(bytes.NewReader(snapshotOf(t, f)))
	require.NoError(t, err)
	got, _ = st.Worker("w-1")
	require.Equal(t, "g-1", got.Group, "kept by a snapshot")
}

package fsm

import (
	"fmt"
	"reflect"
	"sort"
	"time"
)

// GroupState is the registry lifecycle of a sharded worker group.
type GroupState string

// Group states. A group is starting while its shards spawn, ready once its
// head serves, failed when a shard's worker or node is lost (the leader
// then re-plans it), retiring once a user retired it (its shards drain and
// stop; the leader deletes the entry when they are gone).
const (
	GroupStarting GroupState = "starting"
	GroupReady    GroupState = "ready"
	GroupFailed   GroupState = "failed"
	GroupRetiring GroupState = "retiring"
)

// Valid reports whether s is one of the defined group states.
func (s GroupState) Valid() bool {
	switch s {
	case GroupStarting, GroupReady, GroupFailed, GroupRetiring:
		return true
	}
	return false
}

// Group modes.
const (
	GroupPipeline = "pipeline"
	GroupTensor   = "tensor"
)

// MaxGroupShards bounds a group's shards: a shard count is at most the
// model's KV heads (tensor) or layers (pipeline); 64 covers every model in
// use and keeps an entry small.
const MaxGroupShards = 64

// Group is one model served by worker processes on several nodes: a
// pipeline of layer ranges or a tensor split of KV heads. Shards[0] is the
// head, the only worker requests are routed to; the others serve only
// their head. Threads, Slots, Ctx, KVCache and Version are the spawn's
// parameters, kept so that the leader can re-plan the group with the same
// ones.
type Group struct {
	ID      string       `json:"id"`
	Model   string       `json:"model"`
	Mode    string       `json:"mode"`
	State   GroupState   `json:"state"`
	Shards  []GroupShard `json:"shards"`
	Threads int          `json:"threads,omitempty"`
	Slots   int          `json:"slots,omitempty"`
	Ctx     int          `json:"ctx,omitempty"`
	KVCache string       `json:"kv_cache,omitempty"` // the shards' KV cache type (empty: the default)
	// Version is the cpu worker binary version the spawn asked for
	// (empty: each hive's default).
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"` // why the group failed
	// Placement is the token of the placement that wrote the entry's
	// current shards (a random id per placement or re-plan): its final
	// write (ready) and its own failure expect it, so two placements of
	// one group can never both finish.
	Placement string    `json:"placement,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// GroupShard is one worker of a group: the node it runs on, its worker id,
// and its part: layers [Lo, Hi) (pipeline) or KV heads [Lo, Hi) (tensor).
type GroupShard struct {
	NodeID   string `json:"node_id"`
	WorkerID string `json:"worker_id"`
	Lo       int    `json:"lo"`
	Hi       int    `json:"hi"`
}

// Clone returns a deep copy.
func (g Group) Clone() Group {
	g.Shards = append([]GroupShard(nil), g.Shards...)
	return g
}

// Head returns the group's head shard.
func (g Group) Head() GroupShard {
	if len(g.Shards) == 0 {
		return GroupShard{}
	}
	return g.Shards[0]
}

func (g *Group) validate() error {
	if err := checkID("group id", g.ID); err != nil {
		return err
	}
	if err := checkID("group model", g.Model); err != nil {
		return err
	}
	if g.Mode != GroupPipeline && g.Mode != GroupTensor {
		return fmt.Errorf("%w: group mode %q", ErrInvalid, g.Mode)
	}
	if !g.State.Valid() {
		return fmt.Errorf("%w: group state %q", ErrInvalid, g.State)
	}
	if len(g.Shards) < 2 || len(g.Shards) > MaxGroupShards {
		return fmt.Errorf("%w: group of %d shards (want 2..%d)", ErrInvalid, len(g.Shards), MaxGroupShards)
	}
	if len(g.Error) > maxIDLen {
		return fmt.Errorf("%w: group error longer than %d bytes", ErrInvalid, maxIDLen)
	}
	if len(g.Placement) > maxIDLen {
		return fmt.Errorf("%w: group placement longer than %d bytes", ErrInvalid, maxIDLen)
	}
	if len(g.Version) > maxIDLen {
		return fmt.Errorf("%w: group worker version longer than %d bytes", ErrInvalid, maxIDLen)
	}
	if g.KVCache != "" && g.KVCache != "f16" && g.KVCache != "f32" {
		return fmt.Errorf("%w: group KV cache type %q", ErrInvalid, g.KVCache)
	}
	seen := map[string]bool{}
	for i, s := range g.Shards {
		if err := checkID("group shard node id", s.NodeID); err != nil {
			return err
		}
		if err := checkID("group shard worker id", s.WorkerID); err != nil {
			return err
		}
		if seen[s.WorkerID] {
			return fmt.Errorf("%w: group worker %q twice", ErrInvalid, s.WorkerID)
		}
		seen[s.WorkerID] = true
		if s.Lo < 0 || s.Hi <= s.Lo || i == 0 && s.Lo != 0 || i > 0 && s.Lo != g.Shards[i-1].Hi {
			return fmt.Errorf("%w: group shard %d range [%d, %d)", ErrInvalid, i, s.Lo, s.Hi)
		}
	}
	return nil
}

func (g *Group) normalize() {
	g.CreatedAt, g.UpdatedAt = g.CreatedAt.UTC(), g.UpdatedAt.UTC()
}

// GroupExpect is what a group write expects of the stored entry
// (compare-and-set): a writer states what it read, and the write is an
// ErrConflict when the entry changed meanwhile. Absent: there is no entry.
// Otherwise the entry must exist, in State when set and with Placement
// when set.
type GroupExpect struct {
	Absent    bool       `json:"absent,omitempty"`
	State     GroupState `json:"state,omitempty"`
	Placement string     `json:"placement,omitempty"`
}

func (e *GroupExpect) validate() error {
	if e == nil {
		return nil
	}
	if e.Absent && (e.State != "" || e.Placement != "") {
		return fmt.Errorf("%w: group expectation: absent with a state or placement", ErrInvalid)
	}
	if e.State != "" && !e.State.Valid() {
		return fmt.Errorf("%w: group expectation: state %q", ErrInvalid, e.State)
	}
	if len(e.Placement) > maxIDLen {
		return fmt.Errorf("%w: group expectation: placement longer than %d bytes", ErrInvalid, maxIDLen)
	}
	return nil
}

// check compares the expectation with the stored entry (nil: none).
func (e *GroupExpect) check(id string, old *Group) error {
	switch {
	case e == nil:
		return nil
	case e.Absent && old != nil:
		return fmt.Errorf("%w: group %q exists (%s)", ErrConflict, id, old.State)
	case e.Absent:
		return nil
	case old == nil:
		return fmt.Errorf("%w: group %q is gone", ErrConflict, id)
	case e.State != "" && old.State != e.State:
		return fmt.Errorf("%w: group %q is %s, not %s", ErrConflict, id, old.State, e.State)
	case e.Placement != "" && old.Placement != e.Placement:
		return fmt.Errorf("%w: group %q was placed again (placement %s, not %s)", ErrConflict, id, old.Placement, e.Placement)
	}
	return nil
}

// UpsertGroup creates a group or replaces it (state, shards after a
// re-plan). A zero CreatedAt keeps the stored one. The write is refused
// (ErrConflict, nothing changes) when:
//   - Expect is set and the stored entry does not match it;
//   - the stored entry is retiring and the new one is not: a retired
//     group only drains and is deleted;
//   - another group lists one of its workers.
//
// Writing exactly the stored entry is a no-op, whatever Expect says: a
// retry of a write that committed succeeds.
type UpsertGroup struct {
	Group  Group        `json:"group"`
	Expect *GroupExpect `json:"expect,omitempty"`
}

// DeleteGroup removes a group entry. Deleting a missing group changes
// nothing (whatever Expect says). With Expect, a stored entry that does
// not match is an ErrConflict. Its workers are separate entries, retired
// on their own.
type DeleteGroup struct {
	ID     string       `json:"id"`
	Expect *GroupExpect `json:"expect,omitempty"`
}

// Type implements Command.
func (UpsertGroup) Type() CommandType { return TypeUpsertGroup }

// Type implements Command.
func (DeleteGroup) Type() CommandType { return TypeDeleteGroup }

func (c UpsertGroup) validate() error {
	if err := c.Group.validate(); err != nil {
		return err
	}
	return c.Expect.validate()
}

func (c DeleteGroup) validate() error {
	if err := checkID("group id", c.ID); err != nil {
		return err
	}
	if c.Expect != nil && c.Expect.Absent {
		return fmt.Errorf("%w: delete expecting an absent group", ErrInvalid)
	}
	return c.Expect.validate()
}

func (c UpsertGroup) apply(t *txn) (bool, error) {
	g := c.Group.Clone()
	old := t.next.groups[g.ID]
	if old != nil {
		if g.CreatedAt.IsZero() {
			g.CreatedAt = old.CreatedAt
		}
		if reflect.DeepEqual(*old, g) {
			return false, nil
		}
	} else if g.CreatedAt.IsZero() {
		g.CreatedAt = g.UpdatedAt
	}
	if err := c.Expect.check(g.ID, old); err != nil {
		return false, err
	}
	if old != nil && old.State == GroupRetiring && g.State != GroupRetiring {
		return false, fmt.Errorf("%w: group %q is retiring", ErrConflict, g.ID)
	}
	// One worker serves one group. Groups are few (each holds a model on
	// several hives), so a scan is cheap.
	mine := make(map[string]bool, len(g.Shards))
	for _, s := range g.Shards {
		mine[s.WorkerID] = true
	}
	for _, o := range t.next.groups {
		if o.ID == g.ID {
			continue
		}
		for _, s := range o.Shards {
			if mine[s.WorkerID] {
				return false, fmt.Errorf("%w: worker %q is a shard of group %q", ErrConflict, s.WorkerID, o.ID)
			}
		}
	}
	t.groupsW()[g.ID] = &g
	return true, nil
}

func (c DeleteGroup) apply(t *txn) (bool, error) {
	old, ok := t.next.groups[c.ID]
	if !ok {
		return false, nil
	}
	if err := c.Expect.check(c.ID, old); err != nil {
		return false, err
	}
	delete(t.groupsW(), c.ID)
	return true, nil
}

func (t *txn) groupsW() map[string]*Group {
	if !t.dirty[6] {
		t.next.groups, t.dirty[6] = cloneMap(t.base.groups), true
	}
	return t.next.groups
}

// Groups returns all groups sorted by id.
func (s *State) Groups() []Group {
	out := make([]Group, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Group returns the group with the given id.
func (s *State) Group(id string) (Group, bool) {
	g, ok := s.groups[id]
	if !ok {
		return Group{}, false
	}
	return g.Clone(), true
}

// GroupOf returns the group that worker id is a shard of.
func (s *State) GroupOf(workerID string) (Group, bool) {
	for _, g := range s.groups {
		for _, sh := range g.Shards {
			if sh.WorkerID == workerID {
				return g.Clone(), true
			}
		}
	}
	return Group{}, false
}

// Groups returns all groups sorted by id.
func (f *FSM) Groups() []Group { return f.State().Groups() }

// Group returns the group with the given id.
func (f *FSM) Group(id string) (Group, bool) { return f.State().Group(id) }

// GroupOf returns the group that worker id is a shard of.
func (f *FSM) GroupOf(workerID string) (Group, bool) { return f.State().GroupOf(workerID) }

func (l *loader) group(g Group) {
	if l.err != nil {
		return
	}
	if err := g.validate(); err != nil {
		l.err = fmt.Errorf("snapshot group: %w", err)
		return
	}
	if _, dup := l.st.groups[g.ID]; dup {
		l.err = fmt.Errorf("%w: snapshot has group %q twice", ErrMalformed, g.ID)
		return
	}
	g.normalize()
	l.st.groups[g.ID] = &g
}

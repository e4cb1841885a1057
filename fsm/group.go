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
// their head. Threads, Slots and Ctx are the spawn's parameters, kept so
// that the leader can re-plan the group with the same ones.
type Group struct {
	ID        string       `json:"id"`
	Model     string       `json:"model"`
	Mode      string       `json:"mode"`
	State     GroupState   `json:"state"`
	Shards    []GroupShard `json:"shards"`
	Threads   int          `json:"threads,omitempty"`
	Slots     int          `json:"slots,omitempty"`
	Ctx       int          `json:"ctx,omitempty"`
	Error     string       `json:"error,omitempty"` // why the group failed
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
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

// UpsertGroup creates a group or replaces it (state, shards after a
// re-plan). A zero CreatedAt keeps the stored one.
type UpsertGroup struct {
	Group Group `json:"group"`
}

// DeleteGroup removes a group entry. Deleting a missing group changes
// nothing. Its workers are separate entries, retired on their own.
type DeleteGroup struct {
	ID string `json:"id"`
}

// Type implements Command.
func (UpsertGroup) Type() CommandType { return TypeUpsertGroup }

// Type implements Command.
func (DeleteGroup) Type() CommandType { return TypeDeleteGroup }

func (c UpsertGroup) validate() error { return c.Group.validate() }

func (c DeleteGroup) validate() error { return checkID("group id", c.ID) }

func (c UpsertGroup) apply(t *txn) (bool, error) {
	g := c.Group.Clone()
	if old, ok := t.next.groups[g.ID]; ok {
		if g.CreatedAt.IsZero() {
			g.CreatedAt = old.CreatedAt
		}
		if reflect.DeepEqual(*old, g) {
			return false, nil
		}
	} else if g.CreatedAt.IsZero() {
		g.CreatedAt = g.UpdatedAt
	}
	t.groupsW()[g.ID] = &g
	return true, nil
}

func (c DeleteGroup) apply(t *txn) (bool, error) {
	if _, ok := t.next.groups[c.ID]; !ok {
		return false, nil
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

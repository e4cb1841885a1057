package fsm

import (
	"fmt"
	"maps"
	"reflect"
	"sort"
	"strings"
)

// State is an immutable view of the registry at one log index. The FSM
// never modifies a State it has published: every applied command builds a
// new State that shares the unchanged maps with the previous one
// (copy-on-write per table). A *State is therefore safe for concurrent use
// without locks, and accessors return deep copies so callers cannot alter it.
type State struct {
	index uint64
	// nodesAt is the index of the last command that wrote the nodes
	// table (or of the restored snapshot): see NodesChanged.
	nodesAt uint64
	// Values are pointers for cheap table clones; a stored value is never
	// modified (writers store a new pointer).
	nodes    map[string]*Node
	workers  map[string]*Worker
	models   map[string]*ModelHolding
	binaries map[string]*BinaryHolding
	hosts    map[string]*Host
	apiKeys  map[string]*APIKey
	groups   map[string]*Group
	// ca is the cluster CA, nil until one is created; the pointed-to
	// value is never modified.
	ca *ClusterCA
	// version is the registry version the cluster agreed on (0 = 1; see
	// SetRegistryVersion).
	version int
	// once remembers the applied Once envelopes (once.go).
	once onceRecords
}

func emptyState() *State {
	return &State{
		nodes:    map[string]*Node{},
		workers:  map[string]*Worker{},
		models:   map[string]*ModelHolding{},
		binaries: map[string]*BinaryHolding{},
		hosts:    map[string]*Host{},
		apiKeys:  map[string]*APIKey{},
		groups:   map[string]*Group{},
	}
}

// APIKeys returns the API keys sorted by name.
func (s *State) APIKeys() []APIKey {
	out := make([]APIKey, 0, len(s.apiKeys))
	for _, k := range s.apiKeys {
		out = append(out, *k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ClusterCA returns the cluster's certificate authority, if one exists.
func (s *State) ClusterCA() (ClusterCA, bool) {
	if s.ca == nil {
		return ClusterCA{}, false
	}
	return *s.ca, true
}

// Index returns the Raft log index of the last successfully applied command
// (or of the restored snapshot).
func (s *State) Index() uint64 { return s.index }

// NodesChanged is the index at which the nodes table last changed (or the
// snapshot's index, after a restore): it moves whenever Nodes would
// return something else, and not with writes to other tables, so a
// reader that scans the nodes periodically can skip unchanged scans.
func (s *State) NodesChanged() uint64 { return s.nodesAt }

// Nodes returns all nodes sorted by id.
func (s *State) Nodes() []Node {
	out := make([]Node, 0, len(s.nodes))
	for _, n := range s.nodes {
		out = append(out, n.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// RangeNodes calls fn with every node, in no order, until fn returns
// false: for loops that look at a few fields of every node often, without
// Nodes' deep copies and sort. The node's slices and pointers are shared
// with the registry: fn must not modify or keep them.
func (s *State) RangeNodes(fn func(n Node) bool) {
	for _, n := range s.nodes {
		if !fn(*n) {
			return
		}
	}
}

// Node returns the node with the given peer id.
func (s *State) Node(id string) (Node, bool) {
	n, ok := s.nodes[id]
	if !ok {
		return Node{}, false
	}
	return n.Clone(), true
}

// NodeByName returns the node with the given name. Names are not unique
// keys; when several nodes share a name the one with the smallest id wins,
// so every replica answers the same.
func (s *State) NodeByName(name string) (Node, bool) {
	var best *Node
	for _, n := range s.nodes {
		if n.Name == name && (best == nil || n.ID < best.ID) {
			best = n
		}
	}
	if best == nil {
		return Node{}, false
	}
	return best.Clone(), true
}

// Workers returns all workers sorted by id.
func (s *State) Workers() []Worker {
	out := make([]Worker, 0, len(s.workers))
	for _, w := range s.workers {
		out = append(out, *w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// WorkersWhere returns the workers keep accepts, sorted by id; keep sees
// every worker (read-only) and only those it accepts are copied.
func (s *State) WorkersWhere(keep func(w *Worker) bool) []Worker {
	var out []Worker
	for _, w := range s.workers {
		if keep(w) {
			out = append(out, *w)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Worker returns the worker with the given id.
func (s *State) Worker(id string) (Worker, bool) {
	w, ok := s.workers[id]
	if !ok {
		return Worker{}, false
	}
	return *w, true
}

// Models returns all model holdings sorted by (node id, model id).
func (s *State) Models() []ModelHolding {
	out := make([]ModelHolding, 0, len(s.models))
	for _, m := range s.models {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Binaries returns all binary holdings sorted by key.
func (s *State) Binaries() []BinaryHolding {
	out := make([]BinaryHolding, 0, len(s.binaries))
	for _, b := range s.binaries {
		out = append(out, *b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Hosts returns all inventory hosts sorted by name.
func (s *State) Hosts() []Host {
	out := make([]Host, 0, len(s.hosts))
	for _, h := range s.hosts {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Host returns the inventory host with the given name.
func (s *State) Host(name string) (Host, bool) {
	h, ok := s.hosts[name]
	if !ok {
		return Host{}, false
	}
	return *h, true
}

// txn builds the next State from a base, cloning each table on its first
// write so untouched tables stay shared.
type txn struct {
	base  *State
	next  State
	dirty [7]bool
}

func newTxn(base *State) *txn {
	return &txn{base: base, next: *base}
}

func cloneMap[V any](m map[string]*V) map[string]*V {
	if out := maps.Clone(m); out != nil {
		return out
	}
	return map[string]*V{}
}

func (t *txn) nodesW() map[string]*Node {
	if !t.dirty[0] {
		t.next.nodes, t.dirty[0] = cloneMap(t.base.nodes), true
	}
	return t.next.nodes
}

func (t *txn) workersW() map[string]*Worker {
	if !t.dirty[1] {
		t.next.workers, t.dirty[1] = cloneMap(t.base.workers), true
	}
	return t.next.workers
}

func (t *txn) modelsW() map[string]*ModelHolding {
	if !t.dirty[2] {
		t.next.models, t.dirty[2] = cloneMap(t.base.models), true
	}
	return t.next.models
}

func (t *txn) binariesW() map[string]*BinaryHolding {
	if !t.dirty[3] {
		t.next.binaries, t.dirty[3] = cloneMap(t.base.binaries), true
	}
	return t.next.binaries
}

func (t *txn) hostsW() map[string]*Host {
	if !t.dirty[4] {
		t.next.hosts, t.dirty[4] = cloneMap(t.base.hosts), true
	}
	return t.next.hosts
}

func (t *txn) apiKeysW() map[string]*APIKey {
	if !t.dirty[5] {
		t.next.apiKeys, t.dirty[5] = cloneMap(t.base.apiKeys), true
	}
	return t.next.apiKeys
}

func (c UpsertNode) apply(t *txn) (bool, error) {
	n := c.Node.Clone()
	old, ok := t.next.nodes[n.ID]
	if ok {
		if n.Capabilities == nil && old.Capabilities != nil {
			caps := old.Capabilities.Clone()
			n.Capabilities = &caps
		}
		if n.JoinedAt.IsZero() {
			n.JoinedAt = old.JoinedAt
		}
		if reflect.DeepEqual(*old, n) {
			return false, nil
		}
	} else if n.JoinedAt.IsZero() {
		n.JoinedAt = n.UpdatedAt
	}
	t.nodesW()[n.ID] = &n
	return true, nil
}

func (c SetNodeCapabilities) apply(t *txn) (bool, error) {
	old, ok := t.next.nodes[c.ID]
	if !ok {
		return false, fmt.Errorf("%w: node %q", ErrNotFound, c.ID)
	}
	caps := c.Capabilities.Clone()
	if old.Capabilities != nil && reflect.DeepEqual(*old.Capabilities, caps) {
		return false, nil
	}
	n := old.Clone()
	n.Capabilities = &caps
	n.UpdatedAt = c.At
	t.nodesW()[n.ID] = &n
	return true, nil
}

func (c SetNodeState) apply(t *txn) (bool, error) {
	old, ok := t.next.nodes[c.ID]
	if !ok {
		return false, fmt.Errorf("%w: node %q", ErrNotFound, c.ID)
	}
	if old.State == c.State {
		return false, nil
	}
	n := old.Clone()
	n.State = c.State
	n.UpdatedAt = c.At
	t.nodesW()[n.ID] = &n
	return true, nil
}

func (c DeleteNode) apply(t *txn) (bool, error) {
	if _, ok := t.next.nodes[c.ID]; !ok {
		return false, nil
	}
	delete(t.nodesW(), c.ID)
	// Cascade: workers and holdings cannot outlive their node. Only
	// deletions happen in these loops, so map order does not matter.
	for id, w := range t.next.workers {
		if w.NodeID == c.ID {
			delete(t.workersW(), id)
		}
	}
	for k, m := range t.next.models {
		if m.NodeID == c.ID {
			delete(t.modelsW(), k)
		}
	}
	for k, b := range t.next.binaries {
		if b.NodeID == c.ID {
			delete(t.binariesW(), k)
		}
	}
	return true, nil
}

func (c UpsertWorker) apply(t *txn) (bool, error) {
	w := c.Worker
	old, ok := t.next.workers[w.ID]
	if ok {
		if old.State == WorkerGone {
			return false, fmt.Errorf("%w: worker %q is gone", ErrConflict, w.ID)
		}
		if w.RegisteredAt.IsZero() {
			w.RegisteredAt = old.RegisteredAt
		}
		if *old == w {
			return false, nil
		}
	} else if w.RegisteredAt.IsZero() {
		w.RegisteredAt = w.UpdatedAt
	}
	t.workersW()[w.ID] = &w
	return true, nil
}

func (c SetWorkerState) apply(t *txn) (bool, error) {
	old, ok := t.next.workers[c.ID]
	if !ok {
		return false, fmt.Errorf("%w: worker %q", ErrNotFound, c.ID)
	}
	if old.State == c.State {
		return false, nil
	}
	if old.State == WorkerGone {
		return false, fmt.Errorf("%w: worker %q is gone", ErrConflict, c.ID)
	}
	w := *old
	w.State = c.State
	w.UpdatedAt = c.At
	t.workersW()[w.ID] = &w
	return true, nil
}

func (c DeleteWorker) apply(t *txn) (bool, error) {
	if _, ok := t.next.workers[c.ID]; !ok {
		return false, nil
	}
	delete(t.workersW(), c.ID)
	return true, nil
}

func (c UpsertModelHolding) apply(t *txn) (bool, error) {
	h := c.Holding
	k := h.Key()
	if old, ok := t.next.models[k]; ok && *old == h {
		return false, nil
	}
	t.modelsW()[k] = &h
	return true, nil
}

func (c DeleteModelHolding) apply(t *txn) (bool, error) {
	k := ModelHolding{NodeID: c.NodeID, ModelID: c.ModelID}.Key()
	if _, ok := t.next.models[k]; !ok {
		return false, nil
	}
	delete(t.modelsW(), k)
	return true, nil
}

func (c UpsertBinaryHolding) apply(t *txn) (bool, error) {
	h := c.Holding
	k := h.Key()
	if old, ok := t.next.binaries[k]; ok && *old == h {
		return false, nil
	}
	t.binariesW()[k] = &h
	return true, nil
}

func (c DeleteBinaryHolding) apply(t *txn) (bool, error) {
	k := BinaryHolding{NodeID: c.NodeID, Type: c.WorkerType, Version: c.Version, OS: c.OS, Arch: c.Arch}.Key()
	if _, ok := t.next.binaries[k]; !ok {
		return false, nil
	}
	delete(t.binariesW(), k)
	return true, nil
}

func (c UpsertHost) apply(t *txn) (bool, error) {
	h := c.Host
	if old, ok := t.next.hosts[h.Name]; ok && *old == h {
		return false, nil
	}
	t.hostsW()[h.Name] = &h
	return true, nil
}

func (c DeleteHost) apply(t *txn) (bool, error) {
	if _, ok := t.next.hosts[c.Name]; !ok {
		return false, nil
	}
	delete(t.hostsW(), c.Name)
	return true, nil
}

func (c CreateAPIKey) apply(t *txn) (bool, error) {
	if old, ok := t.next.apiKeys[c.Key.Name]; ok {
		if old.Hash == c.Key.Hash && old.Scope == c.Key.Scope {
			// The same create again: a retry of a write whose first
			// attempt committed unacknowledged (leader change).
			return false, nil
		}
		return false, fmt.Errorf("%w: an API key named %q exists (revoke it first)", ErrConflict, c.Key.Name)
	}
	k := c.Key
	t.apiKeysW()[k.Name] = &k
	return true, nil
}

func (c DeleteAPIKey) apply(t *txn) (bool, error) {
	if _, ok := t.next.apiKeys[c.Name]; !ok {
		return false, nil
	}
	delete(t.apiKeysW(), c.Name)
	return true, nil
}

func (c CreateClusterCA) apply(t *txn) (bool, error) {
	if t.next.ca != nil {
		return false, fmt.Errorf("%w: the cluster already has a CA", ErrConflict)
	}
	ca := c.CA
	t.next.ca = &ca
	return true, nil
}

// clusterCAKey is the change-event key of the cluster CA (there is one).
const clusterCAKey = "cluster_ca"

// keyOf names the entity a command touches, for change events.
func keyOf(cmd Command) string {
	switch c := cmd.(type) {
	case *UpsertNode:
		return c.Node.ID
	case *SetNodeCapabilities:
		return c.ID
	case *SetNodeState:
		return c.ID
	case *DeleteNode:
		return c.ID
	case *UpsertWorker:
		return c.Worker.ID
	case *SetWorkerState:
		return c.ID
	case *DeleteWorker:
		return c.ID
	case *UpsertModelHolding:
		return strings.ReplaceAll(c.Holding.Key(), "\x00", "/")
	case *DeleteModelHolding:
		return c.NodeID + "/" + c.ModelID
	case *UpsertBinaryHolding:
		return strings.ReplaceAll(c.Holding.Key(), "\x00", "/")
	case *DeleteBinaryHolding:
		return strings.Join([]string{c.NodeID, c.WorkerType, c.Version, c.OS, c.Arch}, "/")
	case *UpsertHost:
		return c.Host.Name
	case *DeleteHost:
		return c.Name
	case *CreateAPIKey:
		return c.Key.Name
	case *DeleteAPIKey:
		return c.Name
	case *CreateClusterCA:
		return clusterCAKey
	case *UpsertGroup:
		return c.Group.ID
	case *DeleteGroup:
		return c.ID
	}
	return ""
}

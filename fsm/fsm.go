// Package fsm is rbee's replicated registry: a raft.FSM whose state holds the
// cluster's nodes, workers, model and binary holdings and SSH inventory.
//
// Changes arrive as typed commands (see Encode) in the Raft log. Apply is
// deterministic: it reads nothing but the command and the current state, so
// every replica fed the same log ends in the same state. Reads go through
// immutable State values that are safe for concurrent use.
package fsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
)

// Errors returned (wrapped) by Encode, Decode, Apply and Restore.
var (
	// ErrUnknownCommand: the command type byte is not defined.
	ErrUnknownCommand = errors.New("fsm: unknown command type")
	// ErrMalformed: the command or snapshot bytes do not parse.
	ErrMalformed = errors.New("fsm: malformed")
	// ErrInvalid: the command parses but a field has an invalid value.
	ErrInvalid = errors.New("fsm: invalid command")
	// ErrNotFound: the command targets an entity that does not exist.
	ErrNotFound = errors.New("fsm: not found")
	// ErrConflict: the command contradicts the entity's state (a gone worker).
	ErrConflict = errors.New("fsm: conflict")
	// ErrSnapshotVersion: the snapshot was written in an unsupported format.
	ErrSnapshotVersion = errors.New("fsm: unsupported snapshot version")
)

// ErrorCode returns a stable short code for err's sentinel ("" when err
// wraps none of them), so that an Apply error can cross the network and be
// rebuilt with ErrorFromCode.
func ErrorCode(err error) string {
	switch {
	case errors.Is(err, ErrUnknownCommand):
		return "unknown_command"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrSnapshotVersion):
		return "snapshot_version"
	case errors.Is(err, ErrExpired):
		return "expired"
	}
	return ""
}

// ErrorFromCode rebuilds an error produced by ErrorCode: the result wraps the
// matching sentinel (if any) and carries msg as its text.
func ErrorFromCode(code, msg string) error {
	var s error
	switch code {
	case "unknown_command":
		s = ErrUnknownCommand
	case "malformed":
		s = ErrMalformed
	case "invalid":
		s = ErrInvalid
	case "not_found":
		s = ErrNotFound
	case "conflict":
		s = ErrConflict
	case "snapshot_version":
		s = ErrSnapshotVersion
	case "expired":
		s = ErrExpired
	default:
		return errors.New(msg)
	}
	return &codedError{sentinel: s, msg: msg}
}

type codedError struct {
	sentinel error
	msg      string
}

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Unwrap() error { return e.sentinel }

// Result is what Apply returns for a successfully applied command (raft
// hands it back through ApplyFuture.Response). A failed command returns an
// error value instead.
type Result struct {
	// Index is the Raft log index of the command.
	Index uint64 `json:"index"`
	// Type is the command type.
	Type CommandType `json:"type"`
	// Changed is false when the command was valid but left the state as it
	// was (an upsert of identical data, a delete of a missing entry).
	Changed bool `json:"changed"`
}

// Event tells a subscriber that the state changed.
type Event struct {
	// Index is the state's index after the change.
	Index uint64
	// Type is the applied command's type; 0 for a snapshot restore.
	Type CommandType
	// Key names the entity the command touched ("" for a restore).
	Key string
}

// subscriberBuffer is how many events a subscriber may fall behind before
// further events are dropped for it. Registry changes come in small bursts
// (a node joining registers a few workers); 64 absorbs those.
const subscriberBuffer = 64

// FSM is the registry state machine. Apply, Snapshot and Restore are called
// by raft from one goroutine; all read methods are safe for concurrent use
// from any goroutine.
type FSM struct {
	log *slog.Logger
	// supports is the newest registry version this FSM applies: Version,
	// or less to act as an older build (WithSupportedVersion, for tests of
	// mixed clusters).
	supports int
	// halted is set (under mu) when a log entry could not be applied
	// because this build does not know it; see Halted.
	halted error

	mu    sync.RWMutex
	state *State

	subMu sync.Mutex
	subs  map[chan Event]struct{}
}

// Option configures an FSM.
type Option func(*FSM)

// WithSupportedVersion makes the FSM behave as a build that supports
// registry versions 1..v only: newer command types are unknown to it and
// newer snapshot formats unreadable. Tests of rolling upgrades use it to
// run "old builds" next to new ones.
func WithSupportedVersion(v int) Option {
	return func(f *FSM) { f.supports = min(max(v, 1), Version) }
}

// New returns an FSM with an empty registry. A nil logger discards.
func New(logger *slog.Logger, opts ...Option) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &FSM{log: logger, supports: Version, state: emptyState(), subs: map[chan Event]struct{}{}}
	for _, o := range opts {
		o(f)
	}
	return f
}

// SupportedVersion is the newest registry version this FSM applies.
func (f *FSM) SupportedVersion() int { return f.supports }

// Halted returns the error that stopped this replica (wrapping ErrHalted),
// or nil. A halted replica applies nothing more and takes no snapshots
// (so raft keeps the log it has not applied); a snapshot restore from a
// leader, or a restart with a newer build, resumes it.
func (f *FSM) Halted() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.halted
}

var _ raft.FSM = (*FSM)(nil)

// State returns the current immutable state.
func (f *FSM) State() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state
}

// Index returns the index of the last applied command.
func (f *FSM) Index() uint64 { return f.State().Index() }

// Nodes returns all nodes sorted by id.
func (f *FSM) Nodes() []Node { return f.State().Nodes() }

// Node returns the node with the given peer id.
func (f *FSM) Node(id string) (Node, bool) { return f.State().Node(id) }

// NodeByName returns the node with the given name.
func (f *FSM) NodeByName(name string) (Node, bool) { return f.State().NodeByName(name) }

// Workers returns all workers sorted by id.
func (f *FSM) Workers() []Worker { return f.State().Workers() }

// Worker returns the worker with the given id.
func (f *FSM) Worker(id string) (Worker, bool) { return f.State().Worker(id) }

// Models returns all model holdings.
func (f *FSM) Models() []ModelHolding { return f.State().Models() }

// Binaries returns all binary holdings.
func (f *FSM) Binaries() []BinaryHolding { return f.State().Binaries() }

// Hosts returns all inventory hosts sorted by name.
func (f *FSM) Hosts() []Host { return f.State().Hosts() }

// Host returns the inventory host with the given name.
func (f *FSM) Host(name string) (Host, bool) { return f.State().Host(name) }

// APIKeys returns the API keys (hashes, never keys) sorted by name.
func (f *FSM) APIKeys() []APIKey { return f.State().APIKeys() }

// ClusterCA returns the cluster's certificate authority, if one exists.
func (f *FSM) ClusterCA() (ClusterCA, bool) { return f.State().ClusterCA() }

// Subscribe returns a channel that receives an Event after every change of
// the state, and a function that ends the subscription and closes the
// channel. Sending never blocks Apply: when a subscriber's buffer is full,
// events are dropped for it, so a subscriber should treat an event as
// "re-read the state", not as a complete change log.
func (f *FSM) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, subscriberBuffer)
	f.subMu.Lock()
	f.subs[ch] = struct{}{}
	f.subMu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.subMu.Lock()
			delete(f.subs, ch)
			f.subMu.Unlock()
			close(ch)
		})
	}
}

func (f *FSM) notify(ev Event) {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// Apply implements raft.FSM. It returns a Result, or an error value when the
// command is unknown, malformed or invalid for the current state; in that
// case the state is unchanged (its index included).
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	res, err := f.ApplyCommand(l.Index, l.Data)
	if err != nil {
		f.log.Warn("registry command rejected", "index", l.Index, "err", err)
		return err
	}
	return res
}

// ApplyCommand applies one encoded command at the given log index. It is
// the body of Apply, exported for tools and tests that replay a log without
// raft. Callers must not call it concurrently with Apply or Restore.
func (f *FSM) ApplyCommand(index uint64, data []byte) (Result, error) {
	if err := f.Halted(); err != nil {
		return Result{}, err
	}
	// Type 0 is reserved and never written: corruption, rejected by Decode.
	if len(data) > 0 && data[0] != 0 && (Since(CommandType(data[0])) == 0 || Since(CommandType(data[0])) > f.supports) {
		return f.unknown(index, CommandType(data[0]))
	}
	if len(data) > 0 && CommandType(data[0]) == TypeOnce {
		return f.applyOnce(index, data)
	}
	a, err := apply(f.State(), index, data)
	if err != nil {
		return Result{}, err
	}
	f.commit(a)
	return a.res, nil
}

// applied is a command's outcome before it becomes the state.
type applied struct {
	next *State
	res  Result
	key  string // the changed entry's key, for the Event
}

// apply computes the state after the encoded command data at index, from
// base; it changes nothing (an error leaves base as the state).
func apply(base *State, index uint64, data []byte) (applied, error) {
	cmd, err := Decode(data)
	if err != nil {
		return applied{}, err
	}
	tx := newTxn(base)
	changed, err := cmd.apply(tx)
	if err != nil {
		return applied{}, err
	}
	tx.next.index = index
	if tx.dirty[0] { // the nodes table was written
		tx.next.nodesAt = index
	}
	next := tx.next
	return applied{next: &next, res: Result{Index: index, Type: cmd.Type(), Changed: changed}, key: keyOf(cmd)}, nil
}

// commit makes a's state the FSM's and tells subscribers of a change.
func (f *FSM) commit(a applied) {
	f.mu.Lock()
	f.state = a.next
	f.mu.Unlock()
	if a.res.Changed {
		f.notify(Event{Index: a.res.Index, Type: a.res.Type, Key: a.key})
	}
}

// unknown handles a log entry whose type this build does not know: an
// ignorable one is skipped (state and index unchanged); any other halts
// the replica, which would otherwise diverge from those that applied it.
func (f *FSM) unknown(index uint64, t CommandType) (Result, error) {
	if t&IgnorableFlag != 0 {
		f.log.Warn("skipping an ignorable registry command this build does not know", "index", index, "type", uint8(t))
		return Result{Index: index, Type: t}, nil
	}
	err := fmt.Errorf("%w at log index %d: command type %d is unknown to this build (registry version %d): a newer build wrote it; upgrade this node to resume",
		ErrHalted, index, uint8(t), f.supports)
	f.mu.Lock()
	f.halted = err
	f.mu.Unlock()
	f.log.Error("registry replica halted", "err", err)
	return Result{}, err
}

// Snapshot implements raft.FSM. It is O(1): it captures the current
// immutable state, which Persist later encodes without holding any lock.
// A halted replica refuses: a snapshot would let raft compact the log
// entries it has not applied.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.Halted(); err != nil {
		return nil, err
	}
	return &snapshot{state: f.State(), format: snapshotFormatFor(f.State(), f.supports)}, nil
}

// Restore implements raft.FSM. It decodes the whole snapshot into a new
// state and swaps it in only on success; a corrupt or unsupported snapshot
// leaves the current state untouched and returns an error.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(rc, f.supports)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.state = st
	f.halted = nil // the leader's state at a later index: consistent again
	f.mu.Unlock()
	f.notify(Event{Index: st.index})
	f.log.Info("registry restored from snapshot", "index", st.index,
		"nodes", len(st.nodes), "workers", len(st.workers))
	return nil
}

// normalizeTimes converts every timestamp of a decoded command to UTC, so
// that the stored value does not depend on the replica's local time zone.
func normalizeTimes(cmd Command) {
	switch c := cmd.(type) {
	case *UpsertNode:
		c.Node.normalize()
	case *SetNodeCapabilities:
		c.At = c.At.UTC()
	case *SetNodeState:
		c.At = c.At.UTC()
	case *UpsertWorker:
		c.Worker.normalize()
	case *SetWorkerState:
		c.At = c.At.UTC()
	case *UpsertModelHolding:
		c.Holding.UpdatedAt = c.Holding.UpdatedAt.UTC()
	case *UpsertBinaryHolding:
		c.Holding.UpdatedAt = c.Holding.UpdatedAt.UTC()
	case *UpsertHost:
		c.Host.UpdatedAt = c.Host.UpdatedAt.UTC()
	case *CreateAPIKey:
		c.Key.Created = c.Key.Created.UTC()
	case *CreateClusterCA:
		c.CA.Created = c.CA.Created.UTC()
	case *UpsertGroup:
		c.Group.normalize()
	}
}

func (n *Node) normalize() {
	n.JoinedAt, n.UpdatedAt = n.JoinedAt.UTC(), n.UpdatedAt.UTC()
}

func (w *Worker) normalize() {
	w.RegisteredAt, w.UpdatedAt = w.RegisteredAt.UTC(), w.UpdatedAt.UTC()
}

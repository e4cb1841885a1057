package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// CommandType is the first byte of every encoded command. The numbers are
// part of the replicated log format: they are append-only and never
// renumbered or reused, because logs and snapshots written by older
// versions must replay identically.
type CommandType uint8

// Command types. 0 is reserved so that a zeroed buffer never decodes.
const (
	TypeUpsertNode          CommandType = 1
	TypeSetNodeCapabilities CommandType = 2
	TypeSetNodeState        CommandType = 3
	TypeDeleteNode          CommandType = 4
	TypeUpsertWorker        CommandType = 5
	TypeSetWorkerState      CommandType = 6
	TypeDeleteWorker        CommandType = 7
	TypeUpsertModelHolding  CommandType = 8
	TypeDeleteModelHolding  CommandType = 9
	TypeUpsertBinaryHolding CommandType = 10
	TypeDeleteBinaryHolding CommandType = 11
	TypeUpsertHost          CommandType = 12
	TypeDeleteHost          CommandType = 13
	TypeCreateAPIKey        CommandType = 14
	TypeDeleteAPIKey        CommandType = 15
	TypeCreateClusterCA     CommandType = 16
	TypeSetRegistryVersion  CommandType = 17
	TypeUpsertGroup         CommandType = 18
	TypeDeleteGroup         CommandType = 19
)

// String returns the command name.
func (t CommandType) String() string {
	switch t {
	case TypeUpsertNode:
		return "UpsertNode"
	case TypeSetNodeCapabilities:
		return "SetNodeCapabilities"
	case TypeSetNodeState:
		return "SetNodeState"
	case TypeDeleteNode:
		return "DeleteNode"
	case TypeUpsertWorker:
		return "UpsertWorker"
	case TypeSetWorkerState:
		return "SetWorkerState"
	case TypeDeleteWorker:
		return "DeleteWorker"
	case TypeUpsertModelHolding:
		return "UpsertModelHolding"
	case TypeDeleteModelHolding:
		return "DeleteModelHolding"
	case TypeUpsertBinaryHolding:
		return "UpsertBinaryHolding"
	case TypeDeleteBinaryHolding:
		return "DeleteBinaryHolding"
	case TypeUpsertHost:
		return "UpsertHost"
	case TypeDeleteHost:
		return "DeleteHost"
	case TypeCreateAPIKey:
		return "CreateAPIKey"
	case TypeDeleteAPIKey:
		return "DeleteAPIKey"
	case TypeCreateClusterCA:
		return "CreateClusterCA"
	case TypeSetRegistryVersion:
		return "SetRegistryVersion"
	case TypeUpsertGroup:
		return "UpsertGroup"
	case TypeDeleteGroup:
		return "DeleteGroup"
	}
	return fmt.Sprintf("CommandType(%d)", uint8(t))
}

// MaxCommandSize bounds one encoded command. Registry entries are small
// (a node with capabilities is a few KiB); 1 MiB rejects garbage early
// without limiting any real command.
const MaxCommandSize = 1 << 20

// Command is one typed registry change. The set of implementations is
// closed: only the command structs of this package satisfy it.
type Command interface {
	// Type returns the command's wire type.
	Type() CommandType
	validate() error
	apply(tx *txn) (changed bool, err error)
}

// UpsertNode creates a node or replaces its membership fields. A nil
// Capabilities keeps the stored capabilities; a zero JoinedAt keeps the
// stored join time (or takes UpdatedAt for a new node).
type UpsertNode struct {
	Node Node `json:"node"`
}

// SetNodeCapabilities replaces a node's capabilities. The node must exist.
type SetNodeCapabilities struct {
	ID           string       `json:"id"`
	Capabilities Capabilities `json:"capabilities"`
	At           time.Time    `json:"at"`
}

// SetNodeState changes a node's membership state. The node must exist.
type SetNodeState struct {
	ID    string    `json:"id"`
	State NodeState `json:"state"`
	At    time.Time `json:"at"`
}

// DeleteNode removes a node together with its workers and holdings.
// Deleting a missing node changes nothing and is not an error.
type DeleteNode struct {
	ID string `json:"id"`
}

// UpsertWorker registers a worker or replaces it. A worker that is gone
// cannot be upserted again (ErrConflict): a new process gets a new id.
type UpsertWorker struct {
	Worker Worker `json:"worker"`
}

// SetWorkerState changes a worker's state. The worker must exist and must
// not be gone.
type SetWorkerState struct {
	ID    string      `json:"id"`
	State WorkerState `json:"state"`
	At    time.Time   `json:"at"`
}

// DeleteWorker removes a worker. Deleting a missing worker changes nothing.
type DeleteWorker struct {
	ID string `json:"id"`
}

// UpsertModelHolding records a model file on a node.
type UpsertModelHolding struct {
	Holding ModelHolding `json:"holding"`
}

// DeleteModelHolding forgets a model file on a node.
type DeleteModelHolding struct {
	NodeID  string `json:"node_id"`
	ModelID string `json:"model_id"`
}

// UpsertBinaryHolding records a worker binary on a node.
type UpsertBinaryHolding struct {
	Holding BinaryHolding `json:"holding"`
}

// DeleteBinaryHolding forgets a worker binary on a node.
type DeleteBinaryHolding struct {
	NodeID string `json:"node_id"`
	// WorkerType is BinaryHolding.Type (named apart from the Type method).
	WorkerType string `json:"type"`
	Version    string `json:"version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
}

// UpsertHost adds or replaces an SSH inventory host.
type UpsertHost struct {
	Host Host `json:"host"`
}

// DeleteHost removes an SSH inventory host.
type DeleteHost struct {
	Name string `json:"name"`
}

// CreateAPIKey adds an API key. A key of the same name must not exist
// (ErrConflict): a key is revoked and created anew, never replaced, so a
// revocation cannot be undone by a late duplicate.
type CreateAPIKey struct {
	Key APIKey `json:"key"`
}

// DeleteAPIKey revokes an API key. Deleting a missing key changes nothing.
type DeleteAPIKey struct {
	Name string `json:"name"`
}

// CreateClusterCA stores the cluster's certificate authority. It succeeds
// once: when a CA exists the command is a conflict (ErrConflict) and
// changes nothing, so two nodes that race to create one end with the CA
// whose entry the log ordered first, on every replica.
type CreateClusterCA struct {
	CA ClusterCA `json:"ca"`
}

// Type implements Command.
func (UpsertNode) Type() CommandType { return TypeUpsertNode }

// Type implements Command.
func (SetNodeCapabilities) Type() CommandType { return TypeSetNodeCapabilities }

// Type implements Command.
func (SetNodeState) Type() CommandType { return TypeSetNodeState }

// Type implements Command.
func (DeleteNode) Type() CommandType { return TypeDeleteNode }

// Type implements Command.
func (UpsertWorker) Type() CommandType { return TypeUpsertWorker }

// Type implements Command.
func (SetWorkerState) Type() CommandType { return TypeSetWorkerState }

// Type implements Command.
func (DeleteWorker) Type() CommandType { return TypeDeleteWorker }

// Type implements Command.
func (UpsertModelHolding) Type() CommandType { return TypeUpsertModelHolding }

// Type implements Command.
func (DeleteModelHolding) Type() CommandType { return TypeDeleteModelHolding }

// Type implements Command.
func (UpsertBinaryHolding) Type() CommandType { return TypeUpsertBinaryHolding }

// Type implements Command.
func (DeleteBinaryHolding) Type() CommandType { return TypeDeleteBinaryHolding }

// Type implements Command.
func (UpsertHost) Type() CommandType { return TypeUpsertHost }

// Type implements Command.
func (DeleteHost) Type() CommandType { return TypeDeleteHost }

// Type implements Command.
func (CreateAPIKey) Type() CommandType { return TypeCreateAPIKey }

// Type implements Command.
func (DeleteAPIKey) Type() CommandType { return TypeDeleteAPIKey }

// Type implements Command.
func (CreateClusterCA) Type() CommandType { return TypeCreateClusterCA }

func (c UpsertNode) validate() error { return c.Node.validate() }

func (c SetNodeCapabilities) validate() error {
	if err := checkID("node id", c.ID); err != nil {
		return err
	}
	return c.Capabilities.validate()
}

func (c SetNodeState) validate() error {
	if err := checkID("node id", c.ID); err != nil {
		return err
	}
	if !c.State.Valid() {
		return fmt.Errorf("%w: node state %q", ErrInvalid, c.State)
	}
	return nil
}

func (c DeleteNode) validate() error { return checkID("node id", c.ID) }

func (c UpsertWorker) validate() error { return c.Worker.validate() }

func (c SetWorkerState) validate() error {
	if err := checkID("worker id", c.ID); err != nil {
		return err
	}
	if !c.State.Valid() {
		return fmt.Errorf("%w: worker state %q", ErrInvalid, c.State)
	}
	return nil
}

func (c DeleteWorker) validate() error { return checkID("worker id", c.ID) }

func (c UpsertModelHolding) validate() error { return c.Holding.validate() }

func (c DeleteModelHolding) validate() error {
	return (&ModelHolding{NodeID: c.NodeID, ModelID: c.ModelID}).validate()
}

func (c UpsertBinaryHolding) validate() error { return c.Holding.validate() }

func (c DeleteBinaryHolding) validate() error {
	return (&BinaryHolding{NodeID: c.NodeID, Type: c.WorkerType}).validate()
}

func (c UpsertHost) validate() error { return c.Host.validate() }

func (c DeleteHost) validate() error { return checkID("host name", c.Name) }

func (c CreateAPIKey) validate() error { return c.Key.validate() }

func (c DeleteAPIKey) validate() error { return checkID("api key name", c.Name) }

func (c CreateClusterCA) validate() error { return c.CA.validate() }

// newCommand returns an empty command of type t, or nil for an unknown type.
func newCommand(t CommandType) Command {
	switch t {
	case TypeUpsertNode:
		return &UpsertNode{}
	case TypeSetNodeCapabilities:
		return &SetNodeCapabilities{}
	case TypeSetNodeState:
		return &SetNodeState{}
	case TypeDeleteNode:
		return &DeleteNode{}
	case TypeUpsertWorker:
		return &UpsertWorker{}
	case TypeSetWorkerState:
		return &SetWorkerState{}
	case TypeDeleteWorker:
		return &DeleteWorker{}
	case TypeUpsertModelHolding:
		return &UpsertModelHolding{}
	case TypeDeleteModelHolding:
		return &DeleteModelHolding{}
	case TypeUpsertBinaryHolding:
		return &UpsertBinaryHolding{}
	case TypeDeleteBinaryHolding:
		return &DeleteBinaryHolding{}
	case TypeUpsertHost:
		return &UpsertHost{}
	case TypeDeleteHost:
		return &DeleteHost{}
	case TypeCreateAPIKey:
		return &CreateAPIKey{}
	case TypeDeleteAPIKey:
		return &DeleteAPIKey{}
	case TypeCreateClusterCA:
		return &CreateClusterCA{}
	case TypeSetRegistryVersion:
		return &SetRegistryVersion{}
	case TypeUpsertGroup:
		return &UpsertGroup{}
	case TypeDeleteGroup:
		return &DeleteGroup{}
	}
	return nil
}

// Encode validates cmd and returns its log form: one type byte, then the
// JSON body. Both value and pointer command structs are accepted.
func Encode(cmd Command) ([]byte, error) {
	if cmd == nil {
		return nil, fmt.Errorf("%w: nil command", ErrInvalid)
	}
	if err := cmd.validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if 1+len(body) > MaxCommandSize {
		return nil, fmt.Errorf("%w: command is %d bytes, limit %d", ErrInvalid, 1+len(body), MaxCommandSize)
	}
	out := make([]byte, 1+len(body))
	out[0] = byte(cmd.Type())
	copy(out[1:], body)
	return out, nil
}

// Decode parses and validates an encoded command. Unknown fields in the
// body are ignored so that a newer proposer can add optional fields; an
// unknown type, a malformed body, trailing data or an invalid value is an
// error.
func Decode(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrMalformed)
	}
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: command is %d bytes, limit %d", ErrMalformed, len(b), MaxCommandSize)
	}
	cmd := newCommand(CommandType(b[0]))
	if cmd == nil {
		return nil, fmt.Errorf("%w: type %d", ErrUnknownCommand, b[0])
	}
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	if err := dec.Decode(cmd); err != nil {
		return nil, fmt.Errorf("%w: %s body: %v", ErrMalformed, cmd.Type(), err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: %s body: trailing data", ErrMalformed, cmd.Type())
	}
	if err := cmd.validate(); err != nil {
		return nil, err
	}
	normalizeTimes(cmd)
	return cmd, nil
}

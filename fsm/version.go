package fsm

import (
	"errors"
	"fmt"
)

// Registry versions make mixed builds safe during a rolling upgrade. Each
// build supports registry versions 1..Version; each command type (and,
// from now on, each field added to a command) belongs to the version that
// introduced it (Since). The registry records the version the whole
// cluster has agreed on (RegistryVersion, written by SetRegistryVersion
// once every server supports it), and:
//
//   - a proposer never writes a command newer than the registry version
//     (CheckWritable), so an older replica never meets one;
//   - the snapshot format follows the registry version: the typed-record
//     format (SnapshotVersion 4) is written only once every server reads it;
//   - a replica that still meets a command type it does not know halts
//     (FSM.Halted) instead of skipping it and diverging from the others,
//     unless the type carries IgnorableFlag.
const (
	// Version is the newest registry version this build supports.
	// Version 1 is every command up to TypeCreateClusterCA and snapshot
	// format 3; version 2 adds SetRegistryVersion and snapshot format 4;
	// version 3 adds sharded worker groups (UpsertGroup, DeleteGroup and
	// their snapshot record); version 4 adds exactly-once writes (the
	// TypeOnce envelope and its snapshot record, once.go).
	Version = 4
	// IgnorableFlag, set in a command's type byte, tells a replica that
	// does not know the type to skip the entry rather than halt (as
	// Consul's IgnoreUnknownTypeFlag does): for changes that old builds may
	// safely miss, such as a cache hint.
	IgnorableFlag CommandType = 0x80
)

// ErrHalted: this replica met a log entry it cannot apply (a command of a
// newer build) and stopped applying, so that it never diverges from the
// replicas that applied it. Running the newer build resumes it.
var ErrHalted = errors.New("fsm: registry halted")

// ErrNeedsVersion: a command newer than the cluster's registry version
// (some server runs an older build).
var ErrNeedsVersion = errors.New("fsm: command needs a newer registry version")

// Since returns the registry version that introduced command type t (0 for
// a type this build does not know).
func Since(t CommandType) int {
	switch {
	case t >= TypeUpsertNode && t <= TypeCreateClusterCA:
		return 1
	case t == TypeSetRegistryVersion:
		return 2
	case t == TypeUpsertGroup || t == TypeDeleteGroup:
		return 3
	case t == TypeOnce:
		return OnceVersion
	}
	return 0
}

// CheckWritable reports whether an encoded command may be proposed to a
// registry whose agreed version is regVersion: its type, and each field it
// sets that a later version added (Worker.Group: 3), must exist at that
// version. The error wraps ErrNeedsVersion and says what to upgrade.
// SetRegistryVersion is the exception: it is what raises the version
// (proposed only once every server supports the target).
func CheckWritable(data []byte, regVersion int) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty command", ErrMalformed)
	}
	t := CommandType(data[0])
	if t == TypeSetRegistryVersion {
		return nil
	}
	if t == TypeOnce {
		if regVersion < OnceVersion {
			return fmt.Errorf("%w: exactly-once writes need registry version %d; the cluster is at %d", ErrNeedsVersion, OnceVersion, regVersion)
		}
		_, _, cmd, err := DecodeOnce(data)
		if err != nil {
			return err
		}
		return CheckWritable(cmd, regVersion)
	}
	s := Since(t)
	if s == 0 {
		return fmt.Errorf("%w: command type %d is unknown to this build", ErrNeedsVersion, uint8(t))
	}
	if s > regVersion {
		return fmt.Errorf("%w: %s needs registry version %d; the cluster is at %d until every server runs a build that supports it (upgrade the older nodes)",
			ErrNeedsVersion, t, s, regVersion)
	}
	// Fields of version 3 in older commands: a worker's group. An older
	// replica would drop it and route to the shard.
	if t == TypeUpsertWorker && regVersion < 3 {
		c, err := Decode(data)
		if err != nil {
			return err
		}
		if w, ok := c.(*UpsertWorker); ok && w.Worker.Group != "" {
			return fmt.Errorf("%w: a worker's group needs registry version 3; the cluster is at %d", ErrNeedsVersion, regVersion)
		}
	}
	return nil
}

// SetRegistryVersion raises the registry version the cluster agreed on.
// The leader proposes it once every server's build supports Version; it
// never lowers the version (a lower or equal one is a no-op).
type SetRegistryVersion struct {
	Version int `json:"version"`
}

// Type implements Command.
func (SetRegistryVersion) Type() CommandType { return TypeSetRegistryVersion }

func (c SetRegistryVersion) validate() error {
	if c.Version < 1 || c.Version > 1000 {
		return fmt.Errorf("%w: registry version %d", ErrInvalid, c.Version)
	}
	return nil
}

func (c SetRegistryVersion) apply(tx *txn) (bool, error) {
	if c.Version <= tx.next.regVersion() {
		return false, nil
	}
	tx.next.version = c.Version
	return true, nil
}

// RegistryVersion is the version the cluster agreed on (1 before any
// SetRegistryVersion).
func (s *State) RegistryVersion() int { return s.regVersion() }

func (s *State) regVersion() int {
	if s.version < 1 {
		return 1
	}
	return s.version
}

// RegistryVersion is the current state's agreed registry version.
func (f *FSM) RegistryVersion() int { return f.State().RegistryVersion() }

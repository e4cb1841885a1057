package gossip

import (
	"fmt"
	"time"
)

// State is a member's liveness as this node sees it.
type State int

const (
	// StateAlive members answer probes.
	StateAlive State = iota
	// StateSuspect members missed probes; they are declared dead unless
	// they refute the suspicion in time.
	StateSuspect
	// StateDead members failed: suspected and never refuted.
	StateDead
	// StateLeft members departed gracefully with Leave.
	StateLeft
)

// String returns "alive", "suspect", "dead" or "left".
func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Member is one node of the cluster.
type Member struct {
	// ID is the memberlist node name, which is the node's libp2p peer id.
	ID string
	// Addr is the member's gossip address, "ip:port".
	Addr string
	// State is its liveness.
	State State
	// Meta is its metadata (zero if it could not be decoded).
	Meta Meta
	// Since is when State last changed in this node's view (when it
	// learnt of the member, for one that never changed), by this
	// machine's clock. Members, Member and events carry it; LocalMember
	// does not.
	Since time.Time
}

// EventType says what happened to a member.
type EventType int

const (
	// EventJoin: a member appeared (or came back after dying or leaving).
	EventJoin EventType = iota
	// EventLeave: a member left gracefully.
	EventLeave
	// EventFailed: a member was declared dead.
	EventFailed
	// EventUpdate: a member's metadata changed.
	EventUpdate
)

// String returns "join", "leave", "failed" or "update".
func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventFailed:
		return "failed"
	case EventUpdate:
		return "update"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one membership change.
type Event struct {
	Type   EventType
	Member Member
}

package gossip

import "errors"

// Sentinel errors returned (wrapped with %w) by this package. Match them with
// errors.Is.
var (
	// ErrMetaTooLarge is returned when encoded node metadata exceeds
	// memberlist.MetaMaxSize (512 bytes).
	ErrMetaTooLarge = errors.New("gossip: node metadata too large")

	// ErrMetaVersion is returned by DecodeMeta for an encoding version this
	// build does not know.
	ErrMetaVersion = errors.New("gossip: unknown node metadata version")

	// ErrMetaMalformed is returned by DecodeMeta for truncated or invalid
	// metadata.
	ErrMetaMalformed = errors.New("gossip: malformed node metadata")

	// ErrMessageTooLarge is returned by Broadcast for a message that cannot
	// fit in one gossip packet.
	ErrMessageTooLarge = errors.New("gossip: broadcast message too large")

	// ErrBadConfig is returned by New for an invalid Config.
	ErrBadConfig = errors.New("gossip: invalid config")

	// ErrNotStarted is returned by calls that need Start to have succeeded.
	ErrNotStarted = errors.New("gossip: not started")

	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("gossip: already started")

	// ErrClosed is returned by calls on a closed Gossip.
	ErrClosed = errors.New("gossip: closed")

	// ErrMetaSpreading is returned (wrapped) by UpdateMeta when its wait
	// for the update's broadcast ended first (memberlist's timeout, or
	// ctx): the metadata is set and its broadcast goes on spreading, as
	// push/pull carries it too. Calling UpdateMeta again only starts
	// another broadcast: at 100 nodes, nodes that retried on every
	// registry change kept gossip so full of their alive messages that
	// load reports took a minute to reach the leader.
	ErrMetaSpreading = errors.New("gossip: metadata set, its broadcast still spreading")

	// ErrLeft is returned by Join, UpdateMeta and a second Leave after Leave:
	// memberlist cannot rejoin after leaving; Close and create a new Gossip.
	ErrLeft = errors.New("gossip: left the cluster")

	// ErrDuplicateIdentity is what Config.OnDuplicate receives: another
	// live member answers to this node's id at another address.
	ErrDuplicateIdentity = errors.New("gossip: another member runs with this node's identity")
)

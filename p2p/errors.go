package p2p

import "errors"

// Sentinel errors returned (wrapped with %w) by this package. Match them with
// errors.Is.
var (
	// ErrFrameTooLarge is returned by ReadFrame when a frame header announces
	// more bytes than the caller allows, and by WriteFrame when the payload is
	// larger than MaxFrameSize.
	ErrFrameTooLarge = errors.New("p2p: frame too large")

	// ErrNoSecret is returned by New when Config.Secret is empty: every rbee
	// host runs in a private network derived from the cluster secret.
	ErrNoSecret = errors.New("p2p: cluster secret is required")

	// ErrBadListenAddr is returned by New when Config.ListenAddr is not an
	// "ip:port" TCP address.
	ErrBadListenAddr = errors.New("p2p: bad listen address")

	// ErrBadPeerAddr is returned by AddPeer for an address that is not a TCP
	// multiaddr or names another peer.
	ErrBadPeerAddr = errors.New("p2p: bad peer address")

	// ErrInsecureKeyFile is returned by LoadOrCreateIdentity when the key file
	// is readable or writable by group or others (like ssh, rbee refuses to
	// use such a key; fix it with chmod 600).
	ErrInsecureKeyFile = errors.New("p2p: identity key file permissions are too open")

	// ErrCorruptIdentity is returned by LoadOrCreateIdentity when the key file
	// exists but does not hold an Ed25519 libp2p private key.
	ErrCorruptIdentity = errors.New("p2p: identity key file is corrupt")

	// ErrNotStarted is returned by calls that need a listening host before
	// Start succeeded.
	ErrNotStarted = errors.New("p2p: host not started")

	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("p2p: host already started")

	// ErrClosed is returned by calls on a closed Host.
	ErrClosed = errors.New("p2p: host closed")

	// ErrPingMismatch is returned by Ping when the echo does not match what
	// was sent.
	ErrPingMismatch = errors.New("p2p: ping echo mismatch")

	// ErrNoService is returned by NewStream and Dial (and makes Handle and
	// Listen reset inbound streams) for a protocol without a Service: every
	// stream belongs to a resource-manager service.
	ErrNoService = errors.New("p2p: no service declared for protocol")

	// ErrBadService is returned by AddService for a Service without a name
	// or protocol, or with negative memory.
	ErrBadService = errors.New("p2p: invalid service")
)

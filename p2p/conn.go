package p2p

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	manet "github.com/multiformats/go-multiaddr/net"
)

// acceptTimeout is how long an inbound stream waits for Accept before it is
// reset. Accept loops (consensus's raft transport, HTTP servers) pick streams up
// in microseconds; 10 s only trips when nobody is accepting.
const acceptTimeout = 10 * time.Second

// Addr is the net.Addr of a stream endpoint: the peer id, plus the transport
// address of the underlying connection when known. String returns the peer
// id alone, so a listener's address can be used as a dialable server address
// by stream users such as raft (Dial takes the peer id).
type Addr struct {
	ID        peer.ID
	Multiaddr string
}

// Network returns "libp2p".
func (a Addr) Network() string { return "libp2p" }

// String returns the peer id.
func (a Addr) String() string { return a.ID.String() }

// Conn is a net.Conn over one libp2p stream. Close closes the stream in both
// directions; CloseWrite half-closes it; Reset aborts it. Deadlines work as
// for any net.Conn. Like a TCP connection, it supports one reader and one
// writer at a time.
type Conn struct {
	network.Stream
	local, remote Addr
}

var _ net.Conn = (*Conn)(nil)

func newConn(s network.Stream) *Conn {
	c := s.Conn()
	return &Conn{
		Stream: s,
		local:  Addr{ID: c.LocalPeer(), Multiaddr: c.LocalMultiaddr().String()},
		remote: Addr{ID: c.RemotePeer(), Multiaddr: c.RemoteMultiaddr().String()},
	}
}

// LocalAddr returns this host's Addr.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the remote peer's Addr.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Dial opens a stream to peer id speaking proto and returns it as a
// net.Conn; ctx bounds dialing and negotiation only.
func (h *Host) Dial(ctx context.Context, id peer.ID, proto protocol.ID) (net.Conn, error) {
	s, err := h.NewStream(ctx, id, proto)
	if err != nil {
		return nil, err
	}
	return newConn(s), nil
}

// Listen registers a handler for proto whose streams are returned by the
// listener's Accept as net.Conns. There is one listener per protocol:
// listening again, or calling Handle for the same protocol, replaces the
// handler. Closing the listener removes the handler and resets streams that
// were not accepted yet; accepted conns stay open. Addr().String() is this
// host's peer id. Streams are attached to proto's Service (see AddService)
// before Accept returns them; closing a conn returns its reservation.
func (h *Host) Listen(proto protocol.ID) net.Listener {
	l := &listener{
		h:      h,
		proto:  proto,
		ch:     make(chan network.Stream),
		closed: make(chan struct{}),
		addr:   Addr{ID: h.ID()},
	}
	h.Handle(proto, l.handle)
	return l
}

type listener struct {
	h      *Host
	proto  protocol.ID
	ch     chan network.Stream
	closed chan struct{}
	once   sync.Once
	addr   Addr
}

func (l *listener) handle(s network.Stream) {
	t := time.NewTimer(acceptTimeout)
	defer t.Stop()
	select {
	case l.ch <- s:
	case <-l.closed:
		_ = s.Reset()
	case <-t.C:
		l.h.log.Warn("stream not accepted in time, resetting", "protocol", l.proto, "peer", s.Conn().RemotePeer())
		_ = s.Reset()
	}
}

// Accept waits for the next inbound stream. After Close it returns an error
// wrapping net.ErrClosed.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case s := <-l.ch:
		return newConn(s), nil
	case <-l.closed:
		return nil, fmt.Errorf("p2p: accept %s: %w", l.proto, net.ErrClosed)
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		l.h.RemoveHandler(l.proto)
		close(l.closed)
	})
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

// RemoteIP is the IP address of the connection under stream s: where the
// remote peer is reachable for a direct connection (not through a relay).
func RemoteIP(s network.Stream) (netip.Addr, error) {
	ip, err := manet.ToIP(s.Conn().RemoteMultiaddr())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("p2p: remote address: %w", err)
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, fmt.Errorf("p2p: remote address %v", ip)
	}
	return a.Unmap(), nil
}

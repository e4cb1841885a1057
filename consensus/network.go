package consensus

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// ConnKind says which service a dialed connection is for.
type ConnKind uint8

// Connection kinds. The values may appear on the wire of a Network
// implementation (e.g. as part of a protocol id), so they never change.
const (
	// ConnRaft carries raft RPCs (hashicorp/raft's NetworkTransport framing).
	ConnRaft ConnKind = 1
	// ConnForward carries one forwarded request and its response.
	ConnForward ConnKind = 2
)

// String returns "raft" or "forward".
func (k ConnKind) String() string {
	switch k {
	case ConnRaft:
		return "raft"
	case ConnForward:
		return "forward"
	}
	return fmt.Sprintf("ConnKind(%d)", uint8(k))
}

// Network is how consensus reaches other servers. The node implements it
// over libp2p (one protocol per ConnKind); servers are addressed by their
// peer id, which is also their raft.ServerID and raft.ServerAddress.
//
// Consensus takes ownership of both listeners when it starts: Close closes
// them. Dial must honour ctx (deadline and cancellation) and be safe for
// concurrent use; its connections must support deadlines (raft's
// the raft transport and the forward protocol set them), as libp2p streams do.
type Network interface {
	// RaftListener accepts incoming ConnRaft connections.
	RaftListener() net.Listener
	// ForwardListener accepts incoming ConnForward connections.
	ForwardListener() net.Listener
	// Dial opens a connection of the given kind to the server with that id.
	Dial(ctx context.Context, serverID string, kind ConnKind) (net.Conn, error)
	// LocalID returns this server's id.
	LocalID() string
}

// peerAddr is a net.Addr naming a server by id.
type peerAddr string

func (a peerAddr) Network() string { return "rbee" }
func (a peerAddr) String() string  { return string(a) }

// streamLayer adapts a Network to raft.StreamLayer: raft addresses are peer
// ids, resolved by the Network.
type streamLayer struct {
	ctx  context.Context
	nw   Network
	ln   net.Listener
	idle time.Duration // see idleConn
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) { return s.ln.Accept() }
func (s *streamLayer) Close() error              { return s.ln.Close() }
func (s *streamLayer) Addr() net.Addr            { return peerAddr(s.nw.LocalID()) }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	conn, err := s.nw.Dial(ctx, string(address), ConnRaft)
	if err != nil {
		return nil, err
	}
	redial := func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(s.ctx, cancel)
		defer stop()
		return s.nw.Dial(ctx, string(address), ConnRaft)
	}
	return newIdleConn(conn, redial, s.idle), nil
}

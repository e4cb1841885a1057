// Package consensustest provides a real TCP implementation of
// consensus.Network on 127.0.0.1 for tests of consensus and its users.
package consensustest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rbee-project/rbee/consensus"
)

// ErrUnknownPeer: Dial was asked for an id the registry does not know.
var ErrUnknownPeer = errors.New("consensustest: unknown peer")

// Registry maps server ids to their listening addresses, standing in for
// the peer routing of the real p2p layer. Safe for concurrent use.
type Registry struct {
	mu    sync.Mutex
	addrs map[string][2]string // id → raft addr, forward addr
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{addrs: map[string][2]string{}}
}

// Listen opens the two listeners of server id on 127.0.0.1 (fresh ports)
// and registers them, replacing an earlier registration of that id (a
// restarted server).
func (r *Registry) Listen(id string) (*Network, error) {
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fwdLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		raftLn.Close()
		return nil, err
	}
	r.mu.Lock()
	r.addrs[id] = [2]string{raftLn.Addr().String(), fwdLn.Addr().String()}
	r.mu.Unlock()
	return &Network{id: id, reg: r, raftLn: &idListener{raftLn}, fwdLn: &idListener{fwdLn}}, nil
}

// Every dialed connection starts with a one-line hello carrying the
// caller's id (a stand-in for libp2p's authenticated peer id); accepted
// connections expose it through RemotePeerID (consensus.PeerIdentifier).
const maxHello = 256

// idListener reads the hello of each accepted connection.
type idListener struct{ net.Listener }

func (l *idListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReaderSize(c, maxHello)
		line, err := r.ReadSlice('\n')
		if err != nil || len(line) < 2 {
			c.Close() // not one of ours; keep accepting
			continue
		}
		_ = c.SetReadDeadline(time.Time{})
		return &idConn{Conn: c, r: r, peer: string(line[:len(line)-1])}, nil
	}
}

// idConn is an accepted connection whose caller said who it is.
type idConn struct {
	net.Conn
	r    *bufio.Reader
	peer string
}

func (c *idConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// RemotePeerID implements consensus.PeerIdentifier.
func (c *idConn) RemotePeerID() string { return c.peer }

func (r *Registry) lookup(id string, kind consensus.ConnKind) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.addrs[id]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownPeer, id)
	}
	switch kind {
	case consensus.ConnRaft:
		return a[0], nil
	case consensus.ConnForward:
		return a[1], nil
	}
	return "", fmt.Errorf("consensustest: unknown conn kind %d", kind)
}

// Network is one server's consensus.Network over TCP.
type Network struct {
	id     string
	reg    *Registry
	raftLn net.Listener
	fwdLn  net.Listener
}

var _ consensus.Network = (*Network)(nil)

// RaftListener implements consensus.Network.
func (n *Network) RaftListener() net.Listener { return n.raftLn }

// ForwardListener implements consensus.Network.
func (n *Network) ForwardListener() net.Listener { return n.fwdLn }

// LocalID implements consensus.Network.
func (n *Network) LocalID() string { return n.id }

// Dial implements consensus.Network.
func (n *Network) Dial(ctx context.Context, serverID string, kind consensus.ConnKind) (net.Conn, error) {
	addr, err := n.reg.lookup(serverID, kind)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetWriteDeadline(dl)
	}
	if _, err := c.Write([]byte(n.id + "\n")); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// Close closes both listeners (Consensus.Close does too; closing twice is
// harmless).
func (n *Network) Close() error {
	return errors.Join(ignoreClosed(n.raftLn.Close()), ignoreClosed(n.fwdLn.Close()))
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

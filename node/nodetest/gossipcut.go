package nodetest

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rbee-project/rbee/node"
)

// GossipCut cuts gossip between nodes of a Cluster, in process, and
// leaves their raft, libp2p and HTTP traffic alone: a firewall on the
// gossip port. Packets between cut nodes are dropped and their streams
// refused, both ways. Pass Option to New; safe for concurrent use.
type GossipCut struct {
	mu    sync.Mutex
	pairs map[[2]string]bool // gossip addresses, in order
}

// NewGossipCut returns a cut that cuts nothing yet.
func NewGossipCut() *GossipCut { return &GossipCut{pairs: map[[2]string]bool{}} }

// Option makes a node's gossip go through the cut.
func (g *GossipCut) Option(_ int, cfg *node.Config) {
	cfg.GossipWrap = func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		return &cutTransport{NodeAwareTransport: t, cut: g}
	}
}

// Isolate cuts n's gossip from every other node of c.
func (g *GossipCut) Isolate(c *Cluster, n *node.Node) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, o := range c.Nodes {
		if o != n {
			g.pairs[pair(n.GossipAddr(), o.GossipAddr())] = true
		}
	}
}

// Heal ends every cut.
func (g *GossipCut) Heal() {
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.pairs)
}

func (g *GossipCut) blocked(a, b string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pairs[pair(a, b)]
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// errCut fails a dial across the cut.
var errCut = errors.New("nodetest: gossip is cut")

// cutTransport is a node's gossip transport under a GossipCut: what it
// sends to a node across the cut goes nowhere.
type cutTransport struct {
	memberlist.NodeAwareTransport
	cut  *GossipCut
	mu   sync.Mutex
	self string // the address it advertises
}

func (t *cutTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	a, p, err := t.NodeAwareTransport.FinalAdvertiseAddr(ip, port)
	if err == nil {
		t.mu.Lock()
		t.self = net.JoinHostPort(a.String(), strconv.Itoa(p))
		t.mu.Unlock()
	}
	return a, p, err
}

func (t *cutTransport) across(addr string) bool {
	t.mu.Lock()
	self := t.self
	t.mu.Unlock()
	return t.cut.blocked(self, addr)
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.across(addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.across(a.Addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.across(addr) {
		return nil, errCut
	}
	return t.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.across(a.Addr) {
		return nil, errCut
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

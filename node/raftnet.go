package node

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/p2p"
)

// Protocol ids of the raft traffic over libp2p. The version suffix changes
// when the framing changes; raft's own RPC format is versioned by raft.
const (
	protoRaft    protocol.ID = "/rbee/raft/1.0.0"
	protoForward protocol.ID = "/rbee/raft-forward/1.0.0"
)

// raftNetwork carries raft RPCs and forwarded writes over the node's libp2p
// host; raft server addresses are peer ids.
type raftNetwork struct {
	host  *p2p.Host
	raftL net.Listener
	fwdL  net.Listener
}

func newRaftNetwork(h *p2p.Host) *raftNetwork {
	return &raftNetwork{host: h, raftL: h.Listen(protoRaft), fwdL: h.Listen(protoForward)}
}

func (r *raftNetwork) RaftListener() net.Listener    { return r.raftL }
func (r *raftNetwork) ForwardListener() net.Listener { return r.fwdL }
func (r *raftNetwork) LocalID() string               { return r.host.ID().String() }

func (r *raftNetwork) Dial(ctx context.Context, serverID string, kind consensus.ConnKind) (net.Conn, error) {
	pid, err := peer.Decode(serverID)
	if err != nil {
		return nil, fmt.Errorf("raft address %q is not a peer id: %w", serverID, err)
	}
	proto := protoRaft
	if kind == consensus.ConnForward {
		proto = protoForward
	}
	return r.host.Dial(ctx, pid, proto)
}

// voterLinksEvery: how often a node makes sure it has a libp2p connection
// to every raft voter.
const voterLinksEvery = 5 * time.Second

// voterLinksLoop keeps a libp2p connection from this node to every voter,
// protected from the host's idle close (p2p.Host.Protect). A new leader is
// one of them, and it heartbeats every raft follower at once: without a
// connection each first RPC waits for a dial and a handshake, and at 100
// nodes on one 2-core machine the last non-voter heard of the new leader
// 0.9 s after the election (about 10 ms a follower). A replica (outside
// raft, consensus.Replica) keeps none: no leader heartbeats it, its feed
// holds the one connection it needs, and its writes go through that voter
// (consensus opRelay); links from 95 replicas made every voter of 100 nodes hold
// 99 connections for nothing.
func (n *Node) voterLinksLoop() {
	defer n.wg.Done()
	t := time.NewTicker(voterLinksEvery)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		voters := map[peer.ID]bool{}
		if !n.cons.Replica() {
			servers, err := n.cons.Servers()
			if err != nil {
				continue
			}
			for _, s := range servers {
				if s.Suffrage != "voter" || s.ID == n.ID() {
					continue
				}
				if pid, err := peer.Decode(s.ID); err == nil {
					voters[pid] = true
				}
			}
		}
		for _, pid := range n.host.Protected(voterLinkTag) {
			if !voters[pid] {
				n.host.Unprotect(pid, voterLinkTag)
			}
		}
		for pid := range voters {
			n.host.Protect(pid, voterLinkTag)
			if n.host.Libp2p().Network().Connectedness(pid) == network.Connected {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, voterLinksEvery)
			if err := n.host.Connect(ctx, pid); err != nil {
				n.log.Debug("connect to voter", "voter", pid, "err", err)
			}
			cancel()
		}
	}
}

// voterLinkTag protects the connections to raft voters from the host's
// idle close.
const voterLinkTag = "raft-voter"

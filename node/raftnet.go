package node

import (
	"context"
	"fmt"
	"net"

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

package node

import (
	"context"
	"net"
	"strings"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/rbee-project/rbee/api"
)

// WithoutAutoCA keeps the leader from creating the cluster CA.
func WithoutAutoCA(cfg *Config) { cfg.noAutoCA = true }

// ProposeClusterCA creates and proposes a new cluster CA even when the
// replica has one, and returns the fingerprint of the CA the registry
// holds afterwards.
func (n *Node) ProposeClusterCA(ctx context.Context) (string, error) {
	ca, err := n.certs.ProposeCA(ctx)
	if err != nil {
		return "", err
	}
	return ca.Fingerprint(), nil
}

// SetInterfaceAddrs replaces the node's view of the machine's addresses.
func (n *Node) SetInterfaceAddrs(f func() ([]net.Addr, error)) {
	n.certs.SetInterfaceAddrs(f)
}

// RbeeBinaryFor exposes the install binary choice to the external tests.
func (n *Node) RbeeBinaryFor(goos, goarch string) (string, error) {
	return n.rbeeBinaryFor(goos, goarch)
}

// LocalWorkerPorts is the node's own view of its workers, built from the
// heartbeats it accepted: worker id → port.
func (n *Node) LocalWorkerPorts() map[string]int {
	return n.sup.Ports()
}

// P2PServices maps every rbee protocol the node's libp2p host handles to
// the name of its resource-manager service ("" when it has none).
func (n *Node) P2PServices() map[string]string {
	out := map[string]string{}
	for _, p := range n.host.Libp2p().Mux().Protocols() {
		if !strings.HasPrefix(string(p), "/rbee/") {
			continue
		}
		svc, _ := n.host.Service(p)
		out[string(p)] = svc.Name
	}
	return out
}

// P2PServiceStat is the resource manager's view of one service of the
// node's host.
func (n *Node) P2PServiceStat(name string) network.ScopeStat {
	var st network.ScopeStat
	_ = n.host.Libp2p().Network().ResourceManager().ViewService(name, func(s network.ServiceScope) error {
		st = s.Stat()
		return nil
	})
	return st
}

// RaftConnMemory is what one raft stream reserves.
const RaftConnMemory = raftConnMemory

// Status is the status operation's result, without a job.
func (n *Node) Status() api.StatusResult { return n.status(true) }

// TransferLeadershipTo hands leadership (this node must lead) to a voter.
func (n *Node) TransferLeadershipTo(ctx context.Context, id string) error {
	return n.cons.LeadershipTransferTo(ctx, id)
}

// Hives is the hive list this node serves (hive_list).
func (n *Node) Hives() []api.Hive { return n.hives() }

// ServeLooseJobsOnly makes the node answer forwarded jobs only on the
// protocol of builds that ignore request fields they do not know
// (protoJob), as a node of such a build does.
func (n *Node) ServeLooseJobsOnly() {
	n.host.Libp2p().RemoveStreamHandler(protoJobStrict)
}

// PeerServesStrictJobs reports whether the node's libp2p peerstore lists
// protoJobStrict for peer id (identify told it so).
func (n *Node) PeerServesStrictJobs(id string) bool {
	pid, err := peer.Decode(id)
	if err != nil {
		return false
	}
	ps, err := n.host.Libp2p().Peerstore().SupportsProtocols(pid, protoJobStrict)
	return err == nil && len(ps) > 0
}

// GossipState is member id's state in this node's gossip view ("" when
// it has none).
func (n *Node) GossipState(id string) string {
	m, ok := n.gsp.Member(id)
	if !ok {
		return ""
	}
	return m.State.String()
}

// JoinFound runs the node's handling of a peer mDNS found.
func (n *Node) JoinFound(ai peer.AddrInfo) { n.joinFound(ai) }

// PeerstoreAddrs counts the addresses the node's libp2p peerstore holds
// for id.
func (n *Node) PeerstoreAddrs(id peer.ID) int { return len(n.host.Libp2p().Peerstore().Addrs(id)) }

// GossipMember reports whether gossip lists the member id.
func (n *Node) GossipMember(id string) bool {
	_, ok := n.gsp.Member(id)
	return ok
}

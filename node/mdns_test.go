package node_test

import (
	"crypto/rand"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/nodetest"
)

// A peer found by mDNS is anyone on the LAN until it answers as a member.
// The node kept every find's addresses for good (p2p AddPeer), so a
// stranger announcing ever new peer ids grew the node's memory without
// end; a find that does not join is now forgotten.
func TestMDNSStrangersAreNotKept(t *testing.T) {
	n := nodetest.New(t, 1).Nodes[0]
	// Where the strangers say they are: a closed port (no member answers).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr, err := ma.NewMultiaddr("/ip4/127.0.0.1/tcp/" + strconv.Itoa(port))
	require.NoError(t, err)
	for range 20 {
		key, _, err := crypto.GenerateEd25519Key(rand.Reader)
		require.NoError(t, err)
		id, err := peer.IDFromPrivateKey(key)
		require.NoError(t, err)
		n.JoinFound(peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}})
		require.Zero(t, n.PeerstoreAddrs(id), "a stranger's addresses are kept")
	}

	// A node with the cluster secret that mDNS finds is still joined, and
	// its addresses kept (through gossip's member event).
	other := nodetest.New(t, 1).Nodes[0]
	host, p2pPort, err := net.SplitHostPort(other.P2PAddr())
	require.NoError(t, err)
	oaddr, err := ma.NewMultiaddr("/ip4/" + host + "/tcp/" + p2pPort)
	require.NoError(t, err)
	oid, err := peer.Decode(other.ID())
	require.NoError(t, err)
	n.JoinFound(peer.AddrInfo{ID: oid, Addrs: []ma.Multiaddr{oaddr}})
	require.Eventually(t, func() bool { return n.GossipMember(other.ID()) && n.PeerstoreAddrs(oid) > 0 },
		nodetest.WaitTimeout, 20*time.Millisecond, "the member found by mDNS is joined and kept")
}

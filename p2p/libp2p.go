package p2p

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	basichost "github.com/libp2p/go-libp2p/p2p/host/basic"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// newLibp2pHost assembles the libp2p host from its parts: an in-memory
// peerstore holding key, a swarm with rm, one TCP transport whose
// connections are upgraded with the private network psk, Noise and yamux,
// and a basic host (identify, protocol negotiation) on top. It does not
// listen; Host.Start does. On success the host owns rm (its Close closes
// it); on error the caller still does.
//
// Why not libp2p.New: its constructor links every transport it can offer
// (QUIC, WebRTC, WebTransport, WebSocket), a dependency-injection framework
// and the AutoNAT and observed-address services, whatever the options ask
// for. A node runs none of them. Without them the rbee binary has 155
// packages fewer (510) and is 26 MB instead of 33, and a node process
// maps 7 MB less of it (DESIGN.md, Scale).
func newLibp2pHost(key crypto.PrivKey, psk pnet.PSK, rm network.ResourceManager) (host.Host, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("p2p: peer id: %w", err)
	}
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		return nil, fmt.Errorf("p2p: peerstore: %w", err)
	}
	if err := ps.AddPrivKey(id, key); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("p2p: peerstore: %w", err)
	}
	if err := ps.AddPubKey(id, key.GetPublic()); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("p2p: peerstore: %w", err)
	}
	bus := eventbus.NewBus()
	sw, err := swarm.NewSwarm(id, ps, bus, swarm.WithResourceManager(rm))
	if err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("p2p: swarm: %w", err)
	}
	fail := func(what string, err error) (host.Host, error) {
		_ = sw.Close()
		_ = ps.Close()
		return nil, fmt.Errorf("p2p: %s: %w", what, err)
	}
	muxers := []upgrader.StreamMuxer{{ID: yamux.ID, Muxer: yamux.DefaultTransport}}
	secure, err := noise.New(noise.ID, key, muxers)
	if err != nil {
		return fail("noise", err)
	}
	up, err := upgrader.New([]sec.SecureTransport{secure}, muxers, psk, rm, nil)
	if err != nil {
		return fail("upgrader", err)
	}
	tpt, err := tcp.NewTCPTransport(up, rm, nil)
	if err != nil {
		return fail("tcp transport", err)
	}
	if err := sw.AddTransport(tpt); err != nil {
		return fail("tcp transport", err)
	}
	bh, err := basichost.NewHost(sw, &basichost.HostOpts{EventBus: bus})
	if err != nil {
		return fail("host", err)
	}
	bh.Start()
	return bh, nil
}

// addIdentifyLimits gives identify, the one libp2p service a node runs
// besides its own protocols, the stream and memory limits libp2p's
// constructor would have given it: every connection runs identify once
// each way, and a burst of joins runs it for every new peer at once.
func addIdentifyLimits(limits *rcmgr.ScalingLimitConfig) {
	const mib = 1 << 20
	limits.AddServiceLimit(identify.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 * mib},
		rcmgr.BaseLimitIncrease{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 * mib})
	limits.AddServicePeerLimit(identify.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: 16, StreamsOutbound: 16, Streams: 32, Memory: mib},
		rcmgr.BaseLimitIncrease{})
	// Per peer and protocol, the memory libp2p's constructor allows
	// (32 × (256 MiB + 16 KiB), far above what yamux's windows can take):
	// identify is limited by its stream counts, not by memory.
	const ample = 32 * (256*mib + 16<<10)
	for _, p := range []protocol.ID{identify.ID, identify.IDPush} {
		limits.AddProtocolLimit(p,
			rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 * mib},
			rcmgr.BaseLimitIncrease{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 * mib})
		limits.AddProtocolPeerLimit(p,
			rcmgr.BaseLimit{StreamsInbound: 16, StreamsOutbound: 16, Streams: 32, Memory: ample},
			rcmgr.BaseLimitIncrease{})
	}
}

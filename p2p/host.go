// Package p2p is rbee's libp2p layer: one encrypted host per node (TCP,
// Noise, yamux, private network derived from the cluster secret), a
// persisted Ed25519 identity whose peer id names the node everywhere,
// versioned stream protocols with length-prefixed frames, net.Conn adapters
// over streams, ping, and optional mDNS discovery.
package p2p

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/x/rate"
	ma "github.com/multiformats/go-multiaddr"
)

const (
	// DefaultListenAddr listens on every interface on rbee's p2p port.
	DefaultListenAddr = "0.0.0.0:7835"

	// DefaultMDNSServiceTag is the mDNS service name rbee hosts announce;
	// hosts with another tag ignore each other.
	DefaultMDNSServiceTag = "rbee-p2p"

	// discoveredBuffer is the capacity of the Discovered channel. mDNS
	// answers arrive in bursts of at most one per LAN peer per query
	// interval; 64 covers a large LAN while bounding memory when nobody
	// reads.
	discoveredBuffer = 64

	// peerAddrTTL is how long AddPeer's addresses stay in the peerstore.
	// Gossip re-adds them whenever membership changes, so a day only has to
	// outlive the gaps between gossip updates and node restarts.
	peerAddrTTL = 24 * time.Hour
	// probeAddrTTL bounds how long ProbePeer's addresses stay when
	// nobody forgets them: a probe takes seconds (the node's mDNS join
	// gives one 5 s).
	probeAddrTTL = time.Minute
)

// Config configures a Host. Start from DefaultConfig and override fields.
type Config struct {
	// PrivateKey is the host identity (see LoadOrCreateIdentity). Nil means
	// a fresh random Ed25519 key, i.e. a new peer id on every start; fine
	// for tests and tools, wrong for a node.
	PrivateKey crypto.PrivKey

	// ListenAddr is the TCP "ip:port" to listen on, e.g. "0.0.0.0:7835" or
	// "127.0.0.1:0" (port 0 picks a free port). An empty host means all
	// IPv4 interfaces.
	ListenAddr string

	// Secret is the cluster secret; the private-network key is derived from
	// it with DerivePSK. Required.
	Secret []byte

	// EnableMDNS announces this host and looks for others on the LAN with
	// multicast DNS; finds are delivered on Discovered.
	EnableMDNS bool

	// MDNSServiceTag names the mDNS service (default DefaultMDNSServiceTag).
	MDNSServiceTag string

	// IdleConnTimeout closes a connection that carried no stream for
	// about this long (checked every IdleConnTimeout/2), unless its peer
	// is protected (Protect). 0 keeps connections until they fail.
	IdleConnTimeout time.Duration

	// Logger receives the host's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of a production node, without a
// key and secret.
func DefaultConfig() Config {
	return Config{
		ListenAddr:      DefaultListenAddr,
		MDNSServiceTag:  DefaultMDNSServiceTag,
		IdleConnTimeout: DefaultIdleConnTimeout,
	}
}

// Host is one node's libp2p host. Create it with New, make it listen with
// Start, release it with Close. All methods are safe for concurrent use.
type Host struct {
	cfg    Config
	log    *slog.Logger
	listen ma.Multiaddr
	h      host.Host

	mu      sync.RWMutex // guards the fields below and sends on disc
	started bool
	closed  bool
	mdns    mdns.Service
	disc    chan peer.AddrInfo

	svcMu    sync.RWMutex            // guards services
	services map[protocol.ID]Service // by protocol, see AddService

	// known are the addresses AddPeer was given, by peer: libp2p's
	// peerstore may drop a peer's addresses on its own (identify
	// rewrites their lifetimes when a connection ends), and a dial then
	// fails with "no addresses" although gossip knows where the peer is.
	knownMu sync.Mutex
	known   map[peer.ID][]ma.Multiaddr

	idle       idleConns
	stopReaper context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and creates the host: the identity, transports and
// protocol handlers exist afterwards (ID and Handle work), but nothing
// listens until Start.
func New(cfg Config) (*Host, error) {
	if len(cfg.Secret) == 0 {
		return nil, ErrNoSecret
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = DefaultListenAddr
	}
	if cfg.MDNSServiceTag == "" {
		cfg.MDNSServiceTag = DefaultMDNSServiceTag
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen, err := tcpMultiaddr(cfg.ListenAddr)
	if err != nil {
		return nil, err
	}
	key := cfg.PrivateKey
	if key == nil {
		key, _, err = crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("p2p: generate identity: %w", err)
		}
	}
	rm, err := newResourceManager()
	if err != nil {
		return nil, err
	}
	h, err := newLibp2pHost(key, DerivePSK(cfg.Secret), rm)
	if err != nil {
		_ = rm.Close()
		return nil, err
	}
	hst := &Host{
		cfg:      cfg,
		log:      log.With("component", "p2p"),
		listen:   listen,
		h:        h,
		disc:     make(chan peer.AddrInfo, discoveredBuffer),
		services: map[protocol.ID]Service{},
	}
	if err := hst.AddService(pingService()); err != nil {
		_ = h.Close()
		return nil, err
	}
	hst.Handle(ProtocolPing, hst.handlePing)
	return hst, nil
}

// LAN connection rate limit per peer address. A LAN cluster's nodes redial
// each other after every partition, restart and failover; libp2p's
// Internet default (a burst of 16 new connections per address, then one
// every 5 s, both directions, loopback exempt) kept a healed peer
// unreachable for minutes ("rate limit exceeded"). 5/s with a burst of 100
// still stops a flood from one address; strangers are refused at the
// handshake anyway (the cluster's pre-shared key).
const (
	connRatePerAddr  = 5
	connBurstPerAddr = 100
)

// newResourceManager is libp2p's default resource manager (its limits
// scaled to the machine, identify's service limits) with LAN-sized
// connection rate limits.
func newResourceManager() (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	addIdentifyLimits(&limits)
	lan := rate.Limit{RPS: connRatePerAddr, Burst: connBurstPerAddr}
	limiter := &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8")},
			{Prefix: netip.MustParsePrefix("::1/128")},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: lan}},
			IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: 64, Limit: lan}},
			GracePeriod:      time.Minute,
		},
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()), rcmgr.WithConnRateLimiters(limiter))
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	return rm, nil
}

// tcpMultiaddr turns "ip:port" into /ip4|ip6/<ip>/tcp/<port>.
func tcpMultiaddr(hostport string) (ma.Multiaddr, error) {
	hostStr, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadListenAddr, hostport, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: port %q", ErrBadListenAddr, hostport, portStr)
	}
	if hostStr == "" {
		hostStr = "0.0.0.0"
	}
	if hostStr == "localhost" {
		hostStr = "127.0.0.1"
	}
	ip := net.ParseIP(hostStr)
	if ip == nil {
		return nil, fmt.Errorf("%w: %q: host must be an IP address", ErrBadListenAddr, hostport)
	}
	proto := "ip6"
	if ip.To4() != nil {
		proto, ip = "ip4", ip.To4()
	}
	m, err := ma.NewMultiaddr(fmt.Sprintf("/%s/%s/tcp/%d", proto, ip, port))
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadListenAddr, hostport, err)
	}
	return m, nil
}

// Start makes the host listen on Config.ListenAddr and, when enabled, starts
// mDNS. ctx is only checked before starting; the host runs until Close.
func (h *Host) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return ErrClosed
	case h.started:
		return ErrAlreadyStarted
	}
	if err := h.h.Network().Listen(h.listen); err != nil {
		return fmt.Errorf("p2p: listen on %s: %w", h.cfg.ListenAddr, err)
	}
	if h.cfg.EnableMDNS {
		svc := mdns.NewMdnsService(h.h, h.cfg.MDNSServiceTag, notifee{h})
		if err := svc.Start(); err != nil {
			return fmt.Errorf("p2p: start mdns: %w", err)
		}
		h.mdns = svc
	}
	if h.cfg.IdleConnTimeout > 0 {
		rctx, cancel := context.WithCancel(context.Background())
		h.stopReaper = cancel
		go h.reapIdle(rctx, h.cfg.IdleConnTimeout)
	}
	h.started = true
	h.log.Info("p2p host listening", "peer", h.h.ID(), "addrs", h.addrsLocked())
	return nil
}

// Close stops mDNS, closes every connection and listener, and closes the
// Discovered channel. Streams in progress are reset. It is idempotent.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		svc := h.mdns
		h.mdns = nil
		if h.stopReaper != nil {
			h.stopReaper()
		}
		close(h.disc)
		h.mu.Unlock()
		if svc != nil {
			if err := svc.Close(); err != nil {
				h.log.Warn("closing mdns", "err", err)
			}
		}
		if err := h.h.Close(); err != nil {
			h.closeErr = fmt.Errorf("p2p: close host: %w", err)
		}
	})
	return h.closeErr
}

// ID returns the host's peer id (stable for a given PrivateKey).
func (h *Host) ID() peer.ID { return h.h.ID() }

// Libp2p exposes the underlying libp2p host for protocols that need it
// directly. Do not close it; close the Host.
func (h *Host) Libp2p() host.Host { return h.h }

// Addrs returns the host's dialable addresses as full multiaddrs ending in
// /p2p/<id>. A wildcard listen address is expanded to one address per
// interface, loopback included. Empty before Start.
func (h *Host) Addrs() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.addrsLocked()
}

func (h *Host) addrsLocked() []string {
	if !h.started {
		return nil
	}
	las, err := h.h.Network().InterfaceListenAddresses()
	if err != nil {
		h.log.Warn("listing interface addresses", "err", err)
		las = h.h.Addrs()
	}
	info := peer.AddrInfo{ID: h.h.ID(), Addrs: las}
	full, err := peer.AddrInfoToP2pAddrs(&info)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(full))
	for _, a := range full {
		out = append(out, a.String())
	}
	return out
}

// AddPeer records addresses for peer id in the peerstore so that NewStream,
// Dial and Ping can reach it. Each address is a TCP multiaddr, optionally
// ending in /p2p/<id> (which must then be id). Invalid addresses fail the
// whole call and add nothing.
func (h *Host) AddPeer(id peer.ID, addrs []string) error {
	mas, err := peerAddrs(id, addrs)
	if err != nil {
		return err
	}
	h.h.Peerstore().AddAddrs(id, mas, peerAddrTTL)
	h.knownMu.Lock()
	if h.known == nil {
		h.known = map[peer.ID][]ma.Multiaddr{}
	}
	h.known[id] = mas
	h.knownMu.Unlock()
	return nil
}

// ProbePeer makes id dialable at addrs for one probe (a stream that asks
// whether it is a member), for probeAddrTTL at most and not among the
// addresses AddPeer keeps. forget drops them at once, unless AddPeer took
// the peer meanwhile (it joined). A peer found by mDNS is anyone on the
// LAN until it answers: AddPeer's addresses stay for good, so every
// stranger's announcement of a new peer id grew the node's memory.
func (h *Host) ProbePeer(id peer.ID, addrs []string) (forget func(), err error) {
	mas, err := peerAddrs(id, addrs)
	if err != nil {
		return nil, err
	}
	ps := h.h.Peerstore()
	ps.AddAddrs(id, mas, probeAddrTTL)
	return func() {
		h.knownMu.Lock()
		_, kept := h.known[id]
		h.knownMu.Unlock()
		if !kept && h.h.Network().Connectedness(id) != network.Connected {
			ps.ClearAddrs(id)
			ps.RemovePeer(id)
		}
	}, nil
}

// peerAddrs checks AddPeer's and ProbePeer's arguments: a valid id and
// TCP multiaddrs, with no other peer's id.
func peerAddrs(id peer.ID, addrs []string) ([]ma.Multiaddr, error) {
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: peer id: %v", ErrBadPeerAddr, err)
	}
	mas := make([]ma.Multiaddr, 0, len(addrs))
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrBadPeerAddr, s, err)
		}
		transport, pid := peer.SplitAddr(m)
		if transport == nil {
			return nil, fmt.Errorf("%w: %q has no transport part", ErrBadPeerAddr, s)
		}
		if pid != "" && pid != id {
			return nil, fmt.Errorf("%w: %q names peer %s, not %s", ErrBadPeerAddr, s, pid, id)
		}
		if _, err := transport.ValueForProtocol(ma.P_TCP); err != nil {
			return nil, fmt.Errorf("%w: %q is not a TCP address", ErrBadPeerAddr, s)
		}
		mas = append(mas, transport)
	}
	return mas, nil
}

// restoreAddrs puts back the addresses AddPeer gave for id when the
// peerstore has none left.
func (h *Host) restoreAddrs(id peer.ID) {
	ps := h.h.Peerstore()
	if len(ps.Addrs(id)) > 0 {
		return
	}
	h.knownMu.Lock()
	mas := h.known[id]
	h.knownMu.Unlock()
	if len(mas) > 0 {
		ps.AddAddrs(id, mas, peerAddrTTL)
	}
}

// ListenAddr returns the host:port of the TCP listener ("" before Start):
// what a restart passes as its listen address to keep the same port.
func (h *Host) ListenAddr() string {
	if err := h.ready(); err != nil {
		return ""
	}
	for _, a := range h.h.Network().ListenAddresses() {
		ip, err := a.ValueForProtocol(ma.P_IP4)
		if err != nil {
			if ip, err = a.ValueForProtocol(ma.P_IP6); err != nil {
				continue
			}
		}
		port, err := a.ValueForProtocol(ma.P_TCP)
		if err != nil {
			continue
		}
		return net.JoinHostPort(ip, port)
	}
	return ""
}

// Connect makes sure there is a connection to peer id (whose addresses must
// be known, see AddPeer).
func (h *Host) Connect(ctx context.Context, id peer.ID) error {
	if err := h.ready(); err != nil {
		return err
	}
	h.restoreAddrs(id)
	if err := h.h.Connect(noBackoff(ctx), peer.AddrInfo{ID: id}); err != nil {
		return fmt.Errorf("p2p: connect %s: %w", id, err)
	}
	return nil
}

// Handle registers fn for inbound streams of protocol proto (replacing any
// previous handler). fn runs on its own goroutine per stream and owns the
// stream: it must Close it on success or Reset it on error (which also
// returns the stream's memory reservation), and should set deadlines.
// Protocol ids are versioned, e.g. "/rbee/jobs/1.0.0". Each stream is
// attached to proto's Service before fn sees it (see AddService).
func (h *Host) Handle(proto protocol.ID, fn func(s network.Stream)) {
	h.h.SetStreamHandler(proto, h.attached(proto, fn))
}

// RemoveHandler unregisters the handler of proto; new streams for it are
// refused, open ones are unaffected.
func (h *Host) RemoveHandler(proto protocol.ID) {
	h.h.RemoveStreamHandler(proto)
}

// NewStream opens a stream to peer id speaking proto, dialing if needed,
// attached to proto's Service (see AddService). With older protocol
// versions in fallback, the first one the peer speaks is used when it
// does not speak proto (the stream's Protocol() says which). ctx bounds the
// dial and protocol negotiation, not the stream's life; set deadlines on
// the stream for that. The caller must Close or Reset it.
func (h *Host) NewStream(ctx context.Context, id peer.ID, proto protocol.ID, fallback ...protocol.ID) (network.Stream, error) {
	if err := h.ready(); err != nil {
		return nil, err
	}
	protos := append([]protocol.ID{proto}, fallback...)
	for _, p := range protos {
		if _, ok := h.Service(p); !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoService, p)
		}
	}
	h.restoreAddrs(id)
	s, err := h.h.NewStream(noBackoff(ctx), id, protos...)
	if err != nil {
		return nil, fmt.Errorf("p2p: open %s stream to %s: %w", proto, id, err)
	}
	if err := h.attach(s, s.Protocol()); err != nil {
		_ = s.Reset()
		return nil, err
	}
	return s, nil
}

// noBackoff makes a dial ignore libp2p's dial backoff. After failed dials
// to a peer (it was down), libp2p refuses to dial it again for 5 s, growing
// to 5 min; a restarted node would stay unreachable long after it is back.
// Liveness here is gossip's call: callers only dial members gossip sees
// (and raft backs off on its own), so a dial always really tries. There
// are no relays, so "direct" excludes nothing.
func noBackoff(ctx context.Context) context.Context {
	return network.WithForceDirectDial(ctx, "gossip decides liveness")
}

// ready reports whether the host can open streams.
func (h *Host) ready() error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	switch {
	case h.closed:
		return ErrClosed
	case !h.started:
		return ErrNotStarted
	}
	return nil
}

// Discovered delivers peers found by mDNS (never this host). The channel is
// buffered; when nobody drains it, further finds are dropped (mDNS repeats
// them). It is closed by Close, and never written to without EnableMDNS.
func (h *Host) Discovered() <-chan peer.AddrInfo { return h.disc }

// notifee adapts mDNS callbacks to the Discovered channel.
type notifee struct{ h *Host }

func (n notifee) HandlePeerFound(ai peer.AddrInfo) {
	h := n.h
	if ai.ID == h.h.ID() {
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return
	}
	select {
	case h.disc <- ai:
	default:
		h.log.Debug("discovered channel full, dropping mdns find", "peer", ai.ID)
	}
}

// closeOrReset closes s when err is nil and resets it otherwise, the
// contract for every stream this package handles.
func closeOrReset(s network.Stream, err error) {
	if err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

var _ io.Closer = (*Host)(nil)

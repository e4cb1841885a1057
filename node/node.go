// Package node is rbee's composition root: it wires gossip, consensus, the
// registry FSM and the libp2p host into one daemon and serves the HTTP API.
//
// A Node is created with New, started with Start and stopped with Close (a
// crash-like stop: no leave) or Leave (graceful: leadership handed over,
// removed from Raft, gossip leave). All exported methods are safe for
// concurrent use.
package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/internal/dirlock"
	"github.com/rbee-project/rbee/internal/loopback"
	"github.com/rbee-project/rbee/internal/recent"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/blob"
	"github.com/rbee-project/rbee/node/certs"
	"github.com/rbee-project/rbee/node/hiveops"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/placement"
	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/node/shardlink"
	"github.com/rbee-project/rbee/node/supervisor"
	"github.com/rbee-project/rbee/p2p"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// Files in the data dir.
const (
	identityFile = "node.key"
	peersFile    = "peers.json"
)

// joinAttempts and joinBackoff bound how long a node started with --join
// tries before it gives up with an error: long enough for peers that start at
// the same moment, short enough that a wrong address or token fails visibly.
const (
	joinAttempts = 10
	joinBackoff  = 500 * time.Millisecond
)

// Sentinel errors.
var (
	// ErrJoinFailed: none of the --join addresses could be joined.
	ErrJoinFailed = errors.New("could not join the cluster")
	// ErrUnknownHive: no node of that name is known.
	ErrUnknownHive = errors.New("unknown hive")
	// ErrAmbiguousHive: more than one live node has that name.
	ErrAmbiguousHive = errors.New("ambiguous hive name")
	// ErrClosed: the node is shut down.
	ErrClosed = errors.New("node closed")
	// ErrInsecureHTTP: --http-addr is off loopback without --insecure-http.
	ErrInsecureHTTP = errors.New("plain HTTP API off loopback refused")
	// ErrBadListenAddr: --http-addr or --https-addr is not HOST:PORT.
	ErrBadListenAddr = errors.New("bad listen address")
	// ErrCAMismatch: the cluster's CA is not the one --ca-fingerprint pins.
	ErrCAMismatch = certs.ErrCAMismatch
	// ErrNoAdminKey: the data dir has no readable admin key.
	ErrNoAdminKey = auth.ErrNoAdminKey
	// ErrBadCORSOrigin: a --cors-origin is not an origin, or is "null" or "*".
	ErrBadCORSOrigin = auth.ErrBadOrigin
)

// Node is one rbee daemon.
type Node struct {
	cfg Config
	log *slog.Logger

	secret        string
	secretCreated bool
	dirLock       *dirlock.Lock // held from Start until shutdown ends
	adminKey      string        // the local admin credential (admin.key)
	auth          *auth.Guard   // the API's authentication and browser checks
	connCounts    *connCounts   // open API connections per client, both listeners
	duplicate     chan error    // gossip found this node's identity running elsewhere
	created       time.Time     // when New made the node (workerBinary: what an earlier run catalogued)
	peerID        peer.ID
	id            string // peerID.String()

	host *p2p.Host
	gsp  *gossip.Gossip
	reg  *fsm.FSM
	cons *consensus.Consensus
	jobs *jobs.Manager

	httpSrv  *http.Server
	httpLn   net.Listener
	httpsSrv *http.Server
	httpsLn  net.Listener
	blobLn   *blob.Listener // nil when the direct path is off
	// certs keeps the cluster CA and this node's certificate current.
	certs *certs.Manager

	ops map[string]op

	// sup supervises this node's workers: heartbeats, engines, expiry,
	// load reports, the leader's reconcile.
	sup      *supervisor.Supervisor
	loads    *loadTable
	loadPub  loadPublisher
	retireMu sync.Mutex
	retiring map[string]bool
	// retired are the processes (pids) this node stopped because the
	// registry marked them retiring, kept retiredMemory: a spawn whose
	// process a retire stopped before the spawn saw the entry (the leader
	// may remove it at once) still says "retired", not "exited".
	retired      *recent.Set[int]
	retireSeen   uint64    // registry index retireLocalWorkers last looked at (worker loop only)
	retireLooked time.Time // when it last did
	workerClient *http.Client

	models   *modelcat.Catalog
	binaries *workercat.Catalog
	procs    *process.Manager
	hf       *hf.Client

	metrics *metrics

	// router picks workers and counts the requests in flight to each.
	router *router.Router
	// relay forwards inference requests and resumes their streams.
	relay *relay.Relay
	// blobs copies catalogued files to and from peers.
	blobs *blob.Service
	// hive runs the operations on this hive's catalogs and processes.
	hive *hiveops.Ops
	// placer sizes engine spawns and picks their hive and GPUs.
	placer *placement.Placer
	// ram holds the RAM claims of CPU spawns starting here (ram.go);
	// capsRefresh asks capabilitiesLoop to detect and store this node's
	// capabilities again (one pending request stands for any number).
	ram         ramLedger
	capsRefresh chan struct{}
	// links bridges the stage connections of sharded groups; groups
	// tracks the leader's re-plans.
	links  *shardlink.Bridge
	groups groupState

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	stopped   chan struct{} // closed when the node has shut down (Close or Leave)
	started   atomic.Bool   // Start has returned without an error
	failMu    sync.Mutex
	failErr   error // why the node stopped on its own (Err)

	peersMu    sync.Mutex
	peersSaved []byte // what peers.json last got (under peersMu)
	peersGone  bool   // Leave removed peers.json: never written again
	reconn     *reconnector
}

// New validates cfg and prepares a node; nothing listens until Start.
func New(cfg Config) (*Node, error) {
	d := DefaultConfig()
	if cfg.DataDir == "" {
		return nil, errors.New("node: data dir is required")
	}
	if cfg.WorkerNice < 0 || cfg.WorkerNice > 19 {
		return nil, fmt.Errorf("node: worker nice %d: want 0 (the node's priority) to 19", cfg.WorkerNice)
	}
	if cfg.Name == "" {
		h, _ := os.Hostname()
		cfg.Name = h
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = d.HTTPAddr
	}
	if cfg.GossipAddr == "" {
		cfg.GossipAddr = d.GossipAddr
	}
	if cfg.P2PAddr == "" {
		cfg.P2PAddr = d.P2PAddr
	}
	if cfg.BlobAddr == "" {
		cfg.BlobAddr = d.BlobAddr
	}
	if cfg.Profile == "" {
		cfg.Profile = d.Profile
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = d.ReconcileInterval
		if cfg.Profile == "local" {
			cfg.ReconcileInterval = 2 * time.Second
		}
	}
	if cfg.Version == "" {
		cfg.Version = d.Version
	}
	if cfg.WorkerHeartbeatTimeout <= 0 {
		cfg.WorkerHeartbeatTimeout = d.WorkerHeartbeatTimeout
	}
	if cfg.HTTPBodyTimeout <= 0 {
		cfg.HTTPBodyTimeout = d.HTTPBodyTimeout
	}
	if cfg.HTTPIdleTimeout <= 0 {
		cfg.HTTPIdleTimeout = d.HTTPIdleTimeout
	}
	if cfg.HTTPStallTimeout <= 0 {
		cfg.HTTPStallTimeout = d.HTTPStallTimeout
	}
	if cfg.MaxConnsPerClient <= 0 {
		cfg.MaxConnsPerClient = d.MaxConnsPerClient
	}
	if cfg.MaxDownloadSize <= 0 {
		cfg.MaxDownloadSize = d.MaxDownloadSize
	}
	if cfg.CertLifetime <= 0 {
		cfg.CertLifetime = d.CertLifetime
	}
	if cfg.CertCheckInterval <= 0 {
		cfg.CertCheckInterval = d.CertCheckInterval
	}
	if err := checkTLSConfig(cfg); err != nil {
		return nil, err
	}
	if cfg.BootstrapExpect < 0 {
		return nil, errors.New("node: bootstrap-expect must be >= 0")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: log.With("node", cfg.Name), stopped: make(chan struct{}), created: time.Now(), capsRefresh: make(chan struct{}, 1),
		loads: newLoadTable(), retiring: map[string]bool{}, retired: recent.New[int](retiredMemory), workerClient: newWorkerHTTP()}
	n.connCounts = newConnCounts(cfg.MaxConnsPerClient)
	n.metrics = newMetrics(n)
	n.registerOps()
	return n, nil
}

// Start brings the node up: identity, p2p, registry, gossip, raft, HTTP.
// It returns once the node serves its API and, with --join, has joined.
func (n *Node) Start(ctx context.Context) (err error) {
	n.ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			n.shutdown()
		}
	}()
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := checkDataDir(n.cfg.DataDir, n.log); err != nil {
		return err
	}
	// One node per data dir, before anything in it is read or started: a
	// second would share the first's identity, Raft log and workers.
	if n.dirLock, err = dirlock.Acquire(n.cfg.DataDir); err != nil {
		if errors.Is(err, dirlock.ErrLocked) {
			return fmt.Errorf("%w (another rbee node runs on this data dir; stop it, or give this one its own --data-dir)", err)
		}
		return fmt.Errorf("lock data dir: %w", err)
	}
	// A kill -9 mid-write leaves the temporary file of an atomic write
	// (the admin key's among them, 0600): nothing writes here yet, the
	// lock is ours, so they go.
	for _, dir := range []string{n.cfg.DataDir, ProcessesDir(n.cfg.DataDir), certs.Dir(n.cfg.DataDir)} {
		if k, err := atomicfile.RemoveTemps(dir); err != nil {
			n.log.Warn("removing temporary files a crash left", "dir", dir, "err", err)
		} else if k > 0 {
			n.log.Info("removed temporary files a crash left", "dir", dir, "files", k)
		}
	}
	n.secret, n.secretCreated, err = loadOrCreateSecret(n.cfg.DataDir, n.cfg.Token)
	if err != nil {
		return err
	}
	n.adminKey = auth.DeriveAdminKey(n.secret)
	n.certs = certs.New(certs.Config{Name: n.cfg.Name, DataDir: n.cfg.DataDir, Secret: n.secret, CAFingerprint: n.cfg.CAFingerprint,
		CertFile: n.cfg.TLSCertFile, KeyFile: n.cfg.TLSKeyFile, CertLifetime: n.cfg.CertLifetime, AllowedHosts: n.cfg.AllowedHosts,
		NoAutoCA: n.cfg.noAutoCA, Cluster: certCluster{n}, Logger: n.log.With("component", "tls")})
	if err := auth.WriteAdminKey(n.cfg.DataDir, n.adminKey); err != nil {
		return fmt.Errorf("admin key: %w", err)
	}
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(n.cfg.DataDir, identityFile))
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}

	pcfg := p2p.DefaultConfig()
	pcfg.PrivateKey = key
	pcfg.ListenAddr = n.cfg.P2PAddr
	pcfg.Secret = []byte(n.secret)
	pcfg.EnableMDNS = n.cfg.MDNS
	pcfg.Logger = n.log.With("component", "p2p")
	if n.host, err = p2p.New(pcfg); err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	if err := declareP2PServices(n.host); err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	if err := n.host.Start(n.ctx); err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	n.peerID = n.host.ID()
	// Kept as a string: peer.ID.String encodes base58 on every call, and
	// loops over every registry worker compare with it (9% of a 100-node
	// cluster's CPU with 500 workers).
	n.id = n.peerID.String()
	n.router = router.New(router.Config{LocalID: n.ID(), LocalName: n.cfg.Name, LiveFor: n.cfg.WorkerHeartbeatTimeout, View: routerView{n},
		NoAffinity: n.cfg.NoPrefixAffinity})
	n.relay = relay.New(relay.Config{Router: n.router, Caller: workerCaller{n}, Logger: n.log.With("component", "relay")})
	n.log = n.log.With("id", shortID(n.peerID.String()))
	n.auth = n.newGuard()

	// One caller (a local user, an API key) gets a tenth of the job
	// table; the admin may always act.
	n.jobs = jobs.New(jobs.Config{Node: n.cfg.Name, Unbounded: auth.OwnerAdmin, Logger: n.log.With("component", "jobs")})

	// The HTTP listener is bound before gossip so its real address (port 0
	// in tests) goes into the metadata others see.
	if n.httpLn, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("http listen %s: %w", n.cfg.HTTPAddr, err)
	}
	if !loopback.HostPort(n.cfg.HTTPAddr) {
		n.log.Warn("the API serves plain HTTP off loopback (--insecure-http): API keys and prompts cross the network unencrypted; use --https-addr", "http", n.HTTPAddr())
	}
	if err := n.startHTTPS(); err != nil {
		return err
	}

	regVersion := fsm.Version
	if n.cfg.RegistryVersion > 0 {
		regVersion = n.cfg.RegistryVersion
	}
	n.reg = fsm.New(n.log.With("component", "fsm"), fsm.WithSupportedVersion(regVersion))
	// The supervisor exists before the process manager: a re-adopted
	// worker may exit as soon as the manager runs.
	n.sup = n.newSupervisor()
	n.loads.changed = n.sup.Kick
	n.loads.member = func(id string) bool {
		if id == n.ID() {
			return true
		}
		m, ok := n.gsp.Member(id)
		return ok && (m.State == gossip.StateAlive || m.State == gossip.StateSuspect)
	}
	n.loads.relay = func(key string, msg []byte) {
		if err := n.gsp.Broadcast(key, msg); err != nil {
			n.log.Debug("relay load", "err", err)
		}
	}
	if err := n.openHive(); err != nil {
		return err
	}

	gcfg := gossip.DefaultConfig()
	gcfg.NodeID = n.peerID.String()
	gcfg.BindAddr = n.cfg.GossipAddr
	gcfg.AdvertiseAddr = n.cfg.GossipAdvertise
	gcfg.WrapTransport = n.cfg.GossipWrap
	gcfg.Secret = []byte(n.secret)
	gcfg.Profile = n.cfg.Profile
	gcfg.Meta = n.localMeta()
	gcfg.Logger = n.log.With("component", "gossip")
	gcfg.Delegate = n.loads
	n.duplicate = make(chan error, 1)
	gcfg.OnDuplicate = func(err error) {
		select {
		case n.duplicate <- err:
		default:
		}
	}
	if n.gsp, err = gossip.New(gcfg); err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	if err := n.gsp.Start(n.ctx); err != nil {
		return fmt.Errorf("gossip: %w", err)
	}

	net := newRaftNetwork(n.host)
	peersKnown := len(n.loadPeers()) > 0
	ccfg := consensus.DefaultConfig()
	ccfg.DataDir = filepath.Join(n.cfg.DataDir, "raft")
	ccfg.LocalID = n.peerID.String()
	ccfg.LocalName = n.cfg.Name
	ccfg.BootstrapExpect = n.cfg.BootstrapExpect
	ccfg.Join = len(n.cfg.Join) > 0 || peersKnown
	ccfg.Network = net
	ccfg.FSM = n.reg
	ccfg.Members = n.consensusMembers
	ccfg.Member = n.consensusMemberByID
	ccfg.Profile = n.cfg.Profile
	ccfg.ReconcileInterval = n.cfg.ReconcileInterval
	ccfg.ReapGrace = n.cfg.ReapGrace
	ccfg.Logger = n.log.With("component", "raft")
	// consensus's errors say "consensus: " themselves.
	if n.cons, err = consensus.New(ccfg); err != nil {
		return err
	}
	if err := n.cons.Start(n.ctx); err != nil {
		return err
	}
	if err := n.checkSecretOpensCA(); err != nil {
		return err
	}

	if err := n.listenBlob(); err != nil {
		return err
	}
	n.blobs = blob.New(blob.Config{Models: n.models, Binaries: n.binaries, Streams: n.host, Holdings: hiveCluster{n},
		Direct: n.blobLn, Log: n.log.With("component", "blob")})
	n.hive = hiveops.New(hiveops.Config{LocalID: n.ID(), LocalName: n.cfg.Name, Version: n.cfg.Version,
		Models: n.models, Binaries: n.binaries, Procs: n.procs, Cluster: hiveCluster{n}, HF: n.hf,
		ModelPeers: n.blobs.ModelSource(), BinaryPeers: n.blobs.BinarySource(),
		WorkerReleaseURL: n.cfg.WorkerReleaseURL, SourceDir: n.cfg.SourceDir, MaxDownloadSize: n.cfg.MaxDownloadSize,
		StopGrace: workerStopGrace, Downloaded: func(kind string, b int64) { n.metrics.downloaded.WithLabelValues(kind).Add(float64(b)) }})
	n.placer = n.newPlacer()
	n.registerP2PHandlers()
	n.groups = newGroupState()
	n.links = n.newLinks()
	if err := n.links.Start(n.ctx); err != nil {
		return err
	}

	n.reconn = newReconnector()
	n.wg.Add(5)
	go n.gossipLoop()
	go n.reconnectLoop()
	go n.voterLinksLoop()
	go n.tlsLoop()
	go n.keyLoop()
	n.sup.Start(n.ctx)
	if n.cfg.MDNS {
		n.wg.Add(1)
		go n.mdnsLoop()
	}

	handler := n.Handler()
	n.httpSrv = n.newHTTPServer(handler)
	httpLn := newLimitListener(n.httpLn, n.connCounts, true, n.cfg.HTTPStallTimeout)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.httpSrv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server", "err", err)
		}
	}()
	n.serveHTTPS(handler)

	if err := n.writeNodeInfo(); err != nil {
		n.log.Warn("write node.json", "err", err)
	}

	switch {
	case len(n.cfg.Join) > 0:
		if err := n.joinWithRetry(ctx, n.cfg.Join, joinAttempts); err != nil {
			return err
		}
	case peersKnown:
		// A restarted node rejoins the peers it knew, in the background:
		// they may be restarting too.
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.joinWithRetry(n.ctx, n.loadPeers(), 1<<30); err != nil && n.ctx.Err() == nil {
				n.log.Warn("rejoin failed", "err", err)
			}
		}()
	}

	if n.cfg.CAFingerprint != "" {
		if err := n.waitPinnedCA(ctx); err != nil {
			n.leaveRefused()
			return err
		}
	}

	n.wg.Add(1)
	go n.capabilitiesLoop()

	n.started.Store(true)
	n.wg.Add(1)
	go n.watchDuplicate()
	n.log.Info("node started", "http", n.HTTPAddr(), "https", n.HTTPSAddr(), "gossip", n.gsp.Addr(), "p2p", n.host.Addrs())
	return nil
}

// newHTTPServer is an API server with the connection bounds (see
// bounded.go); HTTP and HTTPS listeners get one each.
func (n *Node) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: headerTimeout, IdleTimeout: n.cfg.HTTPIdleTimeout,
		ConnContext: auth.ConnContext, ConnState: connState, ErrorLog: log.New(newHTTPErrorLog(n.log.With("component", "http")), "", 0)}
}

// joinWithRetry joins any of addrs, retrying up to attempts times.
func (n *Node) joinWithRetry(ctx context.Context, addrs []string, attempts int) error {
	var last error
	for i := 0; i < attempts; i++ {
		cnt, err := n.gsp.Join(ctx, addrs)
		if err == nil && cnt > 0 {
			n.log.Info("joined cluster", "via", addrs, "contacted", cnt)
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(joinBackoff):
		}
	}
	return fmt.Errorf("%w via %v: %v (check the address and that --token is this cluster's secret)", ErrJoinFailed, addrs, last)
}

// Join asks gossip to join addrs now (the `rbee join` command).
func (n *Node) Join(ctx context.Context, addrs []string) (int, error) {
	cnt, err := n.gsp.Join(ctx, addrs)
	if err != nil {
		return cnt, fmt.Errorf("%w: %v", ErrJoinFailed, err)
	}
	return cnt, nil
}

func (n *Node) localMeta() gossip.Meta {
	return gossip.Meta{
		Name:            n.cfg.Name,
		HTTPAddr:        n.HTTPAddr(),
		HTTPSAddr:       n.HTTPSAddr(),
		P2PAddrs:        n.host.Addrs(),
		Version:         n.cfg.Version,
		RegistryVersion: n.reg.SupportedVersion(),
		BootstrapExpect: n.cfg.BootstrapExpect,
		Cluster:         n.clusterID(),
		Features:        gossip.FeatureRegistryFeed,
	}
}

// clusterID is the cluster the node's registry belongs to (its CA's
// fsm.ClusterCA.ID), "" while it has none.
func (n *Node) clusterID() string {
	if ca, ok := n.reg.ClusterCA(); ok {
		return ca.ID()
	}
	return ""
}

// HTTPAddr is the address the API listens on.
func (n *Node) HTTPAddr() string {
	if n.httpLn == nil {
		return n.cfg.HTTPAddr
	}
	return n.httpLn.Addr().String()
}

// URL is the API base URL.
func (n *Node) URL() string { return "http://" + n.HTTPAddr() }

// P2PAddr is the host:port libp2p listens on.
func (n *Node) P2PAddr() string {
	if a := n.host.ListenAddr(); a != "" {
		return a
	}
	return n.cfg.P2PAddr
}

// GossipAddr is the address other nodes join.
func (n *Node) GossipAddr() string { return n.gsp.Addr() }

// ID is the node's peer id (memberlist name, raft server id).
func (n *Node) ID() string { return n.id }

// Name is the human hive name.
func (n *Node) Name() string { return n.cfg.Name }

// SecretCreated reports whether this start generated the secret.
func (n *Node) SecretCreated() bool { return n.secretCreated }

// IsLeader reports whether this node is the Raft leader (the queen).
func (n *Node) IsLeader() bool { return n.cons != nil && n.cons.IsLeader() }

// LeaderID is the current leader's id, "" when there is none.
func (n *Node) LeaderID() string { return n.cons.LeaderID() }

// Registry is the local replica of the registry.
func (n *Node) Registry() *fsm.FSM { return n.reg }

// Apply proposes a registry command (forwarded to the leader if needed).
func (n *Node) Apply(ctx context.Context, cmd []byte) (any, error) { return n.apply(ctx, cmd) }

// Consensus exposes the raft wrapper (tests, bench).
func (n *Node) Consensus() *consensus.Consensus { return n.cons }

// Stopped is closed when the node has shut down.
func (n *Node) Stopped() <-chan struct{} { return n.stopped }

// peersSaveEvery: the peer list is written at once on a membership event,
// then at most this often while events keep coming (once more at the end
// of each period), so a join storm of n members costs a few writes
// instead of n per node (each an fsync; 100 nodes joining on one machine
// made 10,000).
const peersSaveEvery = 5 * time.Second

// gossipLoop turns gossip events into peerstore entries, raft reconcile
// kicks and the persisted peer list.
func (n *Node) gossipLoop() {
	defer n.wg.Done()
	// period runs for peersSaveEvery after each write; pending: an event
	// came since the last write.
	var period <-chan time.Time
	pending := false
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-period:
			period = nil
			if pending {
				pending = false
				n.savePeers()
				period = time.After(peersSaveEvery)
			}
		case ev, ok := <-n.gsp.Events():
			if !ok {
				return
			}
			m := ev.Member
			if m.ID != n.ID() && len(m.Meta.P2PAddrs) > 0 {
				if pid, err := peer.Decode(m.ID); err == nil {
					if err := n.host.AddPeer(pid, m.Meta.P2PAddrs); err != nil {
						n.log.Debug("add peer", "peer", m.Meta.Name, "err", err)
					}
				}
			}
			n.log.Debug("member event", "type", ev.Type, "member", m.Meta.Name, "state", m.State.String())
			if ev.Type == gossip.EventLeave || ev.Type == gossip.EventFailed {
				// Left or failed: its workers are out of reach until it
				// is back, and then it reports again.
				n.loads.forget(m.ID)
			}
			n.cons.MembershipChanged(m.ID)
			n.sup.Kick()
			if period == nil {
				n.savePeers()
				period = time.After(peersSaveEvery)
			} else {
				pending = true
			}
		}
	}
}

// mdnsLoop joins LAN peers found by mDNS: it asks each for its gossip
// address over p2p (which only a node with the same secret can answer).
func (n *Node) mdnsLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case ai, ok := <-n.host.Discovered():
			if !ok {
				return
			}
			n.joinFound(ai)
		}
	}
}

// mdnsProbeTimeout bounds asking a peer found by mDNS for its gossip
// address and joining it: a member on the LAN answers within a second.
const mdnsProbeTimeout = 5 * time.Second

// joinFound asks a peer found by mDNS for its gossip address and joins it.
// Its addresses are only probed (p2p.Host.ProbePeer): a stranger's (no
// answer without the cluster secret) are forgotten at once, and a member
// that joins is kept through gossip's member events.
func (n *Node) joinFound(ai peer.AddrInfo) {
	if ai.ID == n.peerID {
		return
	}
	if _, known := n.gsp.Member(ai.ID.String()); known {
		return
	}
	addrs := make([]string, 0, len(ai.Addrs))
	for _, a := range ai.Addrs {
		addrs = append(addrs, a.String())
	}
	forget, err := n.host.ProbePeer(ai.ID, addrs)
	if err != nil {
		n.log.Debug("mdns peer not probed", "peer", ai.ID, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, mdnsProbeTimeout)
	info, err := n.peerInfo(ctx, ai.ID)
	if err == nil && info.GossipAddr != "" {
		_, err = n.gsp.Join(ctx, []string{info.GossipAddr})
	}
	cancel()
	if err != nil {
		forget()
		n.log.Debug("mdns peer not joined", "peer", ai.ID, "err", err)
		return
	}
	n.log.Info("joined peer found by mDNS", "peer", info.Name)
}

// consensusMembers maps gossip members to what the leader loop needs.
func (n *Node) consensusMembers() []consensus.Member {
	ms := n.gsp.Members()
	out := make([]consensus.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, consensusMember(m))
	}
	return out
}

// consensusMemberByID is consensusMembers for one member.
func (n *Node) consensusMemberByID(id string) (consensus.Member, bool) {
	m, ok := n.gsp.Member(id)
	if !ok {
		return consensus.Member{}, false
	}
	return consensusMember(m), true
}

func consensusMember(m gossip.Member) consensus.Member {
	st := consensus.MemberAlive
	switch m.State {
	case gossip.StateSuspect:
		st = consensus.MemberSuspect
	case gossip.StateDead:
		st = consensus.MemberFailed
	case gossip.StateLeft:
		st = consensus.MemberLeft
	}
	return consensus.Member{
		ID: m.ID, Name: m.Meta.Name, HTTPAddr: m.Meta.HTTPAddr, HTTPSAddr: m.Meta.HTTPSAddr, GossipAddr: m.Addr,
		P2PAddrs: m.Meta.P2PAddrs, Version: m.Meta.Version, State: st,
		BootstrapExpect: m.Meta.BootstrapExpect, Cluster: m.Meta.Cluster,
		Replica: m.Meta.Features&gossip.FeatureRegistryFeed != 0,
	}
}

// loadPeers reads the persisted gossip addresses of other members.
func (n *Node) loadPeers() []string {
	path := filepath.Join(n.cfg.DataDir, peersFile)
	b, err := atomicfile.ReadFile(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			n.log.Warn("cannot read the saved peers; rejoining needs --join", "file", path, "err", err)
		}
		return nil
	}
	var addrs []string
	if err := json.Unmarshal(b, &addrs); err != nil {
		n.log.Warn("the saved peers are unreadable; rejoining needs --join (the file is rewritten once a member is seen)", "file", path, "err", err)
		return nil
	}
	return addrs
}

// savePeers persists the gossip addresses of the other live members so a
// restarted node rejoins without flags.
func (n *Node) savePeers() {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	var addrs []string
	for _, m := range n.gsp.Members() {
		if m.ID == n.ID() || m.State == gossip.StateLeft || m.State == gossip.StateDead {
			continue
		}
		addrs = append(addrs, m.Addr)
	}
	if len(addrs) == 0 {
		return // keep the last known list: everybody else may be restarting
	}
	sort.Strings(addrs)
	b, _ := json.Marshal(addrs)
	if n.peersGone || bytes.Equal(b, n.peersSaved) {
		return
	}
	if err := atomicfile.WriteFile(filepath.Join(n.cfg.DataDir, peersFile), b, 0o600); err != nil {
		n.log.Warn("save peers", "err", err)
		return
	}
	n.peersSaved = b
}

// Leave leaves the cluster gracefully and shuts the node down: its worker
// processes are drained and stopped, leadership is handed over if it leads,
// it is removed from Raft and leaves gossip.
func (n *Node) Leave(ctx context.Context) error {
	var errs []error
	// Workers first: in-flight requests finish (the workers drain on
	// SIGTERM) while the node still relays them.
	if err := n.StopWorkers(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop workers: %w", err))
	}
	if err := n.cons.Leave(ctx); err != nil {
		errs = append(errs, fmt.Errorf("raft leave: %w", err))
	}
	if err := n.gsp.Leave(ctx); err != nil {
		errs = append(errs, fmt.Errorf("gossip leave: %w", err))
	}
	// The cluster no longer counts this node: forget the peers so a
	// restart does not silently rejoin.
	n.peersMu.Lock()
	n.peersGone = true
	_ = os.Remove(filepath.Join(n.cfg.DataDir, peersFile))
	n.peersMu.Unlock()
	n.shutdown()
	return errors.Join(errs...)
}

// Close stops the node without leaving (others see it fail).
func (n *Node) Close() error {
	n.shutdown()
	return nil
}

func (n *Node) shutdown() {
	n.closeOnce.Do(func() {
		if n.cancel != nil {
			n.cancel()
		}
		for _, s := range []struct {
			srv *http.Server
			ln  net.Listener
		}{{n.httpSrv, n.httpLn}, {n.httpsSrv, n.httpsLn}} {
			if s.srv != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = s.srv.Shutdown(ctx)
				cancel()
			} else if s.ln != nil {
				s.ln.Close()
			}
		}
		if n.jobs != nil {
			n.jobs.Close()
		}
		if n.cons != nil {
			if err := n.cons.Close(); err != nil {
				n.log.Warn("close consensus", "err", err)
			}
		}
		if n.gsp != nil {
			_ = n.gsp.Close()
		}
		if n.links != nil {
			n.links.Close()
		}
		if n.host != nil {
			_ = n.host.Close()
		}
		if n.blobLn != nil {
			_ = n.blobLn.Close()
		}
		if n.sup != nil {
			n.sup.Close()
		}
		n.closeHive()
		n.wg.Wait()
		_ = n.dirLock.Release()
		close(n.stopped)
	})
}

// listenBlob binds the direct path for file copies (cfg.BlobAddr).
func (n *Node) listenBlob() error {
	if n.cfg.BlobAddr == "off" {
		return nil
	}
	ln, err := blob.Listen(n.cfg.BlobAddr, n.log.With("component", "blob"))
	if err != nil {
		if n.cfg.BlobAddr == DefaultBlobAddr {
			n.log.Warn("the blob port is taken: peers will copy files from this node over libp2p, more slowly; set --blob-addr", "err", err)
			return nil
		}
		return err
	}
	n.blobLn = ln
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := ln.Serve(); err != nil {
			n.log.Warn("blob port stopped", "err", err)
		}
	}()
	return nil
}

// BlobAddr is the bound address of the direct path for file copies, ""
// when it is off.
func (n *Node) BlobAddr() string {
	if n.blobLn == nil {
		return ""
	}
	return n.blobLn.Addr().String()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[len(id)-8:]
	}
	return id
}

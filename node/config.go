package node

import (
	"crypto/ed25519"
	"github.com/hashicorp/memberlist"
	"log/slog"
	"time"

	"github.com/rbee-project/rbee/node/tlsca"
	"github.com/rbee-project/rbee/worker"
)

// Default ports. 7833 spells "RBEE" on a phone keypad (7-2-3-3 would be
// "RBEE" too; 7833 keeps the three ports adjacent and unprivileged).
const (
	DefaultHTTPAddr   = "127.0.0.1:7833"
	DefaultGossipAddr = "0.0.0.0:7834"
	DefaultP2PAddr    = "0.0.0.0:7835"
	// DefaultBlobAddr is the direct path for file copies between nodes
	// (TLS 1.3, offered over libp2p; see node/blob): 7836 keeps it next
	// to the libp2p port. A peer that cannot reach it copies over libp2p.
	DefaultBlobAddr = "0.0.0.0:7836"
	// ExampleHTTPSAddr is what the docs and error messages suggest for
	// --https-addr (off by default): 7843 is the HTTP port + 10, clear of
	// the gossip and p2p ports.
	ExampleHTTPSAddr = "0.0.0.0:7843"
)

// DefaultMaxDownloadSize caps one model download: the largest GGUF files
// published (a 405B model at 8 bits) are under 512 GiB; a server that
// streams without end is stopped there, or earlier by the free-space check.
const DefaultMaxDownloadSize int64 = 512 << 30

// DefaultWorkerNice: workers run 5 nice levels below the node, which gives
// the node about three times a worker's share of a contended CPU (the
// kernel's weights fall by about 1.25× per level), so its gossip probes and
// raft heartbeats are answered on time while workers use every core, and
// an idle machine still gives the workers all of it.
const DefaultWorkerNice = 5

// Config is everything a node needs. The cmd layer fills it from flags;
// tests override fields of DefaultConfig.
type Config struct {
	// Name is the human hive name users type (default: hostname).
	Name string
	// DataDir holds the identity, secret, raft state, peers and catalogs.
	DataDir string
	// HTTPAddr is the plain HTTP API listen address: loopback (the
	// default), unless InsecureHTTP.
	HTTPAddr string
	// HTTPSAddr is the TLS API listen address for clients on the LAN, e.g.
	// 0.0.0.0:7843 ("" = none): the same API, served with a certificate
	// from the cluster CA (or TLSCertFile).
	HTTPSAddr string
	// InsecureHTTP allows HTTPAddr off loopback: plain HTTP on the
	// network. The node warns in its log and on its web page.
	InsecureHTTP bool
	// TLSCertFile and TLSKeyFile are the user's own certificate chain and
	// key (PEM) for the HTTPS listener instead of one from the cluster CA;
	// they are reloaded when the files change.
	TLSCertFile string
	TLSKeyFile  string
	// CAFingerprint pins the cluster CA ("sha256:<hex>"): a node whose
	// cluster's CA differs refuses it (Start fails with ErrCAMismatch, or
	// the node stops when the CA arrives later).
	CAFingerprint string
	// CertLifetime is the lifetime of the certificate the node issues
	// itself (renewed at 2/3 of it); CertCheckInterval is how often it
	// checks the certificate's age and its addresses.
	CertLifetime      time.Duration
	CertCheckInterval time.Duration
	// GossipAddr is the memberlist bind address (TCP and UDP).
	GossipAddr string
	// GossipAdvertise overrides the address gossiped to others.
	GossipAdvertise string
	// GossipWrap, when set, wraps the gossip transport (gossip.Config's
	// WrapTransport): tests cut gossip between nodes of one process with
	// it (nodetest.GossipCut). Not a setting of the command line.
	GossipWrap func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// EngineGuard is an rbee executable: external engines (llama-server,
	// vLLM, Ollama, ...) are started under `EngineGuard engine-guard`, which
	// stops them after WorkerOrphanGrace once this node is gone for good,
	// as rbee's own workers stop themselves. "" starts engines unguarded.
	EngineGuard string
	// RegistryVersion is the newest registry version (fsm.Version) this
	// node applies; 0 means this build's. A lower value makes the node act
	// as an older build: for tests of rolling upgrades.
	RegistryVersion int
	// P2PAddr is the libp2p TCP listen address.
	P2PAddr string
	// BlobAddr is the TCP listen address of the direct path for file
	// copies ("off" disables it: peers then copy from this node over
	// libp2p). When the default address cannot be bound the node warns
	// and runs without it; any other address must bind.
	BlobAddr string
	// StageDirect makes the shard workers this node starts for sharded
	// groups (all but a group's head) listen on a port of P2PAddr's host
	// for their head's direct TLS connection, offered over libp2p: the
	// hidden states then skip both nodes. False: every link goes through
	// the nodes (node/shardlink).
	StageDirect bool
	// Join lists gossip addresses to join at start.
	Join []string
	// BootstrapExpect > 0 waits for that many servers before bootstrapping.
	BootstrapExpect int
	// Token is the cluster secret given on the command line ("" = use the
	// stored one, or generate one on a fresh first node).
	Token string
	// ReapGrace is how long the leader waits, after gossip forgot a
	// member, before it removes the member from Raft and the registry (0:
	// consensus's default, a minute; tests shorten it).
	ReapGrace time.Duration
	// MDNS enables LAN discovery of peers.
	MDNS bool
	// NoPrefixAffinity routes requests among a model's workers by load
	// alone, without sending a conversation's turns to the worker that
	// holds its earlier ones (node/router, "Prefix affinity"): for
	// measuring what affinity gains.
	NoPrefixAffinity bool
	// Profile selects timings: "lan" (default) or "local" (tight timings
	// for tests on one machine).
	Profile string
	// ReconcileInterval is the leader's periodic full reconcile pass.
	ReconcileInterval time.Duration
	// Version is reported in gossip metadata and status.
	Version string
	// RequireToken makes loopback clients present a credential too, for
	// inference and reads as well (the admin key on loopback).
	RequireToken bool
	// AllowedHosts are extra names or addresses a request's Host header
	// may carry (besides the node's name, the hostname, localhost and the
	// machine's addresses); anything else is refused (DNS rebinding).
	AllowedHosts []string
	// CORSOrigins are browser origins besides the node's own that may
	// call the API (e.g. a chat UI served elsewhere).
	CORSOrigins []string
	// MaxConnsPerClient caps open HTTP connections per client address.
	MaxConnsPerClient int
	// HTTPBodyTimeout bounds reading a request body; HTTPIdleTimeout closes
	// idle keep-alive connections. Responses (streams) are not bounded as
	// a whole, but each write must make progress within HTTPStallTimeout.
	HTTPBodyTimeout  time.Duration
	HTTPIdleTimeout  time.Duration
	HTTPStallTimeout time.Duration
	// MaxDownloadSize caps a model download whose size the server does
	// not announce (and any download), in bytes.
	MaxDownloadSize int64
	// HFEndpoint and HFToken configure Hugging Face downloads (the cmd
	// layer reads HF_ENDPOINT and HF_TOKEN).
	HFEndpoint string
	HFToken    string
	// WorkerReleaseURL is where `worker download` finds release binaries:
	// the only release location; a job cannot name another.
	WorkerReleaseURL string
	// WorkerReleaseKeys are ed25519 public keys trusted to sign worker
	// releases besides the built-in rbee release key (self-built
	// releases, signed with `rbee release sign`). Downloads and peer
	// copies of binaries are checked against them.
	WorkerReleaseKeys []ed25519.PublicKey
	// WorkerBinary is an rbee-worker executable to catalog when the
	// catalog has none (the one built next to rbee).
	WorkerBinary string
	// SourceDir is the rbee source tree `worker build` compiles from.
	SourceDir string
	// RbeeBinary is the rbee executable `hive install` copies to hosts of
	// this platform (default: the running executable).
	RbeeBinary string
	// SSHHome is the home whose ~/.ssh (config, keys, known_hosts) the
	// SSH operations use (default: the user's home).
	SSHHome string
	// SSHKnownHosts overrides ~/.ssh/known_hosts.
	SSHKnownHosts string
	// SSHAgentSocket is SSH_AUTH_SOCK (the cmd layer reads it).
	SSHAgentSocket string
	// WorkerHeartbeatTimeout takes a silent worker out of the schedule.
	WorkerHeartbeatTimeout time.Duration
	// EngineFirstByteTimeout bounds the wait for the first byte of an
	// external engine's streamed answer (0: the supervisor's default,
	// supervisor.DefaultEngineFirstByte).
	EngineFirstByteTimeout time.Duration
	// WorkerOrphanGrace is given to every worker this node spawns
	// (rbee-worker --orphan-grace): a worker exits on its own once the node
	// has accepted none of its heartbeats for this long (a node stopped
	// without --stop-workers, killed, or replaced by another node on its
	// address). A restart within it re-adopts the workers. 0 means
	// worker.DefaultOrphanGrace; negative means never.
	WorkerOrphanGrace time.Duration
	// WorkerNice runs the workers this node spawns this many nice levels
	// below the node (Linux; 0: at the node's priority). See
	// process.Config.Nice.
	WorkerNice int
	// MemoryLimit, when > 0, caps the RAM (bytes) this node gives CPU
	// workers in all, for a machine shared with other work: a spawn that
	// does not fit beside the running workers is refused, and the node
	// reports the rest free for placement and group splits (ram.go).
	MemoryLimit uint64
	Logger      *slog.Logger

	// noAutoCA keeps the leader from creating the cluster CA (tests that
	// race creators themselves; see export_test.go).
	noAutoCA bool
}

// DefaultConfig returns LAN defaults.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:               DefaultHTTPAddr,
		GossipAddr:             DefaultGossipAddr,
		P2PAddr:                DefaultP2PAddr,
		BlobAddr:               DefaultBlobAddr,
		StageDirect:            true,
		MDNS:                   true,
		Profile:                "lan",
		ReconcileInterval:      30 * time.Second,
		Version:                "dev",
		WorkerHeartbeatTimeout: 30 * time.Second,
		MaxConnsPerClient:      DefaultMaxConnsPerClient,
		HTTPBodyTimeout:        DefaultHTTPBodyTimeout,
		HTTPStallTimeout:       DefaultHTTPStallTimeout,
		HTTPIdleTimeout:        DefaultHTTPIdleTimeout,
		MaxDownloadSize:        DefaultMaxDownloadSize,
		WorkerOrphanGrace:      worker.DefaultOrphanGrace,
		WorkerNice:             DefaultWorkerNice,
		CertLifetime:           tlsca.DefaultCertLifetime,
		CertCheckInterval:      DefaultCertCheckInterval,
	}
}

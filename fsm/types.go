package fsm

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"time"
)

// NodeState is a node's membership state as recorded in the registry. The
// leader derives it from gossip and writes it only when it changes.
type NodeState string

// Node states.
const (
	NodeAlive  NodeState = "alive"
	NodeFailed NodeState = "failed"
	NodeLeft   NodeState = "left"
)

// Valid reports whether s is one of the defined node states.
func (s NodeState) Valid() bool {
	switch s {
	case NodeAlive, NodeFailed, NodeLeft:
		return true
	}
	return false
}

// WorkerState is the registry lifecycle of a worker process. Heartbeats and
// load never pass through the registry; only these transitions do.
type WorkerState string

// Worker states. WorkerGone is terminal: a gone worker never comes back
// (a respawned process gets a new id).
const (
	WorkerRegistered WorkerState = "registered"
	WorkerReady      WorkerState = "ready"
	WorkerRetiring   WorkerState = "retiring"
	WorkerGone       WorkerState = "gone"
)

// Valid reports whether s is one of the defined worker states.
func (s WorkerState) Valid() bool {
	switch s {
	case WorkerRegistered, WorkerReady, WorkerRetiring, WorkerGone:
		return true
	}
	return false
}

// HostState is the state of an SSH inventory host.
type HostState string

// Host states.
const (
	HostKnown     HostState = "known"
	HostInstalled HostState = "installed"
	HostRunning   HostState = "running"
	HostStopped   HostState = "stopped"
)

// Valid reports whether s is one of the defined host states.
func (s HostState) Valid() bool {
	switch s {
	case HostKnown, HostInstalled, HostRunning, HostStopped:
		return true
	}
	return false
}

// Node is one cluster member as recorded in the registry. ID is the node's
// libp2p peer id, which is also its memberlist name and Raft server id.
type Node struct {
	ID           string        `json:"id"`
	Name         string        `json:"name"`
	HTTPAddr     string        `json:"http_addr,omitempty"`
	HTTPSAddr    string        `json:"https_addr,omitempty"` // the TLS API address, "" when off
	GossipAddr   string        `json:"gossip_addr,omitempty"`
	P2PAddrs     []string      `json:"p2p_addrs,omitempty"`
	Version      string        `json:"version,omitempty"`
	State        NodeState     `json:"state"`
	Capabilities *Capabilities `json:"capabilities,omitempty"`
	JoinedAt     time.Time     `json:"joined_at"`
	UpdatedAt    time.Time     `json:"updated_at"`
}

// Capabilities is the hardware a node reported the last time it detected it.
type Capabilities struct {
	CPUModel string   `json:"cpu_model,omitempty"`
	Cores    int      `json:"cores,omitempty"`
	Threads  int      `json:"threads,omitempty"`
	Flags    []string `json:"flags,omitempty"`
	RAMTotal uint64   `json:"ram_total,omitempty"`
	RAMFree  uint64   `json:"ram_free,omitempty"`
	OS       string   `json:"os,omitempty"`
	Arch     string   `json:"arch,omitempty"`
	GPUs     []GPU    `json:"gpus,omitempty"`
}

// GPU is one accelerator of a node.
type GPU struct {
	Vendor    string `json:"vendor"`
	Name      string `json:"name"`
	VRAMTotal uint64 `json:"vram_total,omitempty"`
	VRAMFree  uint64 `json:"vram_free,omitempty"`
	Index     int    `json:"index"`
}

// Worker is a worker process registered in the cluster.
type Worker struct {
	ID           string      `json:"id"`
	NodeID       string      `json:"node_id"`
	Model        string      `json:"model"`
	Device       string      `json:"device,omitempty"`
	Port         int         `json:"port,omitempty"`
	PID          int         `json:"pid,omitempty"`
	State        WorkerState `json:"state"`
	RegisteredAt time.Time   `json:"registered_at"`
	UpdatedAt    time.Time   `json:"updated_at"`
	// Group is the sharded group the worker was started for ("" for an
	// ordinary worker), as its node's process record says. A worker with
	// a group serves requests only as the head of a ready or starting
	// group that lists it; any other is never routed to. Registry version
	// 3: a proposer sets it only once the cluster is at 3 (CheckWritable).
	Group string `json:"group,omitempty"`
}

// ModelHolding records that a node has a model file on its disk. Its key is
// (NodeID, ModelID).
type ModelHolding struct {
	NodeID       string `json:"node_id"`
	ModelID      string `json:"model_id"`
	SHA256       string `json:"sha256,omitempty"`
	File         string `json:"file,omitempty"`
	Size         uint64 `json:"size,omitempty"`
	Quantization string `json:"quantization,omitempty"`
	// Ref is the reference the file came from (hf:org/repo/file.gguf, a
	// URL, builtin:name): with SHA256 it lets any node copy the file from
	// this one by the name a user typed, without asking the origin.
	Ref string `json:"ref,omitempty"`
	// Parts is how many gguf-split parts the file was merged from (0: it
	// was one file), so a node that copies it keeps what its catalog
	// entry says. Optional: a node of an older version ignores it.
	Parts     int       `json:"parts,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// maxModelParts is the most parts a split model has (gguf-split's
// split.count is a uint16).
const maxModelParts = 65535

// Key returns the holding's registry key.
func (m ModelHolding) Key() string { return m.NodeID + "\x00" + m.ModelID }

// BinaryHolding records that a node has a worker binary in its catalog. Its
// key is (NodeID, Type, Version, OS, Arch).
type BinaryHolding struct {
	NodeID    string    `json:"node_id"`
	Type      string    `json:"type"`
	Version   string    `json:"version"`
	OS        string    `json:"os"`
	Arch      string    `json:"arch"`
	SHA256    string    `json:"sha256,omitempty"`
	Size      uint64    `json:"size,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Key returns the holding's registry key.
func (b BinaryHolding) Key() string {
	return b.NodeID + "\x00" + b.Type + "\x00" + b.Version + "\x00" + b.OS + "\x00" + b.Arch
}

// Host is an SSH inventory entry; Name is its key.
type Host struct {
	Name         string    `json:"name"`
	Host         string    `json:"host"`
	Port         int       `json:"port,omitempty"`
	User         string    `json:"user,omitempty"`
	IdentityFile string    `json:"identity_file,omitempty"`
	InstallPath  string    `json:"install_path,omitempty"`
	State        HostState `json:"state"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// APIKey is a client credential of the HTTP API. The registry keeps the
// sha256 of the key, never the key: a replica or snapshot that leaks gives
// no credential.
type APIKey struct {
	Name string `json:"name"`
	// Scope is what the key may do: "inference", "read" or "admin".
	Scope string `json:"scope"`
	// Hash is the lower-case hex sha256 of the key.
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
}

// API key scopes.
const (
	ScopeInference = "inference"
	ScopeRead      = "read"
	ScopeAdmin     = "admin"
)

func (k *APIKey) validate() error {
	if err := checkID("api key name", k.Name); err != nil {
		return err
	}
	if len(k.Name) > 64 || strings.ContainsFunc(k.Name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) {
		return fmt.Errorf("%w: api key name %q: 1-64 letters, digits, '-', '_' or '.'", ErrInvalid, k.Name)
	}
	switch k.Scope {
	case ScopeInference, ScopeRead, ScopeAdmin:
	default:
		return fmt.Errorf("%w: api key scope %q (inference, read or admin)", ErrInvalid, k.Scope)
	}
	if len(k.Hash) != 64 || strings.Trim(k.Hash, "0123456789abcdef") != "" {
		return fmt.Errorf("%w: api key hash must be 64 lower-case hex digits", ErrInvalid)
	}
	return nil
}

// ClusterCA is the certificate authority of the cluster's HTTPS API. The
// certificate is public. The private key is sealed (AES-256-GCM) under a
// key that every node derives from the cluster secret, so any node can
// issue itself a certificate, and a replica or snapshot that leaks gives
// no key to someone without the secret. The registry only stores and
// checks the shape; node/tlsca seals, opens and issues.
type ClusterCA struct {
	// CertPEM is the CA certificate: one PEM "CERTIFICATE" block.
	CertPEM string `json:"cert_pem"`
	// SealedKey is the standard base64 of nonce || AES-GCM ciphertext of
	// the CA's PKCS #8 private key.
	SealedKey string    `json:"sealed_key"`
	Created   time.Time `json:"created"`
}

// ClusterIDLen is the length of ClusterCA.ID: 128 bits of the hash, in hex
// (gossip metadata has 512 bytes in all).
const ClusterIDLen = 32

// ID names the cluster by its CA: the start of the SHA-256 of the CA
// certificate's DER, in hex ("" when the PEM holds no certificate). Nodes
// advertise it in gossip, and a leader adds no member of another cluster.
func (ca ClusterCA) ID() string {
	block, _ := pem.Decode([]byte(ca.CertPEM))
	if block == nil {
		return ""
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])[:ClusterIDLen]
}

// CA record bounds. A P-256 CA certificate is about 600 bytes of PEM and
// its sealed key about 200 bytes of base64; the caps leave room for RSA
// keys of a future version while keeping one entry far below the command
// size limit.
const (
	maxCACertPEM   = 16 << 10
	maxCASealedKey = 8 << 10
)

func (c *ClusterCA) validate() error {
	if _, err := ParseCACert(c.CertPEM); err != nil {
		return err
	}
	if len(c.SealedKey) > maxCASealedKey {
		return fmt.Errorf("%w: sealed CA key longer than %d bytes", ErrInvalid, maxCASealedKey)
	}
	// A 12-byte nonce and a 16-byte tag around a non-empty key.
	if k, err := base64.StdEncoding.DecodeString(c.SealedKey); err != nil || len(k) <= 28 {
		return fmt.Errorf("%w: sealed CA key is not base64 of a nonce, a key and a tag", ErrInvalid)
	}
	return nil
}

// ParseCACert parses a CA record's certificate: exactly one PEM
// CERTIFICATE block (surrounding white space allowed, nothing else) that
// parses as an X.509 CA certificate. Every replica runs the same check, so
// a record that one replica accepts, all accept.
func ParseCACert(certPEM string) (*x509.Certificate, error) {
	if len(certPEM) > maxCACertPEM {
		return nil, fmt.Errorf("%w: CA certificate longer than %d bytes", ErrInvalid, maxCACertPEM)
	}
	blk, rest := pem.Decode([]byte(certPEM))
	if blk == nil || blk.Type != "CERTIFICATE" || len(blk.Headers) != 0 {
		return nil, fmt.Errorf("%w: CA certificate is not one PEM CERTIFICATE block", ErrInvalid)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the CA certificate", ErrInvalid)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: CA certificate: %v", ErrInvalid, err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%w: the certificate is not a CA", ErrInvalid)
	}
	return cert, nil
}

// maxIDLen bounds ids, names and other key strings: peer ids are ~52
// characters and model references a few hundred; 1 KiB leaves room without
// letting one command bloat every replica.
const maxIDLen = 1024

func checkID(field, v string) error {
	if v == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, field)
	}
	if len(v) > maxIDLen {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, field, maxIDLen)
	}
	return nil
}

func (n *Node) validate() error {
	if err := checkID("node id", n.ID); err != nil {
		return err
	}
	if !n.State.Valid() {
		return fmt.Errorf("%w: node state %q", ErrInvalid, n.State)
	}
	return nil
}

func (c *Capabilities) validate() error {
	if c.Cores < 0 || c.Threads < 0 {
		return fmt.Errorf("%w: negative core or thread count", ErrInvalid)
	}
	for _, g := range c.GPUs {
		if g.Index < 0 {
			return fmt.Errorf("%w: negative gpu index", ErrInvalid)
		}
	}
	return nil
}

func (w *Worker) validate() error {
	if err := checkID("worker id", w.ID); err != nil {
		return err
	}
	if err := checkID("worker node id", w.NodeID); err != nil {
		return err
	}
	if !w.State.Valid() {
		return fmt.Errorf("%w: worker state %q", ErrInvalid, w.State)
	}
	if w.Port < 0 || w.Port > 65535 {
		return fmt.Errorf("%w: worker port %d", ErrInvalid, w.Port)
	}
	if w.Group != "" {
		if err := checkID("worker group", w.Group); err != nil {
			return err
		}
	}
	return nil
}

func (m *ModelHolding) validate() error {
	if err := checkID("model holding node id", m.NodeID); err != nil {
		return err
	}
	if len(m.Ref) > maxIDLen {
		return fmt.Errorf("%w: model ref longer than %d bytes", ErrInvalid, maxIDLen)
	}
	if m.Parts < 0 || m.Parts > maxModelParts {
		return fmt.Errorf("%w: model parts %d (0..%d)", ErrInvalid, m.Parts, maxModelParts)
	}
	return checkID("model id", m.ModelID)
}

func (b *BinaryHolding) validate() error {
	if err := checkID("binary holding node id", b.NodeID); err != nil {
		return err
	}
	return checkID("binary type", b.Type)
}

func (h *Host) validate() error {
	if err := checkID("host name", h.Name); err != nil {
		return err
	}
	if !h.State.Valid() {
		return fmt.Errorf("%w: host state %q", ErrInvalid, h.State)
	}
	if h.Port < 0 || h.Port > 65535 {
		return fmt.Errorf("%w: host port %d", ErrInvalid, h.Port)
	}
	return nil
}

// Clone returns a deep copy of n.
func (n Node) Clone() Node {
	n.P2PAddrs = cloneStrings(n.P2PAddrs)
	if n.Capabilities != nil {
		c := n.Capabilities.Clone()
		n.Capabilities = &c
	}
	return n
}

// Clone returns a deep copy of c.
func (c Capabilities) Clone() Capabilities {
	c.Flags = cloneStrings(c.Flags)
	if c.GPUs != nil {
		c.GPUs = append([]GPU(nil), c.GPUs...)
	}
	return c
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}

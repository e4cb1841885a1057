// Package certs keeps a node's HTTPS identity current: the cluster CA
// (created by the leader, sealed under the cluster secret in the
// registry, opened by every node and checked against a pinned
// fingerprint) and the node's own certificate, issued from it for the
// node's names and addresses, renewed at two thirds of its life or when
// those change, kept in the data dir so that a restart serves at once; or
// the user's --tls-cert/--tls-key, reloaded when the files change. See
// node/DESIGN.md, "HTTPS and the cluster CA".
package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/node/tlsca"
)

// ErrCAMismatch: the registry's CA is not the pinned one, or cannot be
// used.
var ErrCAMismatch = errors.New("cluster CA fingerprint mismatch")

// caCreateTimeout bounds one attempt of the leader to store the CA.
const caCreateTimeout = 10 * time.Second

// Cluster is what the manager needs of the node.
type Cluster interface {
	// ClusterCA is the registry replica's CA record.
	ClusterCA() (fsm.ClusterCA, bool)
	IsLeader() bool
	// Apply proposes an encoded registry command.
	Apply(ctx context.Context, cmd []byte) error
	// WaitReplica polls until done or a bound (the node's replica shows
	// a write).
	WaitReplica(ctx context.Context, done func() bool)
	// Refuse stops the node: the registry's CA is not the pinned one.
	Refuse(err error)
	// CAChanged tells the node a new CA was learnt (it rewrites
	// node.json).
	CAChanged()
}

// Config configures a Manager.
type Config struct {
	// Name is the node's name, a certificate's first DNS name; DataDir
	// keeps the CA certificate and the node's certificate (tls/).
	Name, DataDir string
	// Secret seals the CA's key in the registry.
	Secret string
	// CAFingerprint pins the cluster CA ("" trusts the registry's).
	CAFingerprint string
	// CertFile and KeyFile serve the user's certificate instead.
	CertFile, KeyFile string
	// CertLifetime is the life of an issued certificate.
	CertLifetime time.Duration
	// AllowedHosts are extra names and addresses a certificate covers.
	AllowedHosts []string
	// NoAutoCA: the leader does not create a CA (tests).
	NoAutoCA bool
	Cluster  Cluster
	Logger   *slog.Logger
	// Now is the clock certificates are issued and judged by; nil means
	// time.Now.
	Now func() time.Time
}

// Manager holds the served certificate and the known CA. Safe for
// concurrent use.
type Manager struct {
	cfg    Config
	holder tlsca.Holder

	mu       sync.Mutex
	ca       *tlsca.CA // the registry's CA, opened; nil until known
	caPEM    string    // the record ca was opened from
	caFP     string
	caBad    string // a record that failed to open (logged once)
	userMod  [2]time.Time
	ifaceFn  func() ([]net.Addr, error) // nil: net.InterfaceAddrs
	listener net.Addr                   // the HTTPS listener's address; nil: no HTTPS
}

// New returns a manager.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Manager{cfg: cfg}
}

// SetListener records the HTTPS listener's address: certificates are
// issued only for a node that serves HTTPS, and cover that address (every
// interface address when it is a wildcard).
func (m *Manager) SetListener(addr net.Addr) {
	m.mu.Lock()
	m.listener = addr
	m.mu.Unlock()
}

func (m *Manager) listenAddr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listener
}

func (m *Manager) listening() bool { return m.listenAddr() != nil }

// ServerConfig is the TLS configuration of the HTTPS listener: it serves
// the current certificate.
func (m *Manager) ServerConfig() *tls.Config { return m.holder.ServerConfig() }

// Certificate is the certificate served now (nil before there is one).
func (m *Manager) Certificate() *tls.Certificate { return m.holder.Get() }

// CAFingerprint is the known CA's fingerprint, "" while none is known.
func (m *Manager) CAFingerprint() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.caFP
}

// SetInterfaceAddrs replaces the source of the machine's addresses
// (net.InterfaceAddrs): tests renumber a node with it.
func (m *Manager) SetInterfaceAddrs(f func() ([]net.Addr, error)) {
	m.mu.Lock()
	m.ifaceFn = f
	m.mu.Unlock()
}

// Files in the data dir. The node's certificate is kept so that a restart
// serves HTTPS at once, before the registry is back.
const (
	tlsDir       = "tls"
	caCertFile   = "ca.pem"   // the cluster CA certificate (public)
	nodeCertFile = "node.pem" // this node's certificate chain
	nodeKeyFile  = "node.key" // its private key, 0600
)

// Dir is where a node keeps its certificates and keys under dataDir.
func Dir(dataDir string) string { return filepath.Join(dataDir, tlsDir) }

// Check is one pass of the node's TLS loop; full also looks at the certificate's
// age, the addresses and the user's files.
func (m *Manager) Check(ctx context.Context, full bool) {
	if full && m.cfg.CertFile != "" && m.listening() {
		if err := m.LoadUser(false); err != nil {
			m.cfg.Logger.Warn("reload --tls-cert/--tls-key (the previous certificate stays)", "err", err)
		}
	}
	rec, ok := m.cfg.Cluster.ClusterCA()
	if !ok {
		if m.cfg.Cluster.IsLeader() && m.cfg.CAFingerprint == "" && !m.cfg.NoAutoCA {
			cctx, cancel := context.WithTimeout(ctx, caCreateTimeout)
			if _, err := m.EnsureCA(cctx); err != nil && ctx.Err() == nil {
				m.cfg.Logger.Warn("create the cluster CA", "err", err)
			}
			cancel()
		}
		return
	}
	changed, err := m.learnCA(rec)
	if err != nil {
		return
	}
	if changed || full {
		m.refreshCert()
	}
}

// EnsureCA returns the registry's CA, creating it when there is
// none. Two nodes that race both propose; the log keeps the first, the
// second gets a conflict, and both return the same CA.
func (m *Manager) EnsureCA(ctx context.Context) (*tlsca.CA, error) {
	if rec, ok := m.cfg.Cluster.ClusterCA(); ok {
		return tlsca.OpenCA(rec.CertPEM, rec.SealedKey, m.cfg.Secret)
	}
	return m.ProposeCA(ctx)
}

// ProposeCA creates a CA and proposes it, even when the registry has
// one; whichever CA the registry holds afterwards (this one, or one that
// won a race) is returned.
func (m *Manager) ProposeCA(ctx context.Context) (*tlsca.CA, error) {
	now := m.cfg.Now().UTC()
	ca, err := tlsca.NewCA(m.cfg.Name, now)
	if err != nil {
		return nil, err
	}
	sealed, err := tlsca.SealKey(ca, m.cfg.Secret)
	if err != nil {
		return nil, err
	}
	b, err := fsm.Encode(fsm.CreateClusterCA{CA: fsm.ClusterCA{CertPEM: ca.CertPEM(), SealedKey: sealed, Created: now.Truncate(time.Second)}})
	if err != nil {
		return nil, err
	}
	if err := m.cfg.Cluster.Apply(ctx, b); err != nil && !errors.Is(err, fsm.ErrConflict) {
		return nil, err
	} else if err == nil {
		m.cfg.Logger.Info("created the cluster CA", "fingerprint", ca.Fingerprint())
	}
	m.cfg.Cluster.WaitReplica(ctx, func() bool { _, ok := m.cfg.Cluster.ClusterCA(); return ok })
	rec, ok := m.cfg.Cluster.ClusterCA()
	if !ok {
		return nil, errors.New("the cluster CA is not in this node's replica yet")
	}
	return tlsca.OpenCA(rec.CertPEM, rec.SealedKey, m.cfg.Secret)
}

// learnCA opens the registry's CA record when it is new to this node and
// checks a pinned fingerprint. changed reports a new CA.
func (m *Manager) learnCA(rec fsm.ClusterCA) (changed bool, err error) {
	m.mu.Lock()
	if rec.CertPEM == m.caPEM {
		m.mu.Unlock()
		return false, nil
	}
	bad := rec.CertPEM == m.caBad
	m.mu.Unlock()
	if bad {
		return false, ErrCAMismatch
	}
	cert, err := tlsca.ParseCACertPEM([]byte(rec.CertPEM))
	if err != nil {
		m.markBadCA(rec, err)
		return false, err
	}
	fp := tlsca.Fingerprint(cert)
	if m.cfg.CAFingerprint != "" {
		if err := CheckPinned(m.cfg.CAFingerprint, fp); err != nil {
			m.cfg.Cluster.Refuse(err)
			return false, err
		}
	}
	ca, err := tlsca.OpenCA(rec.CertPEM, rec.SealedKey, m.cfg.Secret)
	if err != nil {
		m.markBadCA(rec, err)
		return false, err
	}
	m.mu.Lock()
	m.ca, m.caPEM, m.caFP = ca, rec.CertPEM, fp
	m.mu.Unlock()
	m.cfg.Logger.Info("cluster CA", "fingerprint", fp, "not_after", ca.Cert.NotAfter.Format(time.DateOnly))
	dir := filepath.Join(m.cfg.DataDir, tlsDir)
	if err := os.MkdirAll(dir, 0o700); err == nil {
		if err := atomicfile.WriteFile(filepath.Join(dir, caCertFile), []byte(rec.CertPEM), 0o644); err != nil {
			m.cfg.Logger.Warn("keep the CA certificate", "err", err)
		}
	}
	m.cfg.Cluster.CAChanged()
	return true, nil
}

func (m *Manager) markBadCA(rec fsm.ClusterCA, err error) {
	m.mu.Lock()
	m.caBad = rec.CertPEM
	m.mu.Unlock()
	m.cfg.Logger.Error("the registry's cluster CA cannot be used: this node serves no cluster certificate", "err", err)
}

// CheckPinned compares the registry CA's fingerprint with a pinned one.
func CheckPinned(pinned, fp string) error {
	want, err := tlsca.ParseFingerprint(pinned)
	if err != nil {
		return err
	}
	if tlsca.FormatFingerprint(want) != fp {
		return fmt.Errorf("%w: this cluster's CA is %s, not %s (--ca-fingerprint): this is not the cluster you meant to join, or the fingerprint was mistyped; the node stops",
			ErrCAMismatch, fp, tlsca.FormatFingerprint(want))
	}
	return nil
}

// refreshCert issues or renews the served certificate from the cluster CA
// (not with --tls-cert: tlsCheck reloads that one).
func (m *Manager) refreshCert() {
	if !m.listening() || m.cfg.CertFile != "" {
		return
	}
	m.mu.Lock()
	ca := m.ca
	m.mu.Unlock()
	if ca == nil {
		return
	}
	names := m.certNames()
	now := m.cfg.Now()
	why := renewReason(m.holder.Get(), ca, names, now)
	if why == "" {
		return
	}
	c, err := ca.Issue(m.cfg.Name, names, now, m.cfg.CertLifetime)
	if err != nil {
		m.cfg.Logger.Error("issue this node's certificate", "err", err)
		return
	}
	m.holder.Set(c)
	m.cfg.Logger.Info("issued this node's certificate", "why", why, "dns", names.DNS, "ips", names.IPs, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	m.keepCert(c)
}

// renewReason says why a certificate must be replaced, "" if it need not.
func renewReason(cur *tls.Certificate, ca *tlsca.CA, names tlsca.Names, now time.Time) string {
	switch {
	case cur == nil || cur.Leaf == nil:
		return "no certificate yet"
	case cur.Leaf.CheckSignatureFrom(ca.Cert) != nil:
		return "issued by another CA"
	case now.Before(cur.Leaf.NotBefore):
		// Issued while the clock was ahead (a wrong RTC at boot, corrected
		// since): clients refuse it until the clock gets there.
		return "not valid yet (the clock went back)"
	case !now.Before(tlsca.RenewAt(cur.Leaf)):
		return "two thirds of its life are over"
	case !tlsca.CertNames(cur.Leaf).Equal(names):
		return "the node's names or addresses changed"
	}
	return ""
}

// certNames are the names and addresses this node's certificate covers:
// its name, the hostname, localhost, loopback, the HTTPS listen address
// (every interface address when it listens on all of them) and the
// --allowed-host entries.
func (m *Manager) certNames() tlsca.Names {
	var names tlsca.Names
	names.DNS = append(names.DNS, m.cfg.Name, "localhost")
	if h, err := os.Hostname(); err == nil && h != "" {
		names.DNS = append(names.DNS, h)
		if short, _, ok := strings.Cut(h, "."); ok {
			names.DNS = append(names.DNS, short)
		}
	}
	names.IPs = append(names.IPs, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	if addr := m.listenAddr(); addr != nil {
		if ta, ok := addr.(*net.TCPAddr); ok {
			if ta.IP.IsUnspecified() {
				names.IPs = append(names.IPs, m.interfaceIPs()...)
			} else {
				names.IPs = append(names.IPs, ta.IP)
			}
		}
	}
	for _, a := range m.cfg.AllowedHosts {
		a = strings.TrimSpace(a)
		if h, _, err := net.SplitHostPort(a); err == nil {
			a = h
		}
		a = strings.Trim(a, "[]")
		if ip := net.ParseIP(a); ip != nil {
			names.IPs = append(names.IPs, ip)
		} else {
			names.DNS = append(names.DNS, a)
		}
	}
	return names.Normalize()
}

// interfaceIPs are the machine's addresses, without link-local ones (a
// URL cannot name those without a zone).
func (m *Manager) interfaceIPs() []net.IP {
	m.mu.Lock()
	fn := m.ifaceFn
	m.mu.Unlock()
	if fn == nil {
		fn = net.InterfaceAddrs
	}
	addrs, err := fn()
	if err != nil {
		m.cfg.Logger.Warn("list interface addresses", "err", err)
		return nil
	}
	var out []net.IP
	for _, a := range addrs {
		in, ok := a.(*net.IPNet)
		if !ok || in.IP.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, in.IP)
	}
	return out
}

// keepCert writes the node's certificate to the data dir.
func (m *Manager) keepCert(c *tls.Certificate) {
	chain, key, err := tlsca.EncodeCertificate(c)
	if err == nil {
		dir := filepath.Join(m.cfg.DataDir, tlsDir)
		if err = os.MkdirAll(dir, 0o700); err == nil {
			if err = atomicfile.WriteFile(filepath.Join(dir, nodeKeyFile), key, 0o600); err == nil {
				err = atomicfile.WriteFile(filepath.Join(dir, nodeCertFile), chain, 0o644)
			}
		}
	}
	if err != nil {
		m.cfg.Logger.Warn("keep this node's certificate in the data dir", "err", err)
	}
}

// LoadKept serves the certificate kept in the data dir until the
// registry's CA confirms or replaces it; an expired one, or one not valid
// yet (the clock went back since it was issued), is left.
func (m *Manager) LoadKept() {
	dir := filepath.Join(m.cfg.DataDir, tlsDir)
	chain, err1 := atomicfile.ReadFile(filepath.Join(dir, nodeCertFile))
	key, err2 := atomicfile.ReadFile(filepath.Join(dir, nodeKeyFile))
	if err1 != nil || err2 != nil {
		return
	}
	c, err := tlsca.LoadCertificate(chain, key)
	if err != nil {
		m.cfg.Logger.Warn("the kept certificate does not load; a new one is issued", "err", err)
		return
	}
	if now := m.cfg.Now(); now.Before(c.Leaf.NotAfter) && !now.Before(c.Leaf.NotBefore) {
		m.holder.Set(c)
	}
}

// LoadUser loads --tls-cert/--tls-key when they changed (always when
// force).
func (m *Manager) LoadUser(force bool) error {
	var mod [2]time.Time
	for i, p := range []string{m.cfg.CertFile, m.cfg.KeyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		mod[i] = fi.ModTime()
	}
	m.mu.Lock()
	same := m.userMod == mod
	m.mu.Unlock()
	if same && !force {
		return nil
	}
	c, err := tlsca.LoadCertificateFiles(m.cfg.CertFile, m.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	if m.cfg.Now().After(c.Leaf.NotAfter) {
		m.cfg.Logger.Warn("--tls-cert has expired", "not_after", c.Leaf.NotAfter)
	}
	m.holder.Set(c)
	m.mu.Lock()
	m.userMod = mod
	m.mu.Unlock()
	if !force {
		m.cfg.Logger.Info("reloaded --tls-cert/--tls-key", "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/tlsca"
)

// The HTTPS API (see DESIGN.md, "HTTPS and the cluster CA"):
//
//   - The leader creates the cluster CA once and stores it in the registry,
//     its key sealed under the cluster secret (node/tlsca).
//   - Every node with --https-addr issues itself a certificate from it for
//     its names and addresses, renews it at 2/3 of its life and when its
//     addresses change, and its listener serves the new one at once.
//   - --tls-cert/--tls-key serve the user's own certificate instead
//     (reloaded when the files change).
//   - --ca-fingerprint pins the CA a joining node expects.

const (
	// DefaultCertCheckInterval is how often a node looks at its
	// certificate's age and at its addresses: a DHCP renumbering is picked
	// up within a minute, and a check is a few system calls.
	DefaultCertCheckInterval = time.Minute
	// caPollInterval is how often a node without the CA looks again (the
	// leader may just have been elected; registry changes wake it too).
	caPollInterval = 500 * time.Millisecond
	// caWaitTimeout bounds how long Start waits for the registry's CA
	// when the node pins one: a joined node has the registry within
	// seconds; an election on a loaded machine fits too. Past it the node
	// runs and checks the CA when it arrives.
	caWaitTimeout = 30 * time.Second
	// caCreateTimeout bounds one attempt of the leader to store the CA.
	caCreateTimeout = 10 * time.Second
)

// Files in the data dir. The node's certificate is kept so that a restart
// serves HTTPS at once, before the registry is back.
const (
	tlsDir       = "tls"
	caCertFile   = "ca.pem"   // the cluster CA certificate (public)
	nodeCertFile = "node.pem" // this node's certificate chain
	nodeKeyFile  = "node.key" // its private key, 0600
)

// CAFingerprintEnv is the environment variable the cmd layer reads a
// pinned cluster CA fingerprint from, besides --ca-fingerprint.
const CAFingerprintEnv = "RBEE_CA_FINGERPRINT"

// tlsState is the node's HTTPS side.
type tlsState struct {
	holder tlsca.Holder

	mu      sync.Mutex
	ca      *tlsca.CA // the registry's CA, opened; nil until known
	caPEM   string    // the record ca was opened from
	caFP    string
	caBad   string // a record that failed to open (logged once)
	userMod [2]time.Time
	ifaceFn func() ([]net.Addr, error) // tests replace net.InterfaceAddrs
}

// loopbackHostPort reports whether a listen address is on loopback only.
func loopbackHostPort(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkTLSConfig validates the HTTP/HTTPS part of a config.
func checkTLSConfig(cfg Config) error {
	if !cfg.InsecureHTTP && !loopbackHostPort(cfg.HTTPAddr) {
		return fmt.Errorf("%w: --http-addr %s is not a loopback address, and API keys and prompts would cross the network unencrypted; serve clients on the LAN with --https-addr (e.g. --https-addr %s) and keep --http-addr on 127.0.0.1, or accept plain HTTP with --insecure-http",
			ErrInsecureHTTP, cfg.HTTPAddr, ExampleHTTPSAddr)
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return errors.New("node: --tls-cert and --tls-key go together")
	}
	if cfg.TLSCertFile != "" && cfg.HTTPSAddr == "" {
		return errors.New("node: --tls-cert serves the HTTPS listener: give --https-addr too")
	}
	if cfg.CAFingerprint != "" {
		if _, err := tlsca.ParseFingerprint(cfg.CAFingerprint); err != nil {
			return fmt.Errorf("--ca-fingerprint: %w", err)
		}
	}
	return nil
}

// startHTTPS binds the HTTPS listener (before gossip: its real address
// goes into the metadata) and loads the certificate it serves first.
func (n *Node) startHTTPS() error {
	if n.cfg.HTTPSAddr == "" {
		return nil
	}
	if n.cfg.TLSCertFile != "" {
		if err := n.loadUserCert(true); err != nil {
			return err
		}
	} else {
		n.loadKeptCert()
	}
	ln, err := net.Listen("tcp", n.cfg.HTTPSAddr)
	if err != nil {
		return fmt.Errorf("https listen %s: %w", n.cfg.HTTPSAddr, err)
	}
	n.httpsLn = ln
	return nil
}

// serveHTTPS serves the API on the HTTPS listener: the same handler,
// bounds and connection context as the HTTP one, over TLS only.
func (n *Node) serveHTTPS(h http.Handler) {
	if n.httpsLn == nil {
		return
	}
	n.httpsSrv = n.newHTTPServer(h)
	ln := tls.NewListener(newLimitListener(n.httpsLn, n.connCounts, false), n.tls.holder.ServerConfig())
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.httpsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("https server", "err", err)
		}
	}()
}

// HTTPSAddr is the address the HTTPS API listens on ("" when off).
func (n *Node) HTTPSAddr() string {
	if n.httpsLn == nil {
		return ""
	}
	return n.httpsLn.Addr().String()
}

// HTTPSURL is the HTTPS API base URL ("" when off). A wildcard listen
// address is named by loopback, which the node's certificate covers.
func (n *Node) HTTPSURL() string {
	if n.httpsLn == nil {
		return ""
	}
	ta := n.httpsLn.Addr().(*net.TCPAddr)
	host := ta.IP.String()
	if ta.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, fmt.Sprint(ta.Port))
}

// Certificate is the certificate the HTTPS listener serves now (nil
// before the node has one).
func (n *Node) Certificate() *tls.Certificate { return n.tls.holder.Get() }

// CAFingerprint is the cluster CA's fingerprint ("sha256:…"), "" while the
// node does not know the CA.
func (n *Node) CAFingerprint() string {
	n.tls.mu.Lock()
	defer n.tls.mu.Unlock()
	return n.tls.caFP
}

// WaitClusterCA waits until the node knows the cluster CA and returns its
// fingerprint.
func (n *Node) WaitClusterCA(ctx context.Context) (string, error) {
	for {
		if fp := n.CAFingerprint(); fp != "" {
			return fp, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-n.stopped:
			return "", ErrClosed
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tlsLoop keeps the CA and the node's certificate current: the leader
// creates the CA when the registry has none; every node opens it, checks
// a pinned fingerprint, and issues, renews or reloads its certificate.
func (n *Node) tlsLoop() {
	defer n.wg.Done()
	events, stop := n.reg.Subscribe()
	defer stop()
	// Full checks keep their own schedule: registry changes in between
	// (a busy cluster has many) do not postpone them.
	nextFull := time.Now()
	for {
		full := !time.Now().Before(nextFull)
		if full {
			nextFull = time.Now().Add(n.cfg.CertCheckInterval)
		}
		n.tlsCheck(full)
		wait := time.Until(nextFull)
		if n.CAFingerprint() == "" {
			wait = min(wait, caPollInterval)
		}
		t := time.NewTimer(wait)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-events:
		case <-t.C:
		}
		t.Stop()
	}
}

// tlsCheck is one pass of tlsLoop; full also looks at the certificate's
// age, the addresses and the user's files.
func (n *Node) tlsCheck(full bool) {
	if full && n.cfg.TLSCertFile != "" && n.httpsLn != nil {
		if err := n.loadUserCert(false); err != nil {
			n.log.Warn("reload --tls-cert/--tls-key (the previous certificate stays)", "err", err)
		}
	}
	rec, ok := n.reg.ClusterCA()
	if !ok {
		if n.IsLeader() && n.cfg.CAFingerprint == "" && !n.cfg.noAutoCA {
			ctx, cancel := context.WithTimeout(n.ctx, caCreateTimeout)
			if _, err := n.ensureClusterCA(ctx); err != nil && n.ctx.Err() == nil {
				n.log.Warn("create the cluster CA", "err", err)
			}
			cancel()
		}
		return
	}
	changed, err := n.learnCA(rec)
	if err != nil {
		return
	}
	if changed || full {
		n.refreshCert()
	}
}

// ensureClusterCA returns the registry's CA, creating it when there is
// none. Two nodes that race both propose; the log keeps the first, the
// second gets a conflict, and both return the same CA.
func (n *Node) ensureClusterCA(ctx context.Context) (*tlsca.CA, error) {
	if rec, ok := n.reg.ClusterCA(); ok {
		return tlsca.OpenCA(rec.CertPEM, rec.SealedKey, n.secret)
	}
	return n.proposeClusterCA(ctx)
}

// proposeClusterCA creates a CA and proposes it; whichever CA the registry
// holds afterwards (this one, or one that won a race) is returned.
func (n *Node) proposeClusterCA(ctx context.Context) (*tlsca.CA, error) {
	now := time.Now().UTC()
	ca, err := tlsca.NewCA(n.cfg.Name, now)
	if err != nil {
		return nil, err
	}
	sealed, err := tlsca.SealKey(ca, n.secret)
	if err != nil {
		return nil, err
	}
	b, err := fsm.Encode(fsm.CreateClusterCA{CA: fsm.ClusterCA{CertPEM: ca.CertPEM(), SealedKey: sealed, Created: now.Truncate(time.Second)}})
	if err != nil {
		return nil, err
	}
	if _, err := n.apply(ctx, b); err != nil && !errors.Is(err, fsm.ErrConflict) {
		return nil, err
	} else if err == nil {
		n.log.Info("created the cluster CA", "fingerprint", ca.Fingerprint())
	}
	n.waitReplica(ctx, func() bool { _, ok := n.reg.ClusterCA(); return ok })
	rec, ok := n.reg.ClusterCA()
	if !ok {
		return nil, errors.New("the cluster CA is not in this node's replica yet")
	}
	return tlsca.OpenCA(rec.CertPEM, rec.SealedKey, n.secret)
}

// learnCA opens the registry's CA record when it is new to this node and
// checks a pinned fingerprint. changed reports a new CA.
func (n *Node) learnCA(rec fsm.ClusterCA) (changed bool, err error) {
	n.tls.mu.Lock()
	if rec.CertPEM == n.tls.caPEM {
		n.tls.mu.Unlock()
		return false, nil
	}
	bad := rec.CertPEM == n.tls.caBad
	n.tls.mu.Unlock()
	if bad {
		return false, ErrCAMismatch
	}
	cert, err := tlsca.ParseCACertPEM([]byte(rec.CertPEM))
	if err != nil {
		n.markBadCA(rec, err)
		return false, err
	}
	fp := tlsca.Fingerprint(cert)
	if n.cfg.CAFingerprint != "" {
		if err := checkPinnedCA(n.cfg.CAFingerprint, fp); err != nil {
			if n.started.Load() {
				n.fail(err, true)
			}
			return false, err
		}
	}
	ca, err := tlsca.OpenCA(rec.CertPEM, rec.SealedKey, n.secret)
	if err != nil {
		n.markBadCA(rec, err)
		return false, err
	}
	n.tls.mu.Lock()
	n.tls.ca, n.tls.caPEM, n.tls.caFP = ca, rec.CertPEM, fp
	n.tls.mu.Unlock()
	n.log.Info("cluster CA", "fingerprint", fp, "not_after", ca.Cert.NotAfter.Format(time.DateOnly))
	dir := filepath.Join(n.cfg.DataDir, tlsDir)
	if err := os.MkdirAll(dir, 0o700); err == nil {
		if err := atomicfile.WriteFile(filepath.Join(dir, caCertFile), []byte(rec.CertPEM), 0o644); err != nil {
			n.log.Warn("keep the CA certificate", "err", err)
		}
	}
	if err := n.writeNodeInfo(); err != nil {
		n.log.Warn("write node.json", "err", err)
	}
	return true, nil
}

func (n *Node) markBadCA(rec fsm.ClusterCA, err error) {
	n.tls.mu.Lock()
	n.tls.caBad = rec.CertPEM
	n.tls.mu.Unlock()
	n.log.Error("the registry's cluster CA cannot be used: this node serves no cluster certificate", "err", err)
}

// checkPinnedCA compares the registry CA's fingerprint with a pinned one.
func checkPinnedCA(pinned, fp string) error {
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

// waitPinnedCA (Start, with --ca-fingerprint) waits for the registry's CA
// and refuses a cluster whose CA is another.
func (n *Node) waitPinnedCA(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, caWaitTimeout)
	defer cancel()
	for {
		if rec, ok := n.reg.ClusterCA(); ok {
			cert, err := tlsca.ParseCACertPEM([]byte(rec.CertPEM))
			if err != nil {
				return fmt.Errorf("%w: the registry's CA does not parse: %v", ErrCAMismatch, err)
			}
			return checkPinnedCA(n.cfg.CAFingerprint, tlsca.Fingerprint(cert))
		}
		select {
		case <-ctx.Done():
			n.log.Warn("the cluster CA has not arrived yet; this node checks --ca-fingerprint when it does")
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// refreshCert issues or renews the served certificate from the cluster CA
// (not with --tls-cert: tlsCheck reloads that one).
func (n *Node) refreshCert() {
	if n.httpsLn == nil || n.cfg.TLSCertFile != "" {
		return
	}
	n.tls.mu.Lock()
	ca := n.tls.ca
	n.tls.mu.Unlock()
	if ca == nil {
		return
	}
	names := n.certNames()
	now := time.Now()
	why := renewReason(n.tls.holder.Get(), ca, names, now)
	if why == "" {
		return
	}
	c, err := ca.Issue(n.cfg.Name, names, now, n.cfg.CertLifetime)
	if err != nil {
		n.log.Error("issue this node's certificate", "err", err)
		return
	}
	n.tls.holder.Set(c)
	n.log.Info("issued this node's certificate", "why", why, "dns", names.DNS, "ips", names.IPs, "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	n.keepCert(c)
}

// renewReason says why a certificate must be replaced, "" if it need not.
func renewReason(cur *tls.Certificate, ca *tlsca.CA, names tlsca.Names, now time.Time) string {
	switch {
	case cur == nil || cur.Leaf == nil:
		return "no certificate yet"
	case cur.Leaf.CheckSignatureFrom(ca.Cert) != nil:
		return "issued by another CA"
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
func (n *Node) certNames() tlsca.Names {
	var names tlsca.Names
	names.DNS = append(names.DNS, n.cfg.Name, "localhost")
	if h, err := os.Hostname(); err == nil && h != "" {
		names.DNS = append(names.DNS, h)
		if short, _, ok := strings.Cut(h, "."); ok {
			names.DNS = append(names.DNS, short)
		}
	}
	names.IPs = append(names.IPs, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	if n.httpsLn != nil {
		if ta, ok := n.httpsLn.Addr().(*net.TCPAddr); ok {
			if ta.IP.IsUnspecified() {
				names.IPs = append(names.IPs, n.interfaceIPs()...)
			} else {
				names.IPs = append(names.IPs, ta.IP)
			}
		}
	}
	for _, a := range n.cfg.AllowedHosts {
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
func (n *Node) interfaceIPs() []net.IP {
	n.tls.mu.Lock()
	fn := n.tls.ifaceFn
	n.tls.mu.Unlock()
	if fn == nil {
		fn = net.InterfaceAddrs
	}
	addrs, err := fn()
	if err != nil {
		n.log.Warn("list interface addresses", "err", err)
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
func (n *Node) keepCert(c *tls.Certificate) {
	chain, key, err := tlsca.EncodeCertificate(c)
	if err == nil {
		dir := filepath.Join(n.cfg.DataDir, tlsDir)
		if err = os.MkdirAll(dir, 0o700); err == nil {
			if err = atomicfile.WriteFile(filepath.Join(dir, nodeKeyFile), key, 0o600); err == nil {
				err = atomicfile.WriteFile(filepath.Join(dir, nodeCertFile), chain, 0o644)
			}
		}
	}
	if err != nil {
		n.log.Warn("keep this node's certificate in the data dir", "err", err)
	}
}

// loadKeptCert serves the certificate kept in the data dir until the
// registry's CA confirms or replaces it; an expired one is left.
func (n *Node) loadKeptCert() {
	dir := filepath.Join(n.cfg.DataDir, tlsDir)
	chain, err1 := os.ReadFile(filepath.Join(dir, nodeCertFile))
	key, err2 := os.ReadFile(filepath.Join(dir, nodeKeyFile))
	if err1 != nil || err2 != nil {
		return
	}
	c, err := tlsca.LoadCertificate(chain, key)
	if err != nil {
		n.log.Warn("the kept certificate does not load; a new one is issued", "err", err)
		return
	}
	if time.Now().Before(c.Leaf.NotAfter) {
		n.tls.holder.Set(c)
	}
}

// loadUserCert loads --tls-cert/--tls-key when they changed (always when
// force).
func (n *Node) loadUserCert(force bool) error {
	var mod [2]time.Time
	for i, p := range []string{n.cfg.TLSCertFile, n.cfg.TLSKeyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		mod[i] = fi.ModTime()
	}
	n.tls.mu.Lock()
	same := n.tls.userMod == mod
	n.tls.mu.Unlock()
	if same && !force {
		return nil
	}
	c, err := tlsca.LoadCertificateFiles(n.cfg.TLSCertFile, n.cfg.TLSKeyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	if time.Now().After(c.Leaf.NotAfter) {
		n.log.Warn("--tls-cert has expired", "not_after", c.Leaf.NotAfter)
	}
	n.tls.holder.Set(c)
	n.tls.mu.Lock()
	n.tls.userMod = mod
	n.tls.mu.Unlock()
	if !force {
		n.log.Info("reloaded --tls-cert/--tls-key", "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// fail stops the node with err (Err reports it): a condition found after
// Start under which the node must not serve, such as a pinned CA that the
// cluster does not have. With leave, the node first leaves the cluster.
func (n *Node) fail(err error, leave bool) {
	n.failMu.Lock()
	first := n.failErr == nil
	if first {
		n.failErr = err
	}
	n.failMu.Unlock()
	if first {
		n.log.Error("node stops", "err", err)
		go func() {
			if leave {
				n.leaveRefused()
			}
			n.shutdown()
		}()
	}
}

// refusedLeaveTimeout bounds leaving a cluster the node refuses.
const refusedLeaveTimeout = 10 * time.Second

// leaveRefused leaves a cluster this node refuses (its CA is not the
// pinned one): the leader may already count the node as a voter, and a
// voter that just vanished would cost a small cluster its quorum. Its
// workers are left alone, and peers.json stays, so a restart with the
// right fingerprint rejoins.
func (n *Node) leaveRefused() {
	ctx, cancel := context.WithTimeout(context.Background(), refusedLeaveTimeout)
	defer cancel()
	if err := n.cons.Leave(ctx); err != nil {
		n.log.Warn("leave the refused cluster (raft)", "err", err)
	}
	if err := n.gsp.Leave(ctx); err != nil {
		n.log.Warn("leave the refused cluster (gossip)", "err", err)
	}
}

// Err is why the node stopped on its own (nil when it did not).
func (n *Node) Err() error {
	n.failMu.Lock()
	defer n.failMu.Unlock()
	return n.failErr
}

// handleCA serves the cluster CA certificate: JSON at /v1/tls/ca, PEM at
// /v1/tls/ca.pem. It is public, like the certificate itself: a client pins
// the fingerprint and fetches the rest.
func (n *Node) handleCA(w http.ResponseWriter, r *http.Request) {
	rec, ok := n.reg.ClusterCA()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, jobs.CodeUnavailable, "the cluster has no CA yet: the leader creates it (is there a leader?)")
		return
	}
	cert, err := tlsca.ParseCACertPEM([]byte(rec.CertPEM))
	if err != nil {
		writeError(w, http.StatusInternalServerError, jobs.CodeInternal, "the registry's CA does not parse")
		return
	}
	if strings.HasSuffix(r.URL.Path, ".pem") {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(bytes.TrimSpace([]byte(rec.CertPEM)))
		_, _ = w.Write([]byte("\n"))
		return
	}
	writeJSON(w, http.StatusOK, api.CAInfo{CertPEM: rec.CertPEM, Fingerprint: tlsca.Fingerprint(cert), NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC()})
}

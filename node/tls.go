package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/internal/loopback"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/certs"
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
)

// CAFingerprintEnv is the environment variable the cmd layer reads a
// pinned cluster CA fingerprint from, besides --ca-fingerprint.
const CAFingerprintEnv = "RBEE_CA_FINGERPRINT"

// checkTLSConfig validates the HTTP/HTTPS part of a config.
func checkTLSConfig(cfg Config) error {
	// Checked first: 127.0.0.1 without a port is no "address off
	// loopback".
	for _, a := range []struct{ flag, addr, example string }{
		{"http-addr", cfg.HTTPAddr, DefaultHTTPAddr},
		{"https-addr", cfg.HTTPSAddr, ExampleHTTPSAddr},
	} {
		if a.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return fmt.Errorf("%w: --%s %s: want HOST:PORT, e.g. %s", ErrBadListenAddr, a.flag, a.addr, a.example)
		}
	}
	if !cfg.InsecureHTTP && !loopback.HostPort(cfg.HTTPAddr) {
		return fmt.Errorf("%w: --http-addr %s is not a loopback address, and API keys and prompts would cross the network unencrypted; serve clients on the LAN with --https-addr (e.g. --https-addr %s) and keep --http-addr on 127.0.0.1, or accept plain HTTP with --insecure-http",
			ErrInsecureHTTP, cfg.HTTPAddr, ExampleHTTPSAddr)
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return errors.New("node: --tls-cert and --tls-key go together")
	}
	if cfg.TLSCertFile != "" && cfg.HTTPSAddr == "" {
		return errors.New("node: --tls-cert serves the HTTPS listener: give --https-addr too")
	}
	for _, o := range cfg.CORSOrigins {
		if err := auth.CheckOrigin(o); err != nil {
			return fmt.Errorf("--cors-origin: %w", err)
		}
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
		if err := n.certs.LoadUser(true); err != nil {
			return err
		}
	} else {
		n.certs.LoadKept()
	}
	ln, err := net.Listen("tcp", n.cfg.HTTPSAddr)
	if err != nil {
		return fmt.Errorf("https listen %s: %w", n.cfg.HTTPSAddr, err)
	}
	n.httpsLn = ln
	n.certs.SetListener(ln.Addr())
	return nil
}

// serveHTTPS serves the API on the HTTPS listener: the same handler,
// bounds and connection context as the HTTP one, over TLS only.
func (n *Node) serveHTTPS(h http.Handler) {
	if n.httpsLn == nil {
		return
	}
	n.httpsSrv = n.newHTTPServer(h)
	ln := tls.NewListener(newLimitListener(n.httpsLn, n.connCounts, false, n.cfg.HTTPStallTimeout), n.certs.ServerConfig())
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
func (n *Node) Certificate() *tls.Certificate { return n.certs.Certificate() }

// CAFingerprint is the cluster CA's fingerprint ("sha256:…"), "" while the
// node does not know the CA.
func (n *Node) CAFingerprint() string { return n.certs.CAFingerprint() }

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
	advertised := n.clusterID() // in the gossip metadata since start
	advertiseWarned := false
	for {
		full := !time.Now().Before(nextFull)
		if full {
			nextFull = time.Now().Add(n.cfg.CertCheckInterval)
		}
		n.certs.Check(n.ctx, full)
		if id := n.clusterID(); id != advertised {
			// Members learn which cluster's registry this node
			// holds: a leader adds no member of another.
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			err := n.gsp.UpdateMeta(ctx, n.localMeta())
			if errors.Is(err, gossip.ErrMetaSpreading) {
				// Set; its broadcast goes on spreading. Another
				// update would only add a broadcast: at 100 nodes,
				// retried on every registry change, they crowded the
				// load reports out of gossip for minutes.
				n.log.Debug("cluster advertised; gossip still spreads it", "err", err)
				err = nil
			}
			if err != nil {
				// Said once (it is retried at each check): without it
				// leaders cannot tell this node's cluster.
				if !advertiseWarned {
					n.log.Warn("cannot advertise this node's cluster in gossip", "err", err)
					advertiseWarned = true
				}
			} else {
				advertised = id
			}
			cancel()
		}
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
			return certs.CheckPinned(n.cfg.CAFingerprint, tlsca.Fingerprint(cert))
		}
		select {
		case <-ctx.Done():
			n.log.Warn("the cluster CA has not arrived yet; this node checks --ca-fingerprint when it does")
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
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

// watchDuplicate stops the node when gossip finds another member running
// with its identity: a copy of this data dir on another machine. It does
// not leave: a leave under the shared id would remove the original.
func (n *Node) watchDuplicate() {
	defer n.wg.Done()
	select {
	case err := <-n.duplicate:
		n.fail(fmt.Errorf("%w: this node's data dir (its node.key) was copied from that machine? Every machine needs a data dir of its own: start this one with a new --data-dir", err), false)
	case <-n.ctx.Done():
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

// certCluster is what the certificate manager reads and writes of this
// node.
type certCluster struct{ n *Node }

func (c certCluster) ClusterCA() (fsm.ClusterCA, bool) { return c.n.reg.ClusterCA() }
func (c certCluster) IsLeader() bool                   { return c.n.IsLeader() }
func (c certCluster) Apply(ctx context.Context, cmd []byte) error {
	_, err := c.n.apply(ctx, cmd)
	return err
}
func (c certCluster) WaitReplica(ctx context.Context, done func() bool) { c.n.waitReplica(ctx, done) }
func (c certCluster) Refuse(err error) {
	if c.n.started.Load() {
		c.n.fail(err, true)
	}
}
func (c certCluster) CAChanged() {
	if err := c.n.writeNodeInfo(); err != nil {
		c.n.log.Warn("write node.json", "err", err)
	}
}

package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/nodetest"
	"github.com/rbee-project/rbee/node/tlsca"
)

// TestListenerConfig: plain HTTP off loopback is refused at New with an
// error naming --https-addr, unless --insecure-http; TLS options are
// checked before anything listens.
func TestListenerConfig(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*node.Config)
		wantErr string // "" = accepted
	}{
		{"loopback", func(c *node.Config) { c.HTTPAddr = "127.0.0.1:7833" }, ""},
		{"localhost", func(c *node.Config) { c.HTTPAddr = "localhost:7833" }, ""},
		{"ipv6 loopback", func(c *node.Config) { c.HTTPAddr = "[::1]:7833" }, ""},
		{"all interfaces", func(c *node.Config) { c.HTTPAddr = "0.0.0.0:7833" }, "--https-addr"},
		{"empty host", func(c *node.Config) { c.HTTPAddr = ":7833" }, "--https-addr"},
		{"ipv6 any", func(c *node.Config) { c.HTTPAddr = "[::]:7833" }, "--https-addr"},
		{"LAN address", func(c *node.Config) { c.HTTPAddr = "192.0.2.1:7833" }, "--insecure-http"},
		{"a name", func(c *node.Config) { c.HTTPAddr = "myhost:7833" }, "--https-addr"},
		{"insecure on purpose", func(c *node.Config) { c.HTTPAddr = "0.0.0.0:7833"; c.InsecureHTTP = true }, ""},
		{"https too", func(c *node.Config) { c.HTTPSAddr = "0.0.0.0:7843" }, ""},
		{"loopback without a port", func(c *node.Config) { c.HTTPAddr = "127.0.0.1" }, "--http-addr 127.0.0.1: want HOST:PORT, e.g. 127.0.0.1:7833"},
		{"localhost without a port", func(c *node.Config) { c.HTTPAddr = "localhost" }, "--http-addr localhost: want HOST:PORT"},
		{"https without a port", func(c *node.Config) { c.HTTPSAddr = "0.0.0.0" }, "--https-addr 0.0.0.0: want HOST:PORT, e.g. 0.0.0.0:7843"},
		{"cert without key", func(c *node.Config) { c.HTTPSAddr = ":7843"; c.TLSCertFile = "c.pem" }, "go together"},
		{"cert without https", func(c *node.Config) { c.TLSCertFile, c.TLSKeyFile = "c.pem", "k.pem" }, "--https-addr"},
		{"bad fingerprint", func(c *node.Config) { c.CAFingerprint = "sha256:abc" }, "fingerprint"},
		{"good fingerprint", func(c *node.Config) { c.CAFingerprint = "sha256:" + strings.Repeat("0a", 32) }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.DataDir = t.TempDir()
			tc.change(&cfg)
			_, err := node.New(cfg)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			if strings.Contains(tc.wantErr, "want HOST:PORT") {
				require.ErrorIs(t, err, node.ErrBadListenAddr)
				return
			}
			if strings.HasPrefix(tc.wantErr, "--") && tc.name != "cert without https" {
				require.ErrorIs(t, err, node.ErrInsecureHTTP)
			}
		})
	}
}

// TestCORSOriginConfig: a --cors-origin must be an origin a browser
// sends; "null" (any website's sandboxed frame) and "*" are refused at New
// with ErrBadCORSOrigin, not taken and then matched literally.
func TestCORSOriginConfig(t *testing.T) {
	tests := []struct {
		origin string
		ok     bool
	}{
		{"http://chat.lan:3000", true},
		{"https://chat.lan", true},
		{"http://chat.lan:3000/", true},
		{"http://[::1]:3000", true},
		{"chrome-extension://abcdefghijklmnopabcdefghijklmnop", true},
		{"moz-extension://0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", true},
		{"null", false},
		{"*", false},
		{"chat.lan:3000", false},
		{"chat.lan", false},
		{"http://chat.lan:3000/app", false},
		{"http://user@chat.lan", false},
		{"http://chat.lan?x=1", false},
		{"http://*.lan", false},
		{"file://", false},
		{"ftp://chat.lan", false},
		{"http://", false},
		{"", false},
	}
	for _, tc := range tests {
		t.Run(tc.origin, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.DataDir = t.TempDir()
			cfg.CORSOrigins = []string{tc.origin}
			_, err := node.New(cfg)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, node.ErrBadCORSOrigin)
			require.ErrorContains(t, err, "--cors-origin")
		})
	}
}

// withHTTPS gives every node of a harness cluster an HTTPS listener on
// loopback with a short certificate life and a fast check.
func withHTTPS(lifetime time.Duration) nodetest.Option {
	return func(i int, cfg *node.Config) {
		cfg.HTTPSAddr = "127.0.0.1:0"
		cfg.CertCheckInterval = 100 * time.Millisecond
		if lifetime > 0 {
			cfg.CertLifetime = lifetime
		}
	}
}

// caPool is a pool with the registry's CA of n.
func caPool(t *testing.T, n *node.Node) *x509.CertPool {
	t.Helper()
	rec, ok := n.Registry().ClusterCA()
	require.True(t, ok, "no cluster CA")
	p, err := tlsca.CertPool([]byte(rec.CertPEM))
	require.NoError(t, err)
	return p
}

// handshake connects to addr with cfg and returns the leaf the server
// presented.
func handshake(t *testing.T, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func waitCert(t *testing.T, n *node.Node) {
	t.Helper()
	require.Eventually(t, func() bool { return n.Certificate() != nil && n.CAFingerprint() != "" }, nodetest.WaitTimeout, 20*time.Millisecond)
}

// TestClusterCACreatedOnce: three nodes race to create the cluster CA;
// the registry keeps one, every creator gets that one back, and every node
// issues itself a certificate from it.
func TestClusterCACreatedOnce(t *testing.T) {
	c := nodetest.New(t, 3, withHTTPS(0), func(i int, cfg *node.Config) { node.WithoutAutoCA(cfg) })
	for _, n := range c.Nodes {
		_, ok := n.Registry().ClusterCA()
		require.False(t, ok, "the leader created a CA although told not to")
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	fps := make([]string, len(c.Nodes))
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), nodetest.WaitTimeout)
			defer cancel()
			fps[i], errs[i] = n.ProposeClusterCA(ctx)
		}()
	}
	close(start)
	wg.Wait()
	for i := range c.Nodes {
		require.NoError(t, errs[i])
		require.Equal(t, fps[0], fps[i], "node %d got another CA", i)
	}
	for _, n := range c.Nodes {
		require.Eventually(t, func() bool { return n.CAFingerprint() == fps[0] && n.Certificate() != nil }, nodetest.WaitTimeout, 20*time.Millisecond)
		rec, _ := n.Registry().ClusterCA()
		cert, err := tlsca.ParseCACertPEM([]byte(rec.CertPEM))
		require.NoError(t, err)
		require.Equal(t, fps[0], tlsca.Fingerprint(cert))
		require.NoError(t, n.Certificate().Leaf.CheckSignatureFrom(cert))
		require.NotContains(t, rec.SealedKey, "PRIVATE KEY")
	}
	// A later creator gets the same CA back.
	ctx, cancel := context.WithTimeout(context.Background(), nodetest.WaitTimeout)
	defer cancel()
	fp, err := c.Nodes[2].ProposeClusterCA(ctx)
	require.NoError(t, err)
	require.Equal(t, fps[0], fp)
}

// TestHTTPSListener: the HTTPS listener serves the same API as the HTTP
// one, with a certificate for the node's names from the cluster CA; the
// node renews it at 2/3 of its life and serves the new one without a
// restart; its address is in gossip and the registry; the join command
// pins the CA; plain HTTP on the HTTPS port gets no API.
func TestHTTPSListener(t *testing.T) {
	const life = 3 * time.Second
	c := nodetest.New(t, 2, withHTTPS(life))
	n0, n1 := c.Nodes[0], c.Nodes[1]
	waitCert(t, n0)
	waitCert(t, n1)
	fp := n0.CAFingerprint()
	require.Equal(t, fp, n1.CAFingerprint())

	// The CA over the API, as JSON and PEM, public.
	st, _, data := apiCall(t, n0, "GET", "/v1/tls/ca", "", "", "", nil)
	require.Equal(t, 200, st)
	var info api.CAInfo
	require.NoError(t, json.Unmarshal(data, &info))
	require.Equal(t, fp, info.Fingerprint)
	require.True(t, info.NotAfter.After(time.Now().Add(9*365*24*time.Hour)))
	st, _, data = apiCall(t, n0, "GET", "/v1/tls/ca.pem", "", "", "", nil)
	require.Equal(t, 200, st)
	caCert, err := tlsca.ParseCACertPEM(data)
	require.NoError(t, err)
	require.Equal(t, fp, tlsca.Fingerprint(caCert))
	require.Equal(t, 200, offLoopback(n0, "192.0.2.50:1", "GET", "/v1/tls/ca.pem", "", ""), "the CA certificate is public")

	// The same API over HTTPS, verified against the CA, and a 202 job.
	hc, err := client.NewHTTPClient(client.TLS{CAPEM: data})
	require.NoError(t, err)
	for _, n := range c.Nodes {
		base := n.HTTPSURL()
		require.True(t, strings.HasPrefix(base, "https://127.0.0.1:"), base)
		resp, err := hc.Get(base + "/v1/models")
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		cl := client.New(base, n.AdminKey())
		cl.HTTP = hc
		var status api.StatusResult
		require.NoError(t, cl.Result(context.Background(), map[string]any{"operation": "status"}, &status, nil))
		require.Equal(t, n.Name(), status.Node)
		// A name the certificate covers works too.
		resp, err = hc.Get(strings.Replace(base, "127.0.0.1", "localhost", 1) + "/health")
		require.NoError(t, err)
		resp.Body.Close()
	}
	leaf := n0.Certificate().Leaf
	require.Contains(t, leaf.DNSNames, n0.Name())
	require.Contains(t, leaf.DNSNames, "localhost")
	require.True(t, leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)))

	// Plain HTTP to the HTTPS port: no API, the server says why.
	resp, err := http.Get("http://" + n0.HTTPSAddr() + "/v1/models")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 400, resp.StatusCode)
	require.Contains(t, string(body), "HTTPS server")

	// Gossip and the registry carry the HTTPS address.
	for _, n := range c.Nodes {
		other := n0
		if n == n0 {
			other = n1
		}
		require.Eventually(t, func() bool {
			rn, ok := n.Registry().Node(other.ID())
			return ok && rn.HTTPSAddr == other.HTTPSAddr()
		}, nodetest.WaitTimeout, 20*time.Millisecond)
	}
	var hl struct {
		Hives []struct {
			Name      string `json:"name"`
			HTTPSAddr string `json:"https_addr"`
		} `json:"hives"`
	}
	run(t, n0, map[string]any{"operation": "hive_list"}, &hl)
	require.Len(t, hl.Hives, 2)
	for _, h := range hl.Hives {
		require.NotEmpty(t, h.HTTPSAddr, h.Name)
	}

	// The join command pins the CA; the data dir keeps the certificates.
	require.Contains(t, n0.JoinCommand(), "--ca-fingerprint "+fp)
	fi, err := os.Stat(filepath.Join(n0.DataDir(), "tls", "node.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	ni, err := node.ReadNodeInfo(n0.DataDir())
	require.NoError(t, err)
	require.Equal(t, fp, ni.CAFingerprint)
	require.Equal(t, n0.HTTPSURL(), ni.HTTPSURL)

	// Renewal: at 2/3 of its life a new certificate is served on new
	// connections, without a restart, while an open connection goes on.
	roots := caPool(t, n0)
	cfg := tlsca.ClientConfig("127.0.0.1", roots, nil)
	first, err := handshake(t, n0.HTTPSAddr(), cfg)
	require.NoError(t, err)
	keep, err := tls.Dial("tcp", n0.HTTPSAddr(), cfg)
	require.NoError(t, err)
	defer keep.Close()
	var second *x509.Certificate
	require.Eventually(t, func() bool {
		second, err = handshake(t, n0.HTTPSAddr(), cfg)
		return err == nil && second.SerialNumber.Cmp(first.SerialNumber) != 0
	}, 4*life, 50*time.Millisecond, "no renewed certificate")
	require.True(t, second.NotAfter.After(first.NotAfter))
	require.False(t, time.Now().Before(tlsca.RenewAt(first).Add(-time.Second)), "renewed before 2/3 of the old certificate's life")
	_, err = fmt.Fprintf(keep, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	got, _ := io.ReadAll(keep)
	require.Contains(t, string(got), "200 OK")
}

// TestCertificateFollowsAddresses: a node listening on every interface
// covers every interface address; when they change it issues a new
// certificate at the next check. Its plain HTTP listener, off loopback on
// purpose, shows the warning in the page's snapshot.
func TestCertificateFollowsAddresses(t *testing.T) {
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.HTTPAddr = "0.0.0.0:0"
		cfg.InsecureHTTP = true
		cfg.HTTPSAddr = "0.0.0.0:0"
		cfg.CertCheckInterval = 100 * time.Millisecond
	})
	n := c.Nodes[0]
	waitCert(t, n)
	require.True(t, n.Snapshot().InsecureHTTP)

	addrs := func(ips ...string) func() ([]net.Addr, error) {
		return func() ([]net.Addr, error) {
			var out []net.Addr
			for _, s := range ips {
				out = append(out, &net.IPNet{IP: net.ParseIP(s), Mask: net.CIDRMask(24, 32)})
			}
			out = append(out, &net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)})
			return out, nil
		}
	}
	_, port, _ := net.SplitHostPort(n.HTTPSAddr())
	cfg := tlsca.ClientConfig("127.0.0.1", caPool(t, n), nil)
	served := func() []string {
		leaf, err := handshake(t, "127.0.0.1:"+port, cfg)
		if err != nil {
			return nil
		}
		var ips []string
		for _, ip := range leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		return ips
	}
	n.SetInterfaceAddrs(addrs("192.0.2.7"))
	require.Eventually(t, func() bool {
		ips := served()
		return len(ips) > 0 && ips[0] == "127.0.0.1" && strings.Contains(strings.Join(ips, " "), "192.0.2.7")
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	require.NotContains(t, served(), "fe80::1", "link-local addresses are left out")
	n.SetInterfaceAddrs(addrs("192.0.2.8"))
	require.Eventually(t, func() bool {
		ips := strings.Join(served(), " ")
		return strings.Contains(ips, "192.0.2.8") && !strings.Contains(ips, "192.0.2.7")
	}, nodetest.WaitTimeout, 50*time.Millisecond)
}

// TestPinnedClusterCA: a node that pins the cluster's CA joins; one that
// pins another CA refuses the cluster (Start fails naming both
// fingerprints) and leaves it again, so the cluster keeps its quorum.
func TestPinnedClusterCA(t *testing.T) {
	c := nodetest.New(t, 1)
	n0 := c.Nodes[0]
	waitCertCA := func(n *node.Node) string {
		fp, err := n.WaitClusterCA(context.Background())
		require.NoError(t, err)
		return fp
	}
	fp := waitCertCA(n0)
	other, err := tlsca.NewCA("other", time.Now())
	require.NoError(t, err)

	joiner := func(name, pin string) node.Config {
		cfg := node.DefaultConfig()
		cfg.Name = name
		cfg.DataDir = filepath.Join(t.TempDir(), name)
		cfg.HTTPAddr, cfg.GossipAddr, cfg.P2PAddr, cfg.BlobAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.Token = nodetest.Token
		cfg.MDNS = false
		cfg.Profile = "local"
		cfg.ReconcileInterval = time.Second
		cfg.Join = []string{n0.GossipAddr()}
		cfg.CAFingerprint = pin
		return cfg
	}
	start := func(cfg node.Config) (*node.Node, error) {
		n, err := node.New(cfg)
		require.NoError(t, err)
		t.Cleanup(func() { n.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 2*nodetest.WaitTimeout)
		defer cancel()
		return n, n.Start(ctx)
	}

	// Pinning the right CA (in openssl's notation): the node joins.
	sum, err := tlsca.ParseFingerprint(fp)
	require.NoError(t, err)
	var colons []string
	for _, b := range sum {
		colons = append(colons, fmt.Sprintf("%02X", b))
	}
	good, err := start(joiner("good", "sha256 Fingerprint="+strings.Join(colons, ":")))
	require.NoError(t, err)
	require.Equal(t, fp, waitCertCA(good))

	// Pinning another CA: refused with both fingerprints named.
	bad, err := start(joiner("stranger", other.Fingerprint()))
	require.ErrorIs(t, err, node.ErrCAMismatch)
	require.ErrorContains(t, err, fp)
	require.ErrorContains(t, err, other.Fingerprint())
	require.Empty(t, bad.CAFingerprint(), "the refused CA was never used")
	select {
	case <-bad.Stopped():
	case <-time.After(nodetest.WaitTimeout):
		t.Fatal("the refusing node did not stop")
	}
	// The cluster still writes: the refused node left again.
	require.Eventually(t, func() bool {
		servers, err := n0.Consensus().Servers()
		if err != nil {
			return false
		}
		for _, s := range servers {
			if s.ID == bad.ID() {
				return false
			}
		}
		return len(servers) == 2
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	createKey(t, n0, "after-refusal", "read")
}

// TestOwnCertificate: --tls-cert/--tls-key serve the user's certificate
// instead of the cluster CA's, and a new one written over the files is
// served without a restart. A client that pins the cluster CA refuses it.
func TestOwnCertificate(t *testing.T) {
	own, err := tlsca.NewCA("my own CA", time.Now())
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func() *big.Int {
		c, err := own.Issue("mine", tlsca.Names{DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, time.Now(), time.Hour)
		require.NoError(t, err)
		chain, key, err := tlsca.EncodeCertificate(c)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(keyFile, key, 0o600))
		require.NoError(t, os.WriteFile(certFile, chain, 0o644))
		return c.Leaf.SerialNumber
	}
	serial := write()
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.HTTPSAddr = "127.0.0.1:0"
		cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
		cfg.CertCheckInterval = 100 * time.Millisecond
	})
	n := c.Nodes[0]
	fp, err := n.WaitClusterCA(context.Background())
	require.NoError(t, err, "the cluster CA exists anyway, for the other nodes")
	ownRoots := x509.NewCertPool()
	ownRoots.AddCert(own.Cert)
	leaf, err := handshake(t, n.HTTPSAddr(), tlsca.ClientConfig("127.0.0.1", ownRoots, nil))
	require.NoError(t, err)
	require.Equal(t, serial, leaf.SerialNumber)

	pin, err := tlsca.ParseFingerprint(fp)
	require.NoError(t, err)
	_, err = handshake(t, n.HTTPSAddr(), tlsca.ClientConfig("127.0.0.1", nil, pin))
	require.ErrorIs(t, err, tlsca.ErrWrongCA)

	// A renewed certificate in the files (a later modification time).
	time.Sleep(20 * time.Millisecond)
	next := write()
	later := time.Now().Add(time.Second)
	require.NoError(t, os.Chtimes(certFile, later, later))
	require.NoError(t, os.Chtimes(keyFile, later, later))
	require.Eventually(t, func() bool {
		leaf, err := handshake(t, n.HTTPSAddr(), tlsca.ClientConfig("127.0.0.1", ownRoots, nil))
		return err == nil && leaf.SerialNumber.Cmp(next) == 0
	}, nodetest.WaitTimeout, 50*time.Millisecond)
}

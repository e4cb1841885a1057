package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/certs"
	"github.com/rbee-project/rbee/node/tlsca"
)

// cluster is a registry with one CA record, as the manager sees it.
type cluster struct {
	mu      sync.Mutex
	rec     *fsm.ClusterCA
	leader  bool
	refused error
	changed int
}

func (c *cluster) ClusterCA() (fsm.ClusterCA, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rec == nil {
		return fsm.ClusterCA{}, false
	}
	return *c.rec, true
}
func (c *cluster) IsLeader() bool { return c.leader }
func (c *cluster) Apply(_ context.Context, b []byte) error {
	cmd, err := fsm.Decode(b)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rec != nil {
		return fsm.ErrConflict
	}
	ca := cmd.(*fsm.CreateClusterCA).CA
	c.rec = &ca
	return nil
}
func (c *cluster) WaitReplica(context.Context, func() bool) {}
func (c *cluster) Refuse(err error)                         { c.refused = err }
func (c *cluster) CAChanged()                               { c.changed++ }

func addrs(ip string) func() ([]net.Addr, error) {
	return func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(24, 32)}}, nil
	}
}

func newManager(c *cluster, dir, pin string) *certs.Manager {
	m := certs.New(certs.Config{Name: "node1", DataDir: dir, Secret: "cluster-secret", CAFingerprint: pin,
		CertLifetime: 24 * time.Hour, Cluster: c})
	m.SetListener(&net.TCPAddr{IP: net.IPv4zero, Port: 8443})
	m.SetInterfaceAddrs(addrs("192.0.2.7"))
	return m
}

// TestCertificateLifecycle: the leader creates the CA, a node issues
// itself a certificate for its names and addresses, reissues it when an
// address changes, keeps it for a restart, and a node pinned to another
// CA refuses the cluster and serves nothing.
func TestCertificateLifecycle(t *testing.T) {
	ctx := context.Background()
	c := &cluster{leader: true}
	dir := t.TempDir()
	m := newManager(c, dir, "")
	m.Check(ctx, true)
	require.NotNil(t, c.rec, "the leader stored a CA")
	m.Check(ctx, false) // the registry event of the write wakes the next pass
	fp := m.CAFingerprint()
	require.NotEmpty(t, fp)
	require.Equal(t, 1, c.changed)
	cert := m.Certificate()
	require.NotNil(t, cert)
	names := tlsca.CertNames(cert.Leaf)
	require.Contains(t, names.DNS, "node1")
	require.Contains(t, names.DNS, "localhost")
	require.True(t, containsIP(names.IPs, "192.0.2.7"), "%v", names.IPs)
	require.True(t, containsIP(names.IPs, "127.0.0.1"))
	_, err := os.Stat(filepath.Join(dir, "tls", "node.pem"))
	require.NoError(t, err, "kept for a restart")

	// Nothing changed: the same certificate.
	m.Check(ctx, true)
	require.Same(t, cert, m.Certificate())
	// Renumbered: a new one for the new address.
	m.SetInterfaceAddrs(addrs("192.0.2.8"))
	m.Check(ctx, true)
	require.NotSame(t, cert, m.Certificate())
	require.True(t, containsIP(tlsca.CertNames(m.Certificate().Leaf).IPs, "192.0.2.8"))

	// A restart serves the kept certificate at once.
	again := newManager(&cluster{}, dir, "")
	again.LoadKept()
	require.NotNil(t, again.Certificate())
	require.Equal(t, m.Certificate().Leaf.SerialNumber, again.Certificate().Leaf.SerialNumber)

	// Pinned to another CA: refused, nothing served, nothing kept.
	other, err := tlsca.NewCA("elsewhere", time.Now())
	require.NoError(t, err)
	pinned := &cluster{rec: c.rec}
	pdir := t.TempDir()
	p := newManager(pinned, pdir, other.Fingerprint())
	p.Check(ctx, true)
	require.ErrorIs(t, pinned.refused, certs.ErrCAMismatch)
	require.Nil(t, p.Certificate())
	require.Empty(t, p.CAFingerprint())
	_, err = os.Stat(filepath.Join(pdir, "tls", "node.pem"))
	require.True(t, os.IsNotExist(err))

	// Pinned to this CA: accepted.
	ok := &cluster{rec: c.rec}
	q := newManager(ok, t.TempDir(), fp)
	q.Check(ctx, true)
	require.NoError(t, ok.refused)
	require.Equal(t, fp, q.CAFingerprint())

	// A wrong secret cannot open the CA's key: no certificate, logged.
	w := certs.New(certs.Config{Name: "node9", DataDir: t.TempDir(), Secret: "another-secret", CertLifetime: time.Hour, Cluster: &cluster{rec: c.rec}})
	w.SetListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443})
	w.Check(ctx, true)
	require.Nil(t, w.Certificate())
}

func containsIP(ips []net.IP, s string) bool {
	for _, ip := range ips {
		if ip.Equal(net.ParseIP(s)) {
			return true
		}
	}
	return false
}

// TestClockWentBack: a node whose clock ran ahead issued itself a
// certificate then (a wrong RTC at boot, corrected since by NTP); once the
// clock is back, that certificate is not valid yet, and clients refuse it
// until the clock gets there. The next full check replaces it, and a
// restart does not serve the kept one.
func TestClockWentBack(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	right := now

	c := &cluster{leader: true}
	dir := t.TempDir()
	newM := func(c *cluster) *certs.Manager {
		m := certs.New(certs.Config{Name: "node1", DataDir: dir, Secret: "cluster-secret",
			CertLifetime: 24 * time.Hour, Cluster: c, Now: clock})
		m.SetListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443})
		return m
	}
	m := newM(c)
	m.Check(ctx, true)
	m.Check(ctx, false)
	require.NotNil(t, m.Certificate())

	set(right.Add(30 * 24 * time.Hour)) // the clock runs a month ahead
	m.Check(ctx, true)
	ahead := m.Certificate()
	require.True(t, ahead.Leaf.NotBefore.After(right.Add(time.Hour)), "issued by the clock ahead")

	set(right) // corrected
	valid := func(cert *tls.Certificate) error {
		ca, ok := c.ClusterCA()
		require.True(t, ok)
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM([]byte(ca.CertPEM)))
		_, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: right, DNSName: "node1"})
		return err
	}
	require.Error(t, valid(ahead), "not valid yet")

	// A restart with the clock right does not serve the kept one.
	again := newM(&cluster{})
	again.LoadKept()
	require.True(t, again.Certificate() == nil, "a kept certificate not valid yet is not served")

	m.Check(ctx, true)
	require.NotSame(t, ahead, m.Certificate(), "replaced")
	require.NoError(t, valid(m.Certificate()))
}

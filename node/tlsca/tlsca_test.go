package tlsca

import (
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const secret = "rbee_tlsca_test_secret_0123456789"

func newCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA("test", time.Now())
	require.NoError(t, err)
	return ca
}

func TestNewCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("home", now)
	require.NoError(t, err)
	c := ca.Cert
	require.True(t, c.IsCA)
	require.True(t, c.BasicConstraintsValid)
	require.True(t, c.MaxPathLenZero, "the CA signs no other CA")
	require.Equal(t, elliptic.P256(), ca.Key.Curve)
	require.Equal(t, x509.ECDSA, c.PublicKeyAlgorithm)
	require.WithinDuration(t, now.Add(CALifetime), c.NotAfter, 2*time.Second)
	require.True(t, c.NotBefore.Before(now))
	require.Contains(t, c.Subject.CommonName, "home")
	parsed, err := ParseCACertPEM([]byte(ca.CertPEM()))
	require.NoError(t, err)
	require.Equal(t, c.Raw, parsed.Raw)
	fp := ca.Fingerprint()
	require.True(t, strings.HasPrefix(fp, "sha256:"))
	require.Len(t, fp, len("sha256:")+64)
}

func TestParseFingerprint(t *testing.T) {
	ca := newCA(t)
	want := sha256.Sum256(ca.Cert.Raw)
	hexFP := strings.TrimPrefix(ca.Fingerprint(), "sha256:")
	var colons []string
	for i := 0; i < len(hexFP); i += 2 {
		colons = append(colons, strings.ToUpper(hexFP[i:i+2]))
	}
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"canonical", ca.Fingerprint(), true},
		{"bare hex", hexFP, true},
		{"upper prefix", "SHA256:" + strings.ToUpper(hexFP), true},
		{"openssl", "sha256 Fingerprint=" + strings.Join(colons, ":"), true},
		{"spaces", "  " + ca.Fingerprint() + "\n", true},
		{"short", "sha256:abcd", false},
		{"not hex", "sha256:" + strings.Repeat("zz", 32), false},
		{"sha1 length", "sha256:" + strings.Repeat("ab", 20), false},
		{"empty", "", false},
		{"huge", strings.Repeat("a", 1000), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFingerprint(tc.in)
			if !tc.ok {
				require.ErrorIs(t, err, ErrBadFingerprint)
				return
			}
			require.NoError(t, err)
			require.Equal(t, want[:], got)
			require.Equal(t, ca.Fingerprint(), FormatFingerprint(got))
		})
	}
}

// TestSealRoundTrip: the sealed key opens with the cluster secret and
// gives the same key; another secret, another certificate or a changed
// byte do not open it.
func TestSealRoundTrip(t *testing.T) {
	ca := newCA(t)
	sealed, err := SealKey(ca, secret)
	require.NoError(t, err)
	require.NotContains(t, sealed, base64.StdEncoding.EncodeToString(ca.Key.D.Bytes()))
	opened, err := OpenCA(ca.CertPEM(), sealed, secret)
	require.NoError(t, err)
	require.True(t, opened.Key.Equal(ca.Key))
	require.Equal(t, ca.Cert.Raw, opened.Cert.Raw)

	again, err := SealKey(ca, secret)
	require.NoError(t, err)
	require.NotEqual(t, sealed, again, "a fresh nonce every time")

	other := newCA(t)
	raw, _ := base64.StdEncoding.DecodeString(sealed)
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name, cert, sealed, secret string
	}{
		{"wrong secret", ca.CertPEM(), sealed, "rbee_another_clusters_secret"},
		{"other certificate", other.CertPEM(), sealed, secret},
		{"changed byte", ca.CertPEM(), base64.StdEncoding.EncodeToString(flipped), secret},
		{"not base64", ca.CertPEM(), "!!", secret},
		{"too short", ca.CertPEM(), base64.StdEncoding.EncodeToString(raw[:28]), secret},
		{"empty", ca.CertPEM(), "", secret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenCA(tc.cert, tc.sealed, tc.secret)
			require.ErrorIs(t, err, ErrSealed)
		})
	}
	_, err = OpenCA("not pem", sealed, secret)
	require.ErrorIs(t, err, ErrBadPEM)
}

// TestIssueNames: a node certificate carries exactly the normalized names,
// verifies for each of them against the CA, and for nothing else.
func TestIssueNames(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	names := Names{
		DNS: []string{"Hive-1", "localhost", "hive-1.", "bad name", "", "gpu.lan", "10.0.0.9"},
		IPs: []net.IP{net.ParseIP("10.0.0.9"), net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.9").To16(), net.IPv4zero},
	}
	c, err := ca.Issue("hive-1", names, now, 90*24*time.Hour)
	require.NoError(t, err)
	leaf := c.Leaf
	require.Equal(t, []string{"gpu.lan", "hive-1", "localhost"}, leaf.DNSNames)
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	require.Equal(t, []string{"10.0.0.9", "127.0.0.1", "::1"}, ips)
	require.Equal(t, CertNames(leaf), names.Normalize())
	require.True(t, names.Normalize().Equal(CertNames(leaf)))
	require.False(t, leaf.IsCA)
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, leaf.ExtKeyUsage)
	require.Len(t, c.Certificate, 2, "leaf and CA")
	require.Equal(t, ca.Cert.Raw, c.Certificate[1])
	require.WithinDuration(t, now.Add(90*24*time.Hour), leaf.NotAfter, 2*time.Second)
	require.True(t, leaf.NotBefore.Before(now.Add(-4*time.Minute)), "backdated for clock skew")
	renew := RenewAt(leaf)
	require.True(t, renew.After(now.Add(59*24*time.Hour)) && renew.Before(now.Add(61*24*time.Hour)), "renew at 2/3: %v", renew)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, name := range []string{"hive-1", "gpu.lan", "localhost", "10.0.0.9", "127.0.0.1", "::1"} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		require.NoError(t, err, name)
	}
	for _, name := range []string{"evil.lan", "10.0.0.10", "hive-2"} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name})
		require.Error(t, err, name)
	}
	// A certificate never outlives its CA; a short one is backdated less.
	c, err = ca.Issue("x", Names{DNS: []string{"x"}}, now, 20*365*24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, ca.Cert.NotAfter, c.Leaf.NotAfter)
	c, err = ca.Issue("x", Names{DNS: []string{"x"}}, now, 10*time.Second)
	require.NoError(t, err)
	require.True(t, c.Leaf.NotBefore.After(now.Add(-2*time.Second)))
	_, err = ca.Issue("x", Names{DNS: []string{"bad name"}}, now, time.Hour)
	require.Error(t, err, "no valid name")

	// The chain and key survive the data dir's PEM files.
	chain, key, err := EncodeCertificate(c)
	require.NoError(t, err)
	back, err := LoadCertificate(chain, key)
	require.NoError(t, err)
	require.Equal(t, c.Certificate, back.Certificate)
	require.Equal(t, c.Leaf.SerialNumber, back.Leaf.SerialNumber)
	_, err = LoadCertificate(chain, []byte("junk"))
	require.ErrorIs(t, err, ErrBadPEM)
}

// tlsServer serves the holder's certificate on a loopback port: each
// connection is handshaken and then closed by the client.
func tlsServer(t *testing.T, h *Holder) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", h.ServerConfig())
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// TestHolderSwap: a listener serves whatever certificate the holder has
// for each new handshake, without a restart; open connections keep theirs.
func TestHolderSwap(t *testing.T) {
	ca := newCA(t)
	var h Holder
	addr := tlsServer(t, &h)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	cfg := ClientConfig("127.0.0.1", roots, nil)

	_, err := dial(addr, cfg)
	require.Error(t, err, "no certificate yet")

	names := Names{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
	a, err := ca.Issue("a", names, time.Now(), time.Hour)
	require.NoError(t, err)
	h.Set(a)
	ca1, err := dial(addr, cfg)
	require.NoError(t, err)
	defer ca1.Close()
	require.Equal(t, a.Leaf.SerialNumber, ca1.ConnectionState().PeerCertificates[0].SerialNumber)

	b, err := ca.Issue("b", names, time.Now(), time.Hour)
	require.NoError(t, err)
	h.Set(b)
	cb, err := dial(addr, cfg)
	require.NoError(t, err)
	defer cb.Close()
	require.Equal(t, b.Leaf.SerialNumber, cb.ConnectionState().PeerCertificates[0].SerialNumber)
	require.Equal(t, a.Leaf.SerialNumber, ca1.ConnectionState().PeerCertificates[0].SerialNumber)
}

// TestClientVerification: a client that pins the CA's fingerprint accepts
// the node's chain for the node's name and refuses another CA's chain, a
// wrong name and an expired certificate; a CA file works the same way.
func TestClientVerification(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	names := Names{DNS: []string{"hive"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
	good, err := ca.Issue("hive", names, time.Now(), time.Hour)
	require.NoError(t, err)
	foreign, err := other.Issue("hive", names, time.Now(), time.Hour)
	require.NoError(t, err)
	var h Holder
	h.Set(good)
	addr := tlsServer(t, &h)
	var hf Holder
	hf.Set(foreign)
	foreignAddr := tlsServer(t, &hf)

	pin := sha256.Sum256(ca.Cert.Raw)
	rootsOf := func(c *CA) *x509.CertPool {
		p, err := CertPool([]byte(c.CertPEM()))
		require.NoError(t, err)
		return p
	}
	tests := []struct {
		name    string
		addr    string
		cfg     *tls.Config
		wantErr error // nil: connects; errAny: any error
	}{
		{"pinned CA", addr, ClientConfig("127.0.0.1", nil, pin[:]), nil},
		{"pinned CA and CA file", addr, ClientConfig("127.0.0.1", rootsOf(ca), pin[:]), nil},
		{"CA file", addr, ClientConfig("127.0.0.1", rootsOf(ca), nil), nil},
		{"another CA's chain", foreignAddr, ClientConfig("127.0.0.1", nil, pin[:]), ErrWrongCA},
		{"pinned CA, wrong name", addr, ClientConfig("10.9.9.9", nil, pin[:]), errAny},
		{"another CA's file", addr, ClientConfig("127.0.0.1", rootsOf(other), nil), errAny},
		{"pin and a file of another CA", addr, ClientConfig("127.0.0.1", rootsOf(other), pin[:]), errAny},
		{"system roots", addr, ClientConfig("127.0.0.1", nil, nil), errAny},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(tc.addr, tc.cfg)
			if tc.wantErr == nil {
				require.NoError(t, err)
				c.Close()
				return
			}
			require.Error(t, err)
			if tc.wantErr != errAny {
				require.ErrorIs(t, err, tc.wantErr)
			}
		})
	}
	chain := []*x509.Certificate{good.Leaf, ca.Cert}
	require.NoError(t, VerifyPinned(chain, "hive", nil, pin[:], time.Now()))
	require.Error(t, VerifyPinned(chain, "hive", nil, pin[:], time.Now().Add(2*time.Hour)), "expired")
	require.ErrorIs(t, VerifyPinned(chain[:1], "hive", nil, pin[:], time.Now()), ErrWrongCA, "a chain without its CA")
	require.ErrorIs(t, VerifyPinned(nil, "hive", nil, pin[:], time.Now()), ErrWrongCA)
	// A leaf whose own hash is the pin is no CA.
	leafPin := sha256.Sum256(good.Leaf.Raw)
	require.ErrorIs(t, VerifyPinned(chain, "hive", nil, leafPin[:], time.Now()), ErrWrongCA)
}

var errAny = errors.New("any error")

func TestParseChainPEM(t *testing.T) {
	ca := newCA(t)
	c, err := ca.Issue("n", Names{DNS: []string{"n"}}, time.Now(), time.Hour)
	require.NoError(t, err)
	chain, key, err := EncodeCertificate(c)
	require.NoError(t, err)
	certs, err := ParseChainPEM(chain)
	require.NoError(t, err)
	require.Len(t, certs, 2)
	for _, bad := range [][]byte{nil, []byte("   "), key, append(chain, "junk"...), []byte(strings.Repeat(string(chain), 5)), make([]byte, MaxPEMSize+1)} {
		_, err := ParseChainPEM(bad)
		require.ErrorIs(t, err, ErrBadPEM)
	}
	_, err = ParseCACertPEM(chain)
	require.ErrorIs(t, err, ErrBadPEM, "two certificates")
	_, err = ParseCACertPEM(chain[:len(chain)/2+len(chain)/4])
	require.Error(t, err)
	leafPEM := EncodeCertPEM(c.Leaf)
	_, err = ParseCACertPEM(leafPEM)
	require.ErrorIs(t, err, ErrNotCA)
}

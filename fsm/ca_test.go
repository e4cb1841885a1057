package fsm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testCertPEM makes a self-signed certificate, a CA or not. The registry
// checks only its shape; node/tlsca makes the real ones.
func testCertPEM(t testing.TB, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: t0, NotAfter: t0.Add(time.Hour),
		BasicConstraintsValid: true, IsCA: isCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// testSealedKey is base64 of bytes shaped like a sealed key.
var testSealedKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 12+16+121))

func testCA(t testing.TB) ClusterCA {
	return ClusterCA{CertPEM: testCertPEM(t, true), SealedKey: testSealedKey, Created: t0}
}

func caJSON(t testing.TB) string {
	b, err := json.Marshal(testCA(t))
	require.NoError(t, err)
	return string(b)
}

// TestClusterCA: the CA is created once (a racing second create is a
// conflict that changes nothing), survives a snapshot round trip, and
// malformed records are refused before they reach the log.
func TestClusterCA(t *testing.T) {
	f := New(nil)
	_, ok := f.ClusterCA()
	require.False(t, ok)
	first, second := testCA(t), testCA(t)
	ch, cancel := f.Subscribe()
	defer cancel()
	applyAll(t, f, CreateClusterCA{CA: first})
	require.Equal(t, Event{Index: 1, Type: TypeCreateClusterCA, Key: "cluster_ca"}, <-ch)
	before := f.State()
	_, err := f.ApplyCommand(2, enc(t, CreateClusterCA{CA: second}))
	require.ErrorIs(t, err, ErrConflict)
	require.Same(t, before, f.State())
	got, ok := f.ClusterCA()
	require.True(t, ok)
	require.Equal(t, first, got)

	var buf bytes.Buffer
	require.NoError(t, WriteSnapshot(&buf, f.State()))
	require.Equal(t, byte(3), buf.Bytes()[4])
	st, err := ReadSnapshot(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	got, ok = st.ClusterCA()
	require.True(t, ok)
	require.Equal(t, first, got)

	// Version 2 snapshots (no CA) still restore.
	st, err = ReadSnapshot(strings.NewReader("RBEE\x02" + `{"index":3,"api_keys":[]}`))
	require.NoError(t, err)
	_, ok = st.ClusterCA()
	require.False(t, ok)

	good := testCA(t)
	tests := []struct {
		name   string
		change func(*ClusterCA)
	}{
		{"empty certificate", func(c *ClusterCA) { c.CertPEM = "" }},
		{"not PEM", func(c *ClusterCA) { c.CertPEM = "MIIB" }},
		{"wrong block type", func(c *ClusterCA) { c.CertPEM = strings.ReplaceAll(c.CertPEM, "CERTIFICATE", "PRIVATE KEY") }},
		{"two certificates", func(c *ClusterCA) { c.CertPEM += c.CertPEM }},
		{"trailing junk", func(c *ClusterCA) { c.CertPEM += "junk" }},
		{"not a CA", func(c *ClusterCA) { c.CertPEM = testCertPEM(t, false) }},
		{"garbage DER", func(c *ClusterCA) {
			c.CertPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not der")}))
		}},
		{"huge certificate", func(c *ClusterCA) { c.CertPEM += strings.Repeat(" ", maxCACertPEM) }},
		{"no sealed key", func(c *ClusterCA) { c.SealedKey = "" }},
		{"sealed key not base64", func(c *ClusterCA) { c.SealedKey = "!!!" }},
		{"sealed key too short", func(c *ClusterCA) { c.SealedKey = base64.StdEncoding.EncodeToString(make([]byte, 28)) }},
		{"sealed key too long", func(c *ClusterCA) { c.SealedKey = strings.Repeat("A", maxCASealedKey+4) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ca := good
			tc.change(&ca)
			_, err := Encode(CreateClusterCA{CA: ca})
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
}

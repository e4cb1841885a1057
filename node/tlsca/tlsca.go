// Package tlsca is the certificate authority of rbee's HTTPS API.
//
// A cluster has one CA (ECDSA P-256, ten years). Its certificate is public;
// its private key travels in the replicated registry sealed with AES-256-GCM
// under a key derived from the cluster secret (SealKey, OpenCA), so every
// node can issue itself a certificate (CA.Issue) and no file is copied
// between machines. A Holder keeps the certificate a listener serves and
// swaps it without a restart. Clients trust the CA from its PEM file, or
// pin its fingerprint (ClientConfig), which lets a user bootstrap trust from
// one line printed by the first node.
//
// The package has no state besides what its values hold; it reads no files
// but those a caller names.
package tlsca

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rbee-project/rbee/internal/humanize"
)

// Errors, wrapped with details by the functions that return them.
var (
	// ErrBadPEM: the bytes are not the PEM blocks expected.
	ErrBadPEM = errors.New("tlsca: malformed PEM")
	// ErrNotCA: a CA certificate was expected.
	ErrNotCA = errors.New("tlsca: not a CA certificate")
	// ErrSealed: the sealed CA key does not open with this cluster secret
	// (another cluster's CA, or a corrupt record).
	ErrSealed = errors.New("tlsca: the CA key does not open with this cluster secret")
	// ErrBadFingerprint: a CA fingerprint is not "sha256:" and 64 hex digits.
	ErrBadFingerprint = errors.New("tlsca: malformed CA fingerprint")
	// ErrWrongCA: a certificate chain is not from the CA the client pinned.
	ErrWrongCA = errors.New("tlsca: certificate from another CA")
	// ErrNoCertificate: the holder has no certificate to serve yet.
	ErrNoCertificate = errors.New("tlsca: no certificate yet")
)

const (
	// CALifetime is ten years: longer than a homelab's hardware lives, so
	// a cluster never has to rotate its CA, while a lost cluster's CA
	// still expires some day.
	CALifetime = 10 * 365 * 24 * time.Hour
	// DefaultCertLifetime is 90 days, as ACME certificates: a leaked node
	// key ages out within a season, and a node that was off for weeks
	// comes back with a certificate that is still valid.
	DefaultCertLifetime = 90 * 24 * time.Hour
	// maxBackdate is how far NotBefore lies before the issue time, for
	// clients whose clocks run a few minutes behind.
	maxBackdate = 5 * time.Minute
	// sealInfo labels the HKDF derivation of the CA key's sealing key from
	// the cluster secret; gossip, libp2p and the admin key use other
	// labels, so no two of them share a key.
	sealInfo = "rbee cluster ca key v1"
	// sealAAD binds a sealed key to its certificate (followed by the
	// certificate's sha256): a sealed key moved to another record does
	// not open.
	sealAAD = "rbee-ca-key-v1\n"
	// gcmNonceSize and gcmTagSize frame a sealed key.
	gcmNonceSize = 12
	gcmTagSize   = 16
	// MaxPEMSize bounds a PEM file or record this package parses: a chain
	// of a few certificates and a key is a few KiB.
	MaxPEMSize = 64 << 10
	// maxChain bounds the certificates of one chain.
	maxChain = 8
	// FingerprintPrefix starts a CA fingerprint.
	FingerprintPrefix = "sha256:"
)

// CA is an opened certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a CA named after the cluster (the name only labels the
// certificate), valid from now for CALifetime.
func NewCA(name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	cn := "rbee cluster CA"
	if name != "" {
		cn += " " + name
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: humanize.Clip(cn, 64), Organization: []string{"rbee"}},
		NotBefore:             now.Add(-maxBackdate),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs node certificates only, never another CA.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertPEM is the CA certificate as PEM.
func (ca *CA) CertPEM() string { return string(EncodeCertPEM(ca.Cert)) }

// Fingerprint is the CA certificate's fingerprint.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Fingerprint is "sha256:" and the lower-case hex sha256 of a
// certificate's DER bytes: what `openssl x509 -fingerprint -sha256` prints,
// without the colons.
func Fingerprint(cert *x509.Certificate) string {
	s := sha256.Sum256(cert.Raw)
	return FingerprintPrefix + hex.EncodeToString(s[:])
}

// ParseFingerprint reads a CA fingerprint: 64 hex digits, optionally
// after "sha256:" (any case), optionally with colons between byte pairs as
// openssl prints them. It returns the sha256.
func ParseFingerprint(s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	if len(t) > 200 {
		return nil, fmt.Errorf("%w: too long", ErrBadFingerprint)
	}
	if i := strings.IndexByte(t, '='); i >= 0 && strings.HasPrefix(strings.ToLower(t), "sha256 fingerprint=") {
		t = t[i+1:]
	}
	if strings.HasPrefix(strings.ToLower(t), FingerprintPrefix) {
		t = t[len(FingerprintPrefix):]
	}
	t = strings.ReplaceAll(t, ":", "")
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%w: want sha256: and 64 hex digits (rbee tls ca -o json prints it)", ErrBadFingerprint)
	}
	return b, nil
}

// FormatFingerprint is the canonical form of a parsed fingerprint.
func FormatFingerprint(sum []byte) string { return FingerprintPrefix + hex.EncodeToString(sum) }

// sealKey derives the key that seals the CA key from the cluster secret.
func sealKey(secret string) []byte {
	k, err := hkdf.Key(sha256.New, []byte(secret), nil, sealInfo, 32)
	if err != nil {
		panic("tlsca: hkdf: " + err.Error()) // only for lengths hkdf cannot give
	}
	return k
}

func sealAEAD(secret string) cipher.AEAD {
	block, err := aes.NewCipher(sealKey(secret))
	if err != nil {
		panic("tlsca: aes: " + err.Error()) // a 32-byte key always works
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("tlsca: gcm: " + err.Error())
	}
	return aead
}

func sealAdditionalData(cert *x509.Certificate) []byte {
	s := sha256.Sum256(cert.Raw)
	return append([]byte(sealAAD), s[:]...)
}

// SealKey seals the CA's private key under the cluster secret: the
// standard base64 of a random 12-byte nonce and the AES-256-GCM ciphertext
// of its PKCS #8 DER, authenticated together with the certificate's
// sha256.
func SealKey(ca *CA, secret string) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, gcmNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := sealAEAD(secret).Seal(nonce, nonce, der, sealAdditionalData(ca.Cert))
	return base64.StdEncoding.EncodeToString(out), nil
}

// OpenCA parses a CA record: the certificate PEM and the sealed key. It
// fails with ErrSealed when the key does not open with secret, and checks
// that the key belongs to the certificate.
func OpenCA(certPEM, sealed, secret string) (*CA, error) {
	cert, err := ParseCACertPEM([]byte(certPEM))
	if err != nil {
		return nil, err
	}
	if len(sealed) > MaxPEMSize {
		return nil, fmt.Errorf("%w: sealed key too long", ErrSealed)
	}
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(raw) <= gcmNonceSize+gcmTagSize {
		return nil, fmt.Errorf("%w: not base64 of a nonce, a key and a tag", ErrSealed)
	}
	der, err := sealAEAD(secret).Open(nil, raw[:gcmNonceSize], raw[gcmNonceSize:], sealAdditionalData(cert))
	if err != nil {
		return nil, ErrSealed
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: sealed key: %v", ErrSealed, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: the CA key is a %T, not ECDSA", ErrSealed, k)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%w: the key does not belong to the CA certificate", ErrSealed)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// EncodeCertPEM encodes one certificate as PEM.
func EncodeCertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// ParseChainPEM parses one or more PEM CERTIFICATE blocks (white space
// between and around them, nothing else), at most 8 and MaxPEMSize bytes.
func ParseChainPEM(b []byte) ([]*x509.Certificate, error) {
	if len(b) > MaxPEMSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrBadPEM, MaxPEMSize)
	}
	var out []*x509.Certificate
	rest := b
	for len(bytes.TrimSpace(rest)) > 0 {
		blk, r := pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("%w: data that is not a PEM block", ErrBadPEM)
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: a %q block where a CERTIFICATE was expected", ErrBadPEM, humanize.Clip(blk.Type, 40))
		}
		if len(out) == maxChain {
			return nil, fmt.Errorf("%w: more than %d certificates", ErrBadPEM, maxChain)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrBadPEM, len(out)+1, err)
		}
		out = append(out, cert)
		rest = r
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block", ErrBadPEM)
	}
	return out, nil
}

// ParseCACertPEM parses exactly one PEM certificate that is a CA.
func ParseCACertPEM(b []byte) (*x509.Certificate, error) {
	certs, err := ParseChainPEM(b)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%w: %d certificates where one CA was expected", ErrBadPEM, len(certs))
	}
	if !certs[0].BasicConstraintsValid || !certs[0].IsCA {
		return nil, ErrNotCA
	}
	return certs[0], nil
}

// CertPool makes a pool of the certificates in a PEM file's bytes (the
// --ca file of a client).
func CertPool(b []byte) (*x509.CertPool, error) {
	certs, err := ParseChainPEM(b)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// Names are the subject alternative names of a node certificate.
type Names struct {
	DNS []string
	IPs []net.IP
}

// Normalize returns the names sorted, without duplicates, DNS names lower
// case and without a trailing dot, invalid DNS names dropped, IPv4 in
// 4-byte form.
func (n Names) Normalize() Names {
	var out Names
	for _, d := range n.DNS {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if ValidDNSName(d) && !slices.Contains(out.DNS, d) {
			out.DNS = append(out.DNS, d)
		}
	}
	slices.Sort(out.DNS)
	for _, ip := range n.IPs {
		if ip == nil || ip.IsUnspecified() {
			continue
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !slices.ContainsFunc(out.IPs, ip.Equal) {
			out.IPs = append(out.IPs, ip)
		}
	}
	slices.SortFunc(out.IPs, func(a, b net.IP) int { // IPv4 first
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return bytes.Compare(a, b)
	})
	return out
}

// Equal reports whether two normalized name sets are the same.
func (n Names) Equal(o Names) bool {
	return slices.Equal(n.DNS, o.DNS) && slices.EqualFunc(n.IPs, o.IPs, net.IP.Equal)
}

// CertNames are a certificate's alternative names, normalized.
func CertNames(cert *x509.Certificate) Names {
	return Names{DNS: cert.DNSNames, IPs: cert.IPAddresses}.Normalize()
}

// ValidDNSName reports whether s can be a DNS name of a certificate:
// labels of letters, digits and hyphens (an underscore is tolerated, as
// some LAN names carry one), at most 253 bytes.
func ValidDNSName(s string) bool {
	if s == "" || len(s) > 253 || net.ParseIP(s) != nil {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// Issue makes a server certificate for names, valid from now for lifetime
// (never past the CA's own end), with a new P-256 key. The result's chain
// is the certificate and the CA's, so a client that pins the CA's
// fingerprint finds it in the handshake.
func (ca *CA) Issue(commonName string, names Names, now time.Time, lifetime time.Duration) (*tls.Certificate, error) {
	names = names.Normalize()
	if len(names.DNS) == 0 && len(names.IPs) == 0 {
		return nil, errors.New("tlsca: a certificate needs at least one name or address")
	}
	if lifetime <= 0 {
		lifetime = DefaultCertLifetime
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: humanize.Clip(commonName, 64), Organization: []string{"rbee"}},
		NotBefore:             now.Add(-min(maxBackdate, lifetime/10)),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names.DNS,
		IPAddresses:           names.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// RenewAt is when a certificate should be replaced: at two thirds of its
// life, which leaves a third (a month of a 90-day certificate) for a node
// that is off or cut from its cluster to come back before it expires.
func RenewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3)
}

// EncodeCertificate writes a certificate's chain and key as PEM (for the
// data dir; the key file must be written 0600).
func EncodeCertificate(c *tls.Certificate) (chainPEM, keyPEM []byte, err error) {
	for _, der := range c.Certificate {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return chainPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadCertificate parses a PEM chain and its key into a certificate with
// Leaf set; the chain must start with the key's certificate.
func LoadCertificate(chainPEM, keyPEM []byte) (*tls.Certificate, error) {
	if _, err := ParseChainPEM(chainPEM); err != nil {
		return nil, err
	}
	if len(keyPEM) > MaxPEMSize {
		return nil, fmt.Errorf("%w: key over %d bytes", ErrBadPEM, MaxPEMSize)
	}
	c, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPEM, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadPEM, err)
		}
	}
	return &c, nil
}

// LoadCertificateFiles reads a certificate chain and key from PEM files
// (a user's own certificate, --tls-cert and --tls-key).
func LoadCertificateFiles(certFile, keyFile string) (*tls.Certificate, error) {
	chain, err := ReadPEMFile(certFile)
	if err != nil {
		return nil, err
	}
	key, err := ReadPEMFile(keyFile)
	if err != nil {
		return nil, err
	}
	c, err := LoadCertificate(chain, key)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	return c, nil
}

// ReadPEMFile reads a PEM file of at most MaxPEMSize bytes: it stops
// there, so a path that never ends (a device, a pipe, a wrong file) is an
// error, not a read without end. Errors past the size wrap ErrBadPEM.
func ReadPEMFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPEMSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPEMSize {
		return nil, fmt.Errorf("%s: %w: over %d bytes", path, ErrBadPEM, MaxPEMSize)
	}
	return b, nil
}

// Holder keeps the certificate a TLS listener serves. Set swaps it for the
// next handshakes; connections already open keep theirs. The zero Holder
// is ready and serves nothing until Set.
type Holder struct {
	cur atomic.Pointer[tls.Certificate]
}

// Set makes c the certificate served from now on.
func (h *Holder) Set(c *tls.Certificate) { h.cur.Store(c) }

// Get returns the certificate served now, nil before the first Set.
func (h *Holder) Get() *tls.Certificate { return h.cur.Load() }

// GetCertificate is tls.Config.GetCertificate.
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := h.cur.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// ServerConfig is the TLS configuration of a listener that serves the
// holder's certificate: TLS 1.2 or newer, HTTP/1.1 (the API's body and
// idle bounds are per connection).
func (h *Holder) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: h.GetCertificate, NextProtos: []string{"http/1.1"}}
}

// ClientConfig is a client's TLS configuration for a server named
// serverName (a host name or an IP address). roots, when not nil, replace
// the system's roots (a --ca file). pin, when not nil, is a CA's sha256:
// the server's chain must contain that CA and verify up to it, for
// serverName (and also against roots when given).
func ClientConfig(serverName string, roots *x509.CertPool, pin []byte) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, RootCAs: roots}
	if pin == nil {
		return cfg
	}
	// The built-in verification needs the CA in advance; with a pin the
	// CA comes in the handshake. VerifyConnection below does the whole
	// verification instead (chain, name, time, key usage), so nothing is
	// skipped.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return VerifyPinned(cs.PeerCertificates, serverName, roots, pin, time.Now())
	}
	return cfg
}

// VerifyPinned verifies a server's chain (leaf first) for serverName: it
// must contain the CA whose sha256 is pin and verify up to it at now (and
// also up to roots when not nil). An error wraps ErrWrongCA when the chain
// has no such CA.
func VerifyPinned(chain []*x509.Certificate, serverName string, roots *x509.CertPool, pin []byte, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: the server sent no certificate", ErrWrongCA)
	}
	var ca *x509.Certificate
	for _, c := range chain {
		if s := sha256.Sum256(c.Raw); bytes.Equal(s[:], pin) && c.IsCA {
			ca = c
			break
		}
	}
	if ca == nil {
		issuer := chain[0].Issuer.CommonName
		if len(chain) > 1 {
			issuer += " " + Fingerprint(chain[len(chain)-1])
		}
		return fmt.Errorf("%w: the node's certificate is not from the pinned CA %s (it comes from %q); check --ca-fingerprint, or that you reach the node you mean",
			ErrWrongCA, FormatFingerprint(pin), humanize.Clip(issuer, 200))
	}
	pinned := x509.NewCertPool()
	pinned.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c != ca {
			inter.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{Roots: pinned, Intermediates: inter, DNSName: serverName, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := chain[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: chain, Err: err}
	}
	if roots != nil {
		opts.Roots = roots
		if _, err := chain[0].Verify(opts); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: chain, Err: err}
		}
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits: unique without coordination between nodes.
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// Package pinnedtls is TLS between two rbee processes that trust each
// other through something else (an authenticated libp2p stream, a node's
// API): the server makes a self-signed certificate for its process, the
// client learns its sha256 over that other channel and accepts exactly
// that certificate. Names and dates in the certificate do not matter.
package pinnedtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"time"
)

// ErrMismatch: the server's certificate is not the pinned one.
var ErrMismatch = errors.New("pinnedtls: the certificate is not the pinned one")

// SelfSigned makes a server certificate (ECDSA P-256, valid ten years,
// named name) and its fingerprint: the hex sha256 of its DER.
func SelfSigned(name string) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	fp := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, hex.EncodeToString(fp[:]), nil
}

// Client returns a TLS 1.3 client configuration that accepts only the
// certificate whose sha256 is fingerprint (hex, as SelfSigned returns
// it); a malformed fingerprint is an error.
func Client(fingerprint string) (*tls.Config, error) {
	want, err := hex.DecodeString(fingerprint)
	if err != nil || len(want) != sha256.Size {
		return nil, errors.New("pinnedtls: the fingerprint is not a hex sha256")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Self-signed: VerifyConnection pins it instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrMismatch
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return ErrMismatch
			}
			return nil
		},
	}, nil
}

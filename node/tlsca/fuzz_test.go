package tlsca

import (
	"bytes"
	"testing"
	"time"
)

// FuzzParseChainPEM: any bytes either parse into at most 8 certificates
// that encode back to blocks parsing the same, or are refused with
// ErrBadPEM; never a panic. The same bytes as a CA file or a CA record's
// certificate behave alike.
func FuzzParseChainPEM(f *testing.F) {
	ca, err := NewCA("fuzz", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	c, err := ca.Issue("n", Names{DNS: []string{"n"}}, time.Now(), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	chain, key, err := EncodeCertificate(c)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][]byte{chain, []byte(ca.CertPEM()), key, append(chain, key...), []byte("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"), nil} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseChainPEM(b)
		if err != nil {
			if certs != nil {
				t.Fatal("certificates with an error")
			}
			return
		}
		if len(certs) == 0 || len(certs) > maxChain {
			t.Fatalf("%d certificates", len(certs))
		}
		var again []byte
		for _, c := range certs {
			again = append(again, EncodeCertPEM(c)...)
		}
		back, err := ParseChainPEM(again)
		if err != nil || len(back) != len(certs) {
			t.Fatalf("re-encoded chain does not parse: %v", err)
		}
		for i := range back {
			if !bytes.Equal(back[i].Raw, certs[i].Raw) {
				t.Fatal("re-encoded certificate differs")
			}
		}
		if _, err := CertPool(b); err != nil {
			t.Fatalf("a chain that parses is no pool: %v", err)
		}
		if ca, err := ParseCACertPEM(b); err == nil && (!ca.IsCA || len(certs) != 1) {
			t.Fatal("ParseCACertPEM accepted a non-CA or a chain")
		}
	})
}

// FuzzOpenCA: a CA record from the registry (certificate PEM, sealed key)
// opens only with the right secret into a key that matches the
// certificate; anything else is an error, never a panic.
func FuzzOpenCA(f *testing.F) {
	ca, err := NewCA("fuzz", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	sealed, err := SealKey(ca, secret)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM(), sealed)
	f.Add(ca.CertPEM(), sealed[:len(sealed)-4]+"AAAA")
	f.Add(ca.CertPEM(), "")
	f.Add("", sealed)
	f.Fuzz(func(t *testing.T, certPEM, sealedKey string) {
		got, err := OpenCA(certPEM, sealedKey, secret)
		if err != nil {
			return
		}
		if !got.Cert.IsCA || !got.Key.PublicKey.Equal(got.Cert.PublicKey) {
			t.Fatal("opened a CA whose key does not match its certificate")
		}
		if _, err := OpenCA(certPEM, sealedKey, secret+"x"); err == nil {
			t.Fatal("opened with another secret")
		}
	})
}

// FuzzParseFingerprint: accepted fingerprints are 32 bytes and print back
// to a form that parses to the same bytes.
func FuzzParseFingerprint(f *testing.F) {
	for _, s := range []string{"sha256:" + string(bytes.Repeat([]byte("ab"), 32)), "SHA256 Fingerprint=AB:CD", "", "sha256:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		if len(b) != 32 {
			t.Fatalf("%d bytes", len(b))
		}
		again, err := ParseFingerprint(FormatFingerprint(b))
		if err != nil || !bytes.Equal(again, b) {
			t.Fatal("canonical form does not parse back")
		}
	})
}

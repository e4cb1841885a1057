package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"time"

	"github.com/rbee-project/rbee/node/tlsca"
)

// TLS is how a client verifies the certificate of an https:// node.
type TLS struct {
	// CAPEM is the cluster CA certificate (rbee tls ca), or any CA file;
	// when set it replaces the system's roots.
	CAPEM []byte
	// Fingerprint pins a CA ("sha256:…"): the node's chain must contain
	// that CA and verify up to it. It lets a user trust a cluster from
	// the fingerprint the first node printed, without copying a file.
	Fingerprint string
}

// dialTimeout bounds connecting and the TLS handshake to a node.
const dialTimeout = 10 * time.Second

// NewHTTPClient is an HTTP client that verifies https:// nodes as t says
// (the system's roots when t is empty). It talks to nodes directly, never
// through an HTTP proxy: a node is on the LAN.
func NewHTTPClient(t TLS) (*http.Client, error) {
	if len(t.CAPEM) == 0 && t.Fingerprint == "" {
		return &http.Client{}, nil
	}
	roots, pin, err := t.parse()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	nd := &net.Dialer{Timeout: dialTimeout}
	// The dialer knows the address of every connection, so the name the
	// certificate is checked against is the one the URL names (an IP
	// address too, which TLS does not send to the server).
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		d := &tls.Dialer{NetDialer: nd, Config: tlsca.ClientConfig(host, roots, pin)}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: tr}, nil
}

func (t TLS) parse() (roots *x509.CertPool, pin []byte, err error) {
	if len(t.CAPEM) > 0 {
		if roots, err = tlsca.CertPool(t.CAPEM); err != nil {
			return nil, nil, err
		}
	}
	if t.Fingerprint != "" {
		if pin, err = tlsca.ParseFingerprint(t.Fingerprint); err != nil {
			return nil, nil, err
		}
	}
	return roots, pin, nil
}

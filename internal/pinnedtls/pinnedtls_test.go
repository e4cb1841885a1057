package pinnedtls

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPinned: a client pinned to a server's fingerprint completes the
// handshake; pinned to another certificate's it fails with ErrMismatch;
// a malformed fingerprint is refused before any connection.
func TestPinned(t *testing.T) {
	cert, fp, err := SelfSigned("test")
	require.NoError(t, err)
	_, other, err := SelfSigned("other")
	require.NoError(t, err)
	require.Len(t, fp, 64)
	require.NotEqual(t, fp, other)

	handshake := func(pin string) error {
		cfg, err := Client(pin)
		if err != nil {
			return err
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		srv := make(chan error, 1)
		go func() {
			s := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
			srv <- s.Handshake()
			s.Close()
		}()
		err = tls.Client(a, cfg).Handshake()
		a.Close()
		<-srv
		return err
	}
	require.NoError(t, handshake(fp))
	require.ErrorIs(t, handshake(other), ErrMismatch)
	for _, bad := range []string{"", "zz", strings.Repeat("0", 62)} {
		err := handshake(bad)
		require.Error(t, err)
		require.False(t, errors.Is(err, ErrMismatch))
	}
}

package peercred

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEncodeAddr(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux encoding")
	}
	got := encodeAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0x1e99})
	// little-endian machines print 0100007F; big-endian 7F000001.
	require.True(t, strings.HasSuffix(got, ":1E99"), got)
	require.Contains(t, []string{"0100007F:1E99", "7F000001:1E99"}, got)
}

// TestDiagAgreesWithProcfs checks the sock_diag lookup against the procfs
// table for live connections, and that a client's TIME_WAIT socket (it
// closed first) is no one's, not root's.
func TestDiagAgreesWithProcfs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag and procfs socket tables are Linux only")
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			c, s, ok := loopbackPair(t, network)
			if !ok {
				t.Skipf("no %s loopback", network)
			}
			server, client := s.LocalAddr().(*net.TCPAddr), s.RemoteAddr().(*net.TCPAddr)
			family, file := diagFamily(client)
			uid, err := diagLookup(family, client, server)
			if errors.Is(err, errDiagUnavailable) {
				t.Skipf("no sock_diag here: %v", err)
			}
			require.NoError(t, err)
			require.Equal(t, uint32(os.Getuid()), uid)
			fromProc, err := scan(procRoot+file, [2]string{encodeAddr(client), encodeAddr(server)})
			require.NoError(t, err)
			require.Equal(t, fromProc, uid)
			// The server's own end, as ServerUID asks for it.
			uid, err = diagLookup(family, server, client)
			require.NoError(t, err)
			require.Equal(t, uint32(os.Getuid()), uid)

			// The client closes first: once the server closes too, the
			// client's end is a TIME_WAIT mini socket.
			require.NoError(t, c.Close())
			_, _ = io.Copy(io.Discard, s)
			require.NoError(t, s.Close())
			require.Eventually(t, func() bool {
				_, err := diagLookup(family, client, server)
				return errors.Is(err, ErrUnknown)
			}, 5*time.Second, 10*time.Millisecond, "a closed client's socket must not have an owner")
		})
	}
}

// BenchmarkLoopbackUID looks up one connection's owner among many open
// loopback connections: sock_diag against a scan of procfs.
func BenchmarkLoopbackUID(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("Linux only")
	}
	const conns = 1000
	var last net.Conn
	for range conns {
		c, s, ok := loopbackPair(b, "tcp4")
		if !ok {
			b.Skip("no loopback")
		}
		_ = c
		last = s
	}
	server, client := last.LocalAddr().(*net.TCPAddr), last.RemoteAddr().(*net.TCPAddr)
	b.Run("sock_diag", func(b *testing.B) {
		for b.Loop() {
			if _, err := diagLookup(syscall.AF_INET, client, server); err != nil {
				b.Skip(err)
			}
		}
	})
	b.Run("procfs", func(b *testing.B) {
		for b.Loop() {
			if _, err := scan(procRoot+"tcp", [2]string{encodeAddr(client), encodeAddr(server)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package peercred

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
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

func TestOwnerless(t *testing.T) {
	const established, finWait1 = 1, 4
	for _, c := range []struct {
		name         string
		state, timer byte
		uid, inode   uint32
		want         bool
	}{
		{"a connected socket", established, 0, 1000, 42, false},
		{"root's own connected socket", established, 0, 0, 42, false},
		{"not yet accepted, newer kernel", established, 0, 1000, 0, false},
		{"not yet accepted, older kernel", established, 0, 0, 0, true},
		{"closed while sending, older kernel", finWait1, 1, 0, 0, true},
		{"TIME_WAIT", tcpTimeWait, timerTimeWait, 0, 0, true},
		{"orphaned FIN_WAIT2", 5, timerTimeWait, 0, 0, true},
		{"half-open request", tcpSynRecv, 1, 0, 0, true},
	} {
		require.Equal(t, c.want, ownerless(c.state, c.timer, c.uid, c.inode), c.name)
	}
}

// parseDiagMsg takes only an answer about the socket asked for, in its
// own or its v4-mapped form.
func TestParseDiagMsg(t *testing.T) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7833}
	id := func(family int, l, r *net.TCPAddr) []byte {
		b := make([]byte, 48)
		require.True(t, putSockID(b, family, l, r))
		return b
	}
	msg := func(sockid []byte, uid, inode uint32) []byte {
		m := make([]byte, diagMsgLen)
		m[1] = 1 // established
		copy(m[diagIDOffset:], sockid)
		binary.NativeEndian.PutUint32(m[diagUIDOffset:], uid)
		binary.NativeEndian.PutUint32(m[diagUIDOffset+4:], inode)
		return m
	}
	want, mapped := id(syscall.AF_INET, local, remote)[:36], id(syscall.AF_INET6, local, remote)[:36]
	uid, err := parseDiagMsg(msg(want, 1000, 7), want, mapped)
	require.NoError(t, err)
	require.EqualValues(t, 1000, uid)
	uid, err = parseDiagMsg(msg(mapped, 1001, 7), want, mapped)
	require.NoError(t, err)
	require.EqualValues(t, 1001, uid)
	_, err = parseDiagMsg(msg(mapped, 1001, 7), want, nil)
	require.ErrorIs(t, err, errDiagUnavailable, "the mapped form only where asked for")
	other := id(syscall.AF_INET, local, &net.TCPAddr{IP: remote.IP, Port: 7834})
	_, err = parseDiagMsg(msg(other[:36], 1000, 7), want, mapped)
	require.ErrorIs(t, err, errDiagUnavailable, "another socket's answer")
	_, err = parseDiagMsg(msg(want, 1000, 7)[:diagMsgLen-1], want, mapped)
	require.ErrorIs(t, err, errDiagUnavailable, "a short answer")
	_, err = parseDiagMsg(msg(want, 0, 0), want, mapped)
	require.ErrorIs(t, err, ErrUnknown, "uid 0 without a socket file is no one's")
}

// A dual-stack listener's sockets are AF_INET6 with v4-mapped addresses;
// an IPv4 lookup finds them through sock_diag, not the procfs fallback.
func TestDiagDualStack(t *testing.T) {
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack listener: %v", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("no IPv4 to a dual-stack listener: %v", err)
	}
	defer c.Close()
	s, err := ln.Accept()
	require.NoError(t, err)
	defer s.Close()
	client, server := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
	uid, err := diagLookup(syscall.AF_INET, server, client)
	if errors.Is(err, errDiagUnavailable) {
		// Either no sock_diag here, or the mapped answer was not taken.
		if _, err := diagLookup(syscall.AF_INET, client, server); errors.Is(err, errDiagUnavailable) {
			t.Skip("no sock_diag here")
		}
		t.Fatal("the dual-stack server socket was not matched in its v4-mapped form")
	}
	require.NoError(t, err)
	require.Equal(t, uint32(os.Getuid()), uid)
	got, err := ServerUID(c.LocalAddr(), c.RemoteAddr())
	require.NoError(t, err)
	require.Equal(t, uid, got)
}

package peercred

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoopbackUIDOwnProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("procfs socket tables are Linux only")
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			c, err := net.Dial(network, ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			s, err := ln.Accept()
			require.NoError(t, err)
			defer s.Close()
			uid, err := LoopbackUID(s.LocalAddr(), s.RemoteAddr())
			require.NoError(t, err)
			require.Equal(t, uint32(os.Getuid()), uid)
		})
	}
}

// TestLoopbackUIDOtherUser connects from a process running as another user
// (nobody) and finds that user's uid, not ours.
func TestLoopbackUIDOtherUser(t *testing.T) {
	if runtime.GOOS != "linux" || os.Getuid() != 0 {
		t.Skip("needs root on Linux to start a process as another user")
	}
	const nobody = 65534
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	// bash's /dev/tcp opens the connection and holds it for a moment.
	cmd := exec.Command("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+strconv.Itoa(port)+"; sleep 5")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	require.NoError(t, ln.(*net.TCPListener).SetDeadline(time.Now().Add(10*time.Second)))
	s, err := ln.Accept()
	require.NoError(t, err)
	defer s.Close()
	uid, err := LoopbackUID(s.LocalAddr(), s.RemoteAddr())
	require.NoError(t, err)
	require.Equal(t, uint32(nobody), uid)
}

func TestLoopbackUIDNotLoopback(t *testing.T) {
	_, err := LoopbackUID(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 2})
	require.ErrorIs(t, err, ErrUnknown)
	_, err = LoopbackUID(&net.UnixAddr{}, &net.UnixAddr{})
	require.ErrorIs(t, err, ErrUnknown)
}

// A client that closed before the lookup may have left only the kernel's
// mini socket, listed with uid 0: that must not read as root.
func TestLoopbackUIDClosedClient(t *testing.T) {
	if runtime.GOOS != "linux" || os.Getuid() != 0 {
		t.Skip("needs root on Linux to start a process as another user")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cmd := exec.Command("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+strconv.Itoa(port)+"; exec 3>&-")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	require.NoError(t, cmd.Run())
	require.NoError(t, ln.(*net.TCPListener).SetDeadline(time.Now().Add(10*time.Second)))
	s, err := ln.Accept()
	require.NoError(t, err)
	defer s.Close()
	uid, err := LoopbackUID(s.LocalAddr(), s.RemoteAddr())
	if err == nil {
		require.Equal(t, uint32(65534), uid, "a closed client's socket read as another user's")
		return
	}
	require.ErrorIs(t, err, ErrUnknown)
}

// loopbackPair opens a loopback connection and returns its client and
// server ends, closed when the test ends; ok is false without loopback for
// that network.
func loopbackPair(tb testing.TB, network string) (client, server net.Conn, ok bool) {
	tb.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, nil, false
	}
	defer ln.Close()
	client, err = net.Dial(network, ln.Addr().String())
	require.NoError(tb, err)
	server, err = ln.Accept()
	require.NoError(tb, err)
	tb.Cleanup(func() { client.Close(); server.Close() })
	return client, server, true
}

// A Unix socket connection's server is the process the kernel recorded
// at connect (SO_PEERCRED): this process's user, no one else.
func TestCheckServerUnixSocket(t *testing.T) {
	if !Supported() {
		t.Skip("no owner lookup here")
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, CheckServer(c, uint32(os.Getuid())))
	require.ErrorIs(t, CheckServer(c, uint32(os.Getuid())+1), ErrServerOwner)
}

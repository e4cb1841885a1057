package p2p

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

const testProto protocol.ID = "/rbee/test-echo/1.0.0"

// newHost starts a host on 127.0.0.1 with a random port and closes it at
// the end of the test.
func newHost(t testing.TB, secret string) *Host {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Secret = []byte(secret)
	h, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	for _, p := range []protocol.ID{testProto, benchProto} {
		require.NoError(t, h.AddService(Service{Name: "rbee.test", Protocol: p, Memory: 64 << 10}))
	}
	require.NoError(t, h.Start(context.Background()))
	return h
}

// introduce tells from where to find to.
func introduce(t testing.TB, from, to *Host) {
	t.Helper()
	require.NoError(t, from.AddPeer(to.ID(), to.Addrs()))
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHostsExchangeFrames(t *testing.T) {
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)

	// a echoes every frame until the dialer half-closes.
	a.Handle(testProto, func(s network.Stream) {
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		var err error
		for {
			var f []byte
			f, err = ReadFrame(s, 0)
			if errors.Is(err, io.EOF) {
				err = nil
				break
			}
			if err != nil {
				break
			}
			if err = WriteFrame(s, f); err != nil {
				break
			}
		}
		closeOrReset(s, err)
	})

	s, err := b.NewStream(ctxT(t), a.ID(), testProto)
	require.NoError(t, err)
	require.NoError(t, s.SetDeadline(time.Now().Add(10*time.Second)))
	for _, n := range []int{0, 1, 1000, readChunk, readChunk + 1, 300_000} {
		out := bytes.Repeat([]byte{byte(n)}, n)
		require.NoError(t, WriteFrame(s, out))
		in, err := ReadFrame(s, 0)
		require.NoError(t, err, "size %d", n)
		require.Equal(t, out, in, "size %d", n)
	}
	type msg struct {
		Op    string `json:"op"`
		Count int    `json:"count"`
	}
	require.NoError(t, WriteJSON(s, msg{Op: "hello", Count: 3}))
	var got msg
	require.NoError(t, ReadJSON(s, 0, &got))
	require.Equal(t, msg{Op: "hello", Count: 3}, got)

	require.NoError(t, s.CloseWrite())
	_, err = ReadFrame(s, 0)
	require.ErrorIs(t, err, io.EOF, "handler closes after our half-close")
	require.NoError(t, s.Close())
}

func TestOversizedFrameRejectedByPeer(t *testing.T) {
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)
	const limit = 1024
	handlerErr := make(chan error, 1)
	a.Handle(testProto, func(s network.Stream) {
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := ReadFrame(s, limit)
		handlerErr <- err
		closeOrReset(s, err)
	})
	s, err := b.NewStream(ctxT(t), a.ID(), testProto)
	require.NoError(t, err)
	require.NoError(t, s.SetDeadline(time.Now().Add(10*time.Second)))
	require.NoError(t, WriteFrame(s, make([]byte, limit+1)))
	select {
	case err := <-handlerErr:
		require.ErrorIs(t, err, ErrFrameTooLarge)
	case <-time.After(15 * time.Second):
		t.Fatal("handler did not finish")
	}
	// The handler reset the stream, so our read fails rather than hanging.
	_, err = ReadFrame(s, 0)
	require.Error(t, err)
	require.NotErrorIs(t, err, io.EOF)
}

func TestWrongSecretCannotConnect(t *testing.T) {
	a := newHost(t, "cluster-one")
	good := newHost(t, "cluster-one")
	bad := newHost(t, "cluster-two")
	introduce(t, good, a)
	introduce(t, bad, a)

	_, err := good.Ping(ctxT(t), a.ID())
	require.NoError(t, err, "same secret connects")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = bad.Ping(ctx, a.ID())
	require.Error(t, err, "a host with another secret must not connect")
	require.Error(t, bad.Connect(ctx, a.ID()))
	require.Equal(t, network.NotConnected, bad.Libp2p().Network().Connectedness(a.ID()))
}

func TestListenDialConn(t *testing.T) {
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)
	l := a.Listen(testProto)
	require.Equal(t, a.ID().String(), l.Addr().String())
	require.Equal(t, "libp2p", l.Addr().Network())

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := l.Accept()
		if !assertNoErr(t, err) {
			return
		}
		defer c.Close()
		if c.RemoteAddr().String() != b.ID().String() {
			t.Errorf("remote addr %s, want %s", c.RemoteAddr(), b.ID())
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); !assertNoErr(t, err) {
			return
		}
		_, err = c.Write(bytes.ToUpper(buf))
		assertNoErr(t, err)
		// Wait for the dialer to close before closing ourselves.
		_, _ = io.Copy(io.Discard, c)
	}()

	c, err := b.Dial(ctxT(t), a.ID(), testProto)
	require.NoError(t, err)
	require.Equal(t, a.ID().String(), c.RemoteAddr().String())
	require.Equal(t, b.ID().String(), c.LocalAddr().String())
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, "HELLO", string(buf))

	// Nothing more comes: a short read deadline must fire as a timeout.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = c.Read(buf)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "want a timeout, got %v", err)

	require.NoError(t, c.Close())
	wg.Wait()

	require.NoError(t, l.Close())
	_, err = l.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	// The handler is gone: new streams for the protocol are refused, either
	// when opened or, as libp2p negotiates lazily, on first use.
	c2, err := b.Dial(ctxT(t), a.ID(), testProto)
	if err == nil {
		require.NoError(t, c2.SetDeadline(time.Now().Add(10*time.Second)))
		_, _ = c2.Write([]byte("x"))
		_, err = c2.Read(buf)
		require.Error(t, err)
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "refused, not timed out: %v", err)
		_ = c2.Close()
	}
}

func assertNoErr(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestPing(t *testing.T) {
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)
	for range 3 {
		rtt, err := b.Ping(ctxT(t), a.ID())
		require.NoError(t, err)
		require.Greater(t, rtt, time.Duration(0))
	}
	// A peer we know nothing about cannot be pinged.
	c := newHost(t, "s3cret")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Ping(ctx, a.ID())
	require.Error(t, err)
}

func TestAddrs(t *testing.T) {
	h := newHost(t, "s3cret")
	addrs := h.Addrs()
	require.NotEmpty(t, addrs)
	for _, a := range addrs {
		require.True(t, strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/"), a)
		require.True(t, strings.HasSuffix(a, "/p2p/"+h.ID().String()), a)
		require.NotContains(t, a, "/tcp/0/")
	}

	// A wildcard listen expands to interface addresses, loopback included.
	cfg := DefaultConfig()
	cfg.ListenAddr = "0.0.0.0:0"
	cfg.Secret = []byte("s3cret")
	w, err := New(cfg)
	require.NoError(t, err)
	defer w.Close()
	require.Empty(t, w.Addrs(), "no addresses before Start")
	require.NoError(t, w.Start(context.Background()))
	var loop string
	for _, a := range w.Addrs() {
		require.NotContains(t, a, "0.0.0.0")
		if strings.HasPrefix(a, "/ip4/127.0.0.1/") {
			loop = a
		}
	}
	require.NotEmpty(t, loop, "addrs %v", w.Addrs())
	c := newHost(t, "s3cret")
	require.NoError(t, c.AddPeer(w.ID(), []string{loop}))
	_, err = c.Ping(ctxT(t), w.ID())
	require.NoError(t, err)
}

func TestAddPeerErrors(t *testing.T) {
	h := newHost(t, "s3cret")
	other := newHost(t, "s3cret")
	tests := []struct {
		name  string
		id    peer.ID
		addrs []string
	}{
		{"empty id", "", []string{"/ip4/127.0.0.1/tcp/1"}},
		{"garbage", other.ID(), []string{"not a multiaddr"}},
		{"udp", other.ID(), []string{"/ip4/127.0.0.1/udp/1"}},
		{"other peer", other.ID(), []string{"/ip4/127.0.0.1/tcp/1/p2p/" + h.ID().String()}},
		{"p2p only", other.ID(), []string{"/p2p/" + other.ID().String()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := h.AddPeer(tt.id, tt.addrs)
			require.ErrorIs(t, err, ErrBadPeerAddr)
		})
	}
	require.NoError(t, h.AddPeer(other.ID(), other.Addrs()))
}

func TestNewConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   error
	}{
		{"no secret", func(c *Config) { c.Secret = nil }, ErrNoSecret},
		{"no port", func(c *Config) { c.ListenAddr = "127.0.0.1" }, ErrBadListenAddr},
		{"bad port", func(c *Config) { c.ListenAddr = "127.0.0.1:99999" }, ErrBadListenAddr},
		{"hostname", func(c *Config) { c.ListenAddr = "example.com:1" }, ErrBadListenAddr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Secret = []byte("s")
			tt.mutate(&cfg)
			_, err := New(cfg)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestLifecycle(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Secret = []byte("s3cret")
	h, err := New(cfg)
	require.NoError(t, err)
	require.NotEmpty(t, h.ID())
	_, err = h.NewStream(context.Background(), h.ID(), testProto)
	require.ErrorIs(t, err, ErrNotStarted)

	require.NoError(t, h.Start(context.Background()))
	require.ErrorIs(t, h.Start(context.Background()), ErrAlreadyStarted)
	require.NoError(t, h.Close())
	require.NoError(t, h.Close(), "Close is idempotent")
	_, ok := <-h.Discovered()
	require.False(t, ok, "Discovered is closed by Close")
	_, err = h.Ping(context.Background(), h.ID())
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, h.Start(context.Background()), ErrClosed)
}

func TestPeerIDStableAcrossRestart(t *testing.T) {
	keyPath := t.TempDir() + "/node/identity.key"
	client := newHost(t, "s3cret")
	var ids []peer.ID
	for range 2 {
		key, err := LoadOrCreateIdentity(keyPath)
		require.NoError(t, err)
		cfg := DefaultConfig()
		cfg.PrivateKey = key
		cfg.ListenAddr = "127.0.0.1:0"
		cfg.Secret = []byte("s3cret")
		h, err := New(cfg)
		require.NoError(t, err)
		require.NoError(t, h.Start(context.Background()))
		// Reachable under its id at its new port.
		require.NoError(t, client.AddPeer(h.ID(), h.Addrs()))
		_, err = client.Ping(ctxT(t), h.ID())
		require.NoError(t, err)
		ids = append(ids, h.ID())
		require.NoError(t, h.Close())
		// Let the client notice the old connection is gone, as a peer would
		// before reconnecting; otherwise its next stream may race the
		// stale connection's teardown.
		require.Eventually(t, func() bool {
			return client.Libp2p().Network().Connectedness(h.ID()) != network.Connected
		}, 10*time.Second, 10*time.Millisecond)
	}
	require.Equal(t, ids[0], ids[1])
}

// TestDiscoveredDelivery drives the mDNS callback directly (tests never send
// multicast): self is ignored, others are delivered, a full channel drops
// instead of blocking, and finds after Close are ignored.
func TestDiscoveredDelivery(t *testing.T) {
	h, other := newHost(t, "s3cret"), newHost(t, "s3cret")
	n := notifee{h}
	n.HandlePeerFound(peer.AddrInfo{ID: h.ID()})
	n.HandlePeerFound(peer.AddrInfo{ID: other.ID(), Addrs: other.Libp2p().Addrs()})
	got := <-h.Discovered()
	require.Equal(t, other.ID(), got.ID)
	select {
	case extra := <-h.Discovered():
		t.Fatalf("unexpected find %v", extra)
	default:
	}
	for range discoveredBuffer + 10 {
		n.HandlePeerFound(peer.AddrInfo{ID: other.ID()})
	}
	require.Len(t, h.Discovered(), discoveredBuffer)
	require.NoError(t, h.Close())
	n.HandlePeerFound(peer.AddrInfo{ID: other.ID()}) // must not panic
	count := 0
	for range h.Discovered() {
		count++
	}
	require.Equal(t, discoveredBuffer, count)
}

// A peer that was down and restarts on the same address is reachable at
// once: a dial that failed while it was down leaves no backoff behind
// (libp2p's own would refuse to dial it again for 5 s or more).
func TestRestartedPeerReachableAtOnce(t *testing.T) {
	keyPath := t.TempDir() + "/identity.key"
	key, err := LoadOrCreateIdentity(keyPath)
	require.NoError(t, err)
	start := func(addr string) *Host {
		cfg := DefaultConfig()
		cfg.PrivateKey = key
		cfg.ListenAddr = addr
		cfg.Secret = []byte("s3cret")
		h, err := New(cfg)
		require.NoError(t, err)
		require.NoError(t, h.Start(context.Background()))
		t.Cleanup(func() { _ = h.Close() })
		return h
	}
	client := newHost(t, "s3cret")
	srv := start("127.0.0.1:0")
	addr := srv.ListenAddr()
	require.NotEmpty(t, addr)
	introduce(t, client, srv)
	_, err = client.Ping(ctxT(t), srv.ID())
	require.NoError(t, err)
	require.NoError(t, srv.Close())
	require.Eventually(t, func() bool {
		return client.Libp2p().Network().Connectedness(srv.ID()) != network.Connected
	}, 10*time.Second, 10*time.Millisecond)
	for range 3 { // dials while it is down fail
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = client.Ping(ctx, srv.ID())
		cancel()
		require.Error(t, err)
	}
	srv = start(addr)
	require.Equal(t, addr, srv.ListenAddr())
	_, err = client.Ping(ctxT(t), srv.ID())
	require.NoError(t, err, "the restarted peer must be reachable without waiting out a dial backoff")
}

// A LAN peer may open many connections in a row (redials after partitions
// and restarts): libp2p's Internet default refuses the 17th from one
// address for seconds; rbee's limit lets a LAN burst through.
func TestLANConnectionRate(t *testing.T) {
	h := newHost(t, "s3cret")
	rm := h.Libp2p().Network().ResourceManager()
	addr, err := ma.NewMultiaddr("/ip4/10.214.0.7/tcp/7835")
	require.NoError(t, err)
	for i := range 60 {
		scope, err := rm.OpenConnection(network.DirInbound, true, addr)
		require.NoError(t, err, "connection %d from one LAN address", i+1)
		scope.Done()
	}
}

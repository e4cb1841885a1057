package p2p

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/stretchr/testify/require"
)

func TestIdleConnectionsClosed(t *testing.T) {
	a := newHost(t, "s3cret")
	idle, protected, busy := newHost(t, "s3cret"), newHost(t, "s3cret"), newHost(t, "s3cret")
	busy.Handle(testProto, func(s network.Stream) {
		_, _ = ReadFrame(s, 0) // held open until the dialer ends it
		_ = s.Close()
	})
	for _, h := range []*Host{idle, protected, busy} {
		introduce(t, a, h)
		require.NoError(t, a.Connect(ctxT(t), h.ID()))
	}
	s, err := a.NewStream(ctxT(t), busy.ID(), testProto)
	require.NoError(t, err)
	defer s.Reset()
	a.Protect(protected.ID(), "test")
	require.Equal(t, []string{protected.ID().String()}, peersString(a.Protected("test")))

	connected := func(h *Host) bool {
		return a.Libp2p().Network().Connectedness(h.ID()) == network.Connected
	}
	const timeout = time.Minute
	now := time.Now()
	a.closeIdle(now, timeout)
	a.closeIdle(now.Add(timeout/2), timeout)
	require.True(t, connected(idle), "idle for less than the timeout")
	a.closeIdle(now.Add(timeout), timeout)
	require.Eventually(t, func() bool { return !connected(idle) }, 10*time.Second, 10*time.Millisecond,
		"idle for the timeout: closed")
	require.True(t, connected(protected), "a protected peer's connection stays")
	require.True(t, connected(busy), "a connection with a stream stays")

	// Unprotected, it goes like any idle one.
	a.Unprotect(protected.ID(), "test")
	require.Empty(t, a.Protected("test"))
	a.closeIdle(now.Add(2*timeout), timeout)
	a.closeIdle(now.Add(3*timeout), timeout)
	require.Eventually(t, func() bool { return !connected(protected) }, 10*time.Second, 10*time.Millisecond)
	require.True(t, connected(busy))
}

func peersString[T interface{ String() string }](ids []T) []string {
	var out []string
	for _, id := range ids {
		out = append(out, id.String())
	}
	return out
}

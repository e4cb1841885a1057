package listen

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// flaky fails its first accepts, then hands out its inner listener's.
type flaky struct {
	net.Listener
	fails int
}

func (f *flaky) Accept() (net.Conn, error) {
	if f.fails > 0 {
		f.fails--
		return nil, errors.New("too many open files")
	}
	return f.Listener.Accept()
}

// TestAccept: failed accepts are reported and retried with growing
// pauses until one succeeds; a closed listener or stop ends it.
func TestAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	var pauses []time.Duration
	got, err := Accept(&flaky{Listener: ln, fails: 3}, nil, func(_ error, in time.Duration) { pauses = append(pauses, in) })
	require.NoError(t, err)
	got.Close()
	require.Equal(t, []time.Duration{retryMin, 2 * retryMin, 4 * retryMin}, pauses)

	stop := make(chan struct{})
	close(stop)
	_, err = Accept(&flaky{Listener: ln, fails: 1}, stop, nil)
	require.ErrorIs(t, err, net.ErrClosed, "stop ends the retries")
	require.NoError(t, ln.Close())
	_, err = Accept(ln, nil, nil)
	require.ErrorIs(t, err, net.ErrClosed)
}

type closer struct{ n *atomic.Int32 }

func (c closer) Close() error { c.n.Add(1); return nil }

// TestConns: Close closes what is registered and not what was removed,
// and refuses later registrations.
func TestConns(t *testing.T) {
	var s Conns
	var a, b atomic.Int32
	require.True(t, s.Add(closer{&a}))
	require.True(t, s.Add(closer{&b}))
	s.Remove(closer{&b})
	s.Close()
	require.Equal(t, int32(1), a.Load())
	require.Equal(t, int32(0), b.Load())
	var c atomic.Int32
	require.False(t, s.Add(closer{&c}))
	require.Equal(t, int32(0), c.Load(), "a refused connection is the caller's to close")
}

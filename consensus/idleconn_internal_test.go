package consensus

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echoServer accepts connections on loopback and echoes what it reads,
// after delay; open counts its connections that have not ended.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
	open     atomic.Int64
	delay    atomic.Int64 // nanoseconds before each echo
	wg       sync.WaitGroup
}

func newEchoServer(t *testing.T) *echoServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.open.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.open.Add(-1)
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					time.Sleep(time.Duration(s.delay.Load()))
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *echoServer) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", s.ln.Addr().String())
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

// idleConnTo dials srv and wraps the connection in an idleConn.
func idleConnTo(t *testing.T, srv *echoServer, idle time.Duration) *idleConn {
	t.Helper()
	first, err := srv.dial(context.Background())
	require.NoError(t, err)
	c := newIdleConn(first, srv.dial, idle)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestIdleConnClosesAndReopens(t *testing.T) {
	srv := newEchoServer(t)
	c := idleConnTo(t, srv, 150*time.Millisecond)

	roundTrip(t, c, "one")
	// Unused for idle: the stream ends, so the accepting side's handler
	// (with its read buffer) returns.
	require.Eventually(t, func() bool { return srv.open.Load() == 0 }, 5*time.Second, 10*time.Millisecond)
	_, err := c.Read(make([]byte, 1))
	require.ErrorIs(t, err, errReadIdle, "a read with no request sent since the idle close")

	// The next write opens a stream again; the answer comes on it.
	roundTrip(t, c, "two")
	require.EqualValues(t, 2, srv.accepted.Load(), "one stream opened again")
	require.EqualValues(t, 1, srv.open.Load())

	require.NoError(t, c.Close())
	_, err = c.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed)
	require.Eventually(t, func() bool { return srv.open.Load() == 0 }, 5*time.Second, 10*time.Millisecond)
}

// A read waiting for a slow answer keeps the stream open past idle.
func TestIdleConnKeepsStreamWhileReading(t *testing.T) {
	srv := newEchoServer(t)
	const idle = 100 * time.Millisecond
	c := idleConnTo(t, srv, idle)
	srv.delay.Store(int64(4 * idle))
	roundTrip(t, c, "slow")
	require.EqualValues(t, 1, srv.accepted.Load(), "the stream was not closed under the read")
}

// A deadline set while there is no stream applies to the one the next
// write opens.
func TestIdleConnDeadlineCarriesOver(t *testing.T) {
	srv := newEchoServer(t)
	c := idleConnTo(t, srv, 50*time.Millisecond)
	require.Eventually(t, func() bool { return srv.open.Load() == 0 }, 5*time.Second, 10*time.Millisecond)

	srv.delay.Store(int64(time.Second))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, err := c.Write([]byte("late"))
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 4))
	require.True(t, errors.Is(err, os.ErrDeadlineExceeded), "read deadline of the new stream: %v", err)
}

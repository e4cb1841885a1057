package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/pinnedtls"
)

// closer is a file stand-in that records its Close.
type closer struct {
	io.Reader
	closed atomic.Bool
}

func (c *closer) Close() error { c.closed.Store(true); return nil }

// endless never ends: a transfer only a cut stops.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func serveListener(t *testing.T) *Listener {
	l, err := Listen("127.0.0.1:0", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- l.Serve() }()
	t.Cleanup(func() {
		_ = l.Close()
		require.NoError(t, <-done)
	})
	return l
}

var loopback = net.IPv4(127, 0, 0, 1)

// TestDirectClaims: an offer is claimed once, with its token, from the
// server whose certificate it names; other tokens, a second claim and a
// wrong fingerprint are refused, and a refused claim leaves the server
// serving.
func TestDirectClaims(t *testing.T) {
	l := serveListener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	data := bytes.Repeat([]byte("rbee"), 100_000)
	f := &closer{Reader: bytes.NewReader(data)}
	o, _, err := l.offer(f, loopback)
	require.NoError(t, err)

	// A fingerprint that is not the server's: the receiver hangs up before
	// it sends the token, so the offer is still there.
	bad := o
	bad.CertSHA256 = hex.EncodeToString(make([]byte, 32))
	_, err = dialDirect(ctx, loopback, &bad)
	require.ErrorIs(t, err, pinnedtls.ErrMismatch)

	// An unknown token.
	other := o
	tok := make([]byte, tokenLen)
	_, _ = rand.Read(tok)
	other.Token = hex.EncodeToString(tok)
	_, err = dialDirect(ctx, loopback, &other)
	require.ErrorContains(t, err, "refused the token")

	// A stranger that does not speak TLS.
	c, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, c) // the server hangs up
	_ = c.Close()

	// An address no offer was made to is cut before TLS.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c, err = d.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	k, err := c.Read(make([]byte, 1))
	require.Zero(t, k)
	require.ErrorIs(t, err, io.EOF)
	_ = c.Close()

	// Malformed offers fail before any connection.
	for _, m := range []Offer{{Port: o.Port, CertSHA256: o.CertSHA256, Token: "zz"},
		{Port: o.Port, CertSHA256: "00", Token: o.Token}, {Port: 0, CertSHA256: o.CertSHA256, Token: o.Token}} {
		_, err = dialDirect(ctx, loopback, &m)
		require.Error(t, err)
	}

	tc, err := dialDirect(ctx, loopback, &o)
	require.NoError(t, err)
	body := newDirectBody(tc, int64(len(data)), func() bool { return true })
	got, err := io.ReadAll(body)
	require.NoError(t, err)
	require.NoError(t, body.Close())
	require.Equal(t, data, got)
	require.Eventually(t, f.closed.Load, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(1), l.Claimed())

	// With no offer left for this address the port does not even shake
	// hands; with another one outstanding, the spent token is refused.
	_, err = dialDirect(ctx, loopback, &o)
	require.Error(t, err)
	_, _, err = l.offer(&closer{Reader: bytes.NewReader(nil)}, loopback)
	require.NoError(t, err)
	_, err = dialDirect(ctx, loopback, &o)
	require.ErrorContains(t, err, "refused the token", "a token claims once")
}

// TestDirectOfferExpires: an offer nobody claims closes its file.
func TestDirectOfferExpires(t *testing.T) {
	l := serveListener(t)
	l.ttl = 20 * time.Millisecond
	f := &closer{Reader: bytes.NewReader(nil)}
	_, key, err := l.offer(f, loopback)
	require.NoError(t, err)
	require.Eventually(t, f.closed.Load, 10*time.Second, 5*time.Millisecond)
	_, ok := l.take(key)
	require.False(t, ok)
}

// TestDirectCloseCuts: Close ends a transfer in progress and the files
// of unclaimed offers.
func TestDirectCloseCuts(t *testing.T) {
	l, err := Listen("127.0.0.1:0", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- l.Serve() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	busy := &closer{Reader: endless{}}
	o, _, err := l.offer(busy, loopback)
	require.NoError(t, err)
	waiting := &closer{Reader: bytes.NewReader(nil)}
	_, _, err = l.offer(waiting, loopback)
	require.NoError(t, err)

	tc, err := dialDirect(ctx, loopback, &o)
	require.NoError(t, err)
	body := newDirectBody(tc, 1<<40, func() bool { return true })
	_, err = io.ReadFull(body, make([]byte, 1<<20))
	require.NoError(t, err)

	require.NoError(t, l.Close())
	require.NoError(t, <-done)
	require.True(t, busy.closed.Load())
	require.True(t, waiting.closed.Load())
	_, err = io.Copy(io.Discard, body)
	require.Error(t, err, "a cut transfer does not end like a whole one")
	_ = body.Close()
}

// TestDirectShortBody: a peer that ends cleanly before the size it
// announced gives io.ErrUnexpectedEOF, so the download resumes after the
// last whole frame (a frame cut short cannot be authenticated).
func TestDirectShortBody(t *testing.T) {
	l := serveListener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	data := bytes.Repeat([]byte("x"), 100_000)
	o, _, err := l.offer(&closer{Reader: bytes.NewReader(data)}, loopback)
	require.NoError(t, err)
	tc, err := dialDirect(ctx, loopback, &o)
	require.NoError(t, err)
	body := newDirectBody(tc, int64(len(data))+10, func() bool { return true })
	got, err := io.ReadAll(body)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Equal(t, data[:frameData], got)
	_ = body.Close()
}

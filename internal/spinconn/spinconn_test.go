package spinconn

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/pinnedtls"
)

// pair returns both ends of a loopback TCP connection, the dialled end
// wrapped with spin.
func pair(t testing.TB, spin time.Duration) (wrapped, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	p, ok := <-accepted
	require.True(t, ok)
	w := Wrap(c, spin)
	t.Cleanup(func() { w.Close(); p.Close() })
	return w, p
}

func TestWrapOnlyTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	require.Equal(t, a, Wrap(a, DefaultSpin), "not a TCP connection: unchanged")
	w, _ := pair(t, 0)
	_, isTCP := w.(*net.TCPConn)
	require.True(t, isTCP, "spin 0: unchanged")
	w, _ = pair(t, DefaultSpin)
	_, isTCP = w.(*net.TCPConn)
	require.Equal(t, polls, !isTCP, "a TCP connection is wrapped where reads can poll")
}

// TestRead: data that comes while the read polls, after it has gone to
// sleep, in pieces, then the end of the stream.
func TestRead(t *testing.T) {
	for _, spin := range []time.Duration{50 * time.Microsecond, DefaultSpin, time.Second} {
		t.Run(spin.String(), func(t *testing.T) {
			w, p := pair(t, spin)
			buf := make([]byte, 64)
			go func() { _, _ = p.Write([]byte("now")) }()
			n, err := io.ReadAtLeast(w, buf, 3)
			require.NoError(t, err)
			require.Equal(t, "now", string(buf[:n]))

			// Later than a short spin: the read sleeps in the poller
			// and still gets it.
			go func() {
				time.Sleep(20 * time.Millisecond)
				_, _ = p.Write([]byte("later"))
			}()
			n, err = io.ReadAtLeast(w, buf, 5)
			require.NoError(t, err)
			require.Equal(t, "later", string(buf[:n]))

			// A buffer smaller than what came: the rest is read next.
			_, err = p.Write([]byte("0123456789"))
			require.NoError(t, err)
			small := make([]byte, 4)
			var got []byte
			for len(got) < 10 {
				n, err := w.Read(small)
				require.NoError(t, err)
				got = append(got, small[:n]...)
			}
			require.Equal(t, "0123456789", string(got))

			require.NoError(t, p.Close())
			_, err = w.Read(buf)
			require.ErrorIs(t, err, io.EOF)
		})
	}
}

// TestReadDoesNotAllocate: a poll allocates nothing (a spinning read
// polls thousands of times a millisecond).
func TestReadDoesNotAllocate(t *testing.T) {
	if !polls {
		t.Skip("reads do not poll on this platform")
	}
	w, p := pair(t, DefaultSpin)
	msg, buf := []byte("x"), make([]byte, 8)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := p.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(w, buf[:1]); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}

// TestDeadline: a read deadline ends a sleeping read and a polling one
// (with a spin far longer than the test allows, so that a poll loop that
// ignored deadlines would fail it) with a timeout; an expired one ends it
// at once.
func TestDeadline(t *testing.T) {
	for _, spin := range []time.Duration{time.Millisecond, time.Minute} {
		t.Run(spin.String(), func(t *testing.T) {
			w, _ := pair(t, spin)
			buf := make([]byte, 8)
			require.NoError(t, w.SetReadDeadline(time.Now().Add(30*time.Millisecond)))
			start := time.Now()
			_, err := w.Read(buf)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "a timeout: %v", err)
			require.Less(t, time.Since(start), 20*time.Second)

			require.NoError(t, w.SetReadDeadline(time.Now().Add(-time.Second)))
			start = time.Now()
			_, err = w.Read(buf)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.Less(t, time.Since(start), 20*time.Second, "an expired deadline does not wait out the spin")
		})
	}
}

// TestCloseEndsRead: Close from another goroutine ends a read that polls
// and one that sleeps.
func TestCloseEndsRead(t *testing.T) {
	for _, spin := range []time.Duration{time.Millisecond, time.Minute} {
		t.Run(spin.String(), func(t *testing.T) {
			w, _ := pair(t, spin)
			done := make(chan error, 1)
			go func() {
				_, err := w.Read(make([]byte, 8))
				done <- err
			}()
			time.Sleep(10 * time.Millisecond)
			require.NoError(t, w.Close())
			select {
			case err := <-done:
				require.ErrorIs(t, err, net.ErrClosed)
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not end the read")
			}
		})
	}
}

// TestTLS: TLS runs over a wrapped connection in both directions.
func TestTLS(t *testing.T) {
	cert, fp, err := pinnedtls.SelfSigned("spinconn-test")
	require.NoError(t, err)
	client, err := pinnedtls.Client(fp)
	require.NoError(t, err)
	w, p := pair(t, DefaultSpin)
	srv := tls.Server(Wrap(p, DefaultSpin), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	cl := tls.Client(w, client)
	msg := make([]byte, 100_000) // several records
	for i := range msg {
		msg[i] = byte(i)
	}
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(srv, buf); err != nil {
			errc <- err
			return
		}
		_, err := srv.Write(buf)
		errc <- err
	}()
	_, err = cl.Write(msg)
	require.NoError(t, err)
	back := make([]byte, len(msg))
	_, err = io.ReadFull(cl, back)
	require.NoError(t, err)
	require.NoError(t, <-errc)
	require.Equal(t, msg, back)
}

// BenchmarkExchange: two sides that each compute for 280 µs and then
// swap 8 KiB (a tensor group's all-reduce of a 2048-wide hidden state),
// with reads that sleep at once and with reads that poll first. Reported:
// µs per round; the compute alone is 280.
func BenchmarkExchange(b *testing.B) {
	for _, spin := range []time.Duration{0, DefaultSpin} {
		name := "sleep"
		if spin > 0 {
			name = "poll"
		}
		b.Run(name, func(b *testing.B) {
			w, p := pair(b, spin)
			p = Wrap(p, spin)
			const compute = 280 * time.Microsecond
			rounds := b.N
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, 8<<10)
				for i := 0; i < rounds; i++ {
					busy(compute)
					if _, err := p.Write(buf); err != nil {
						done <- err
						return
					}
					if _, err := io.ReadFull(p, buf); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			buf := make([]byte, 8<<10)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < rounds; i++ {
				busy(compute)
				if _, err := w.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(w, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(rounds), "µs/round")
			require.NoError(b, <-done)
		})
	}
}

// busy computes for d.
func busy(d time.Duration) {
	x := 1.0
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 100; i++ {
			x = x*1.0000001 + 1e-9
		}
	}
	if x == 0 {
		panic("unreachable")
	}
}

package node

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// records is a slog.Handler keeping what it is given.
type records struct {
	mu  sync.Mutex
	got []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) at(level slog.Level) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.got {
		if rec.Level == level {
			out = append(out, rec.Message)
		}
	}
	return out
}

// emfileListener fails its first n accepts as a process out of file
// descriptors does, then reports itself closed.
type emfileListener struct {
	net.Listener
	mu sync.Mutex
	n  int
}

func (l *emfileListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 {
		l.n--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return nil, net.ErrClosed
}

// TestHTTPErrorLog: net/http's failed accepts (out of file descriptors:
// the API answers nobody) reach the log as one warning per ten seconds
// with the count left out, where they were debug lines nobody saw; a
// handler's panic is an error; other lines stay at debug.
func TestHTTPErrorLog(t *testing.T) {
	rec := &records{}
	w := newHTTPErrorLog(slog.New(rec))
	now := time.Unix(1_000_000, 0)
	w.now = func() time.Time { return now }

	// A real server whose accepts fail three times.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	srv := &http.Server{ErrorLog: log.New(w, "", 0)}
	err = srv.Serve(&emfileListener{Listener: ln, n: 3})
	require.True(t, errors.Is(err, net.ErrClosed), "%v", err)
	warns := rec.at(slog.LevelWarn)
	require.Len(t, warns, 1, "three failed accepts within a second: one warning")
	require.Contains(t, warns[0], "cannot accept connections")

	now = now.Add(acceptWarnEvery)
	fmt.Fprintln(w, "http: Accept error: accept tcp: too many open files; retrying in 5ms")
	require.Len(t, rec.at(slog.LevelWarn), 2, "ten seconds later: another")

	fmt.Fprintln(w, "http: panic serving 127.0.0.1:5555: boom")
	require.Len(t, rec.at(slog.LevelError), 1)
	fmt.Fprintln(w, "http: TLS handshake error from 127.0.0.1:5556: EOF")
	require.Len(t, rec.at(slog.LevelDebug), 1)
}

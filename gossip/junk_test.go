package gossip

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countHandler counts the records at warn level and above.
type countHandler struct{ n *atomic.Int64 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// TestJunkPacketsAreCountedNotLogged: a flood of junk at the gossip port
// (UDP and TCP) is counted, and the log gets a handful of lines at most.
func TestJunkPacketsAreCountedNotLogged(t *testing.T) {
	var lines atomic.Int64
	g := newMember(t, "a", func(c *Config) { c.Logger = slog.New(countHandler{&lines}) })
	addr := g.Addr()
	const packets = 300
	u, err := net.Dial("udp", addr)
	require.NoError(t, err)
	defer u.Close()
	for i := 0; i < packets; i++ {
		_, _ = u.Write([]byte("junk junk junk junk junk junk junk"))
	}
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n junk"))
		c.Close()
	}
	require.Eventually(t, func() bool { return g.Problems() >= packets/2 }, 10*time.Second, 20*time.Millisecond,
		"problems counted: %d", g.Problems())
	require.LessOrEqual(t, lines.Load(), int64(3), "junk flooded the log")
}

func TestSlogWriterWindow(t *testing.T) {
	var lines atomic.Int64
	now := time.Unix(0, 0)
	w := newSlogWriter(slog.New(countHandler{&lines}))
	w.now = func() time.Time { return now }
	for i := 0; i < 100; i++ {
		_, _ = w.Write([]byte("[ERR] memberlist: bad packet"))
	}
	require.Equal(t, int64(1), lines.Load())
	now = now.Add(logWindow)
	_, _ = w.Write([]byte("[WARN] memberlist: another"))
	require.Equal(t, int64(2), lines.Load())
	require.Equal(t, uint64(101), w.problems.Load())
	_, _ = w.Write([]byte("[INFO] memberlist: fine"))
	require.Equal(t, uint64(101), w.problems.Load(), "info is no problem")
}

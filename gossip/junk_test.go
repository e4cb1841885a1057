package gossip

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"strconv"
	"sync"
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

// TestStrangerStreamsDoNotStallMembers: a stranger on the LAN (no cluster
// secret) that holds as many gossip streams open as a node will take, from
// many addresses, claiming memberlist's 20 MB push/pull and holding it
// (some after almost 8 MiB of junk), reopening each stream the node closes
// a moment later, does not keep the members from pushing and pulling. (A
// flood of connection attempts that fills the kernel's accept queue is
// another attack, below the transport.) Before, all inbound
// streams shared one cap (128) and one read budget (32 MiB): the
// stranger's streams took both, and a member's push/pull was refused
// until memberlist's TCPTimeout freed a slot, which the stranger took
// again first.
func TestStrangerStreamsDoNotStallMembers(t *testing.T) {
	at := func(ip string) opt { return func(c *Config) { c.BindAddr = ip + ":0" } }
	a := newMember(t, "a", at("127.0.0.2"))
	b := newMember(t, "b", at("127.0.0.3"))
	n, err := a.Join(ctxT(t), []string{b.Addr()})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	waitState(t, a, 2, StateAlive)
	waitState(t, b, 2, StateAlive)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	var held atomic.Int64 // strangers' streams the node accepted and has not closed
	junkBytes := make([]byte, 8<<20)
	// hold opens streams from ip to addr for ever: each sends an encrypted
	// stream's header claiming 20 MB, then junk bytes of junk, then holds
	// the stream until the node closes it, and opens the next 100 ms
	// later.
	hold := func(ip, addr string, junk int) {
		defer wg.Done()
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		for ctx.Err() == nil {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			stopped := context.AfterFunc(ctx, func() { _ = c.Close() })
			hdr := []byte{10, 0, 0, 0, 0} // memberlist's encryptMsg and a length
			binary.BigEndian.PutUint32(hdr[1:], 20<<20)
			_, err = c.Write(hdr)
			if err == nil {
				_, err = c.Write(junkBytes[:junk])
			}
			if err == nil {
				held.Add(1)
				_, _ = c.Read(make([]byte, 1)) // until the node closes it
				held.Add(-1)
			}
			stopped()
			_ = c.Close()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	for i := range 24 { // 144 streams to b: past the node's 128
		for j := range 6 {
			junk := 0
			if i < 5 && j == 0 {
				junk = 8<<20 - 1 // held: memberlist waits for the rest
			}
			wg.Add(1)
			go hold("127.0.1."+strconv.Itoa(i+1), b.Addr(), junk)
		}
	}
	// 64: what the node takes from strangers (maxStrangerStreams); before
	// the fix 128.
	require.Eventually(t, func() bool { return held.Load() >= 64 }, waitFor, 10*time.Millisecond,
		"the stranger holds streams")
	for i := range 10 {
		n, err := a.Join(ctxT(t), []string{b.Addr()})
		require.NoError(t, err, "push/pull %d with the stranger's streams held", i)
		require.Equal(t, 1, n)
	}
	require.Eventually(t, func() bool {
		return a.MemberStates()["b"] == StateAlive && b.MemberStates()["a"] == StateAlive
	}, waitFor, 20*time.Millisecond, "each sees the other alive (a suspicion under load is refuted)")
}

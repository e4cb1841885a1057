package gossip

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/require"
)

func testLAN(t testing.TB) *lanTransport { return testLANWith(t, nil) }

// testLANWith binds a lanTransport on 127.0.0.1 that knows the members
// membersAt says.
func testLANWith(t testing.TB, membersAt func(netip.Addr) int) *lanTransport {
	t.Helper()
	mc := memberlist.DefaultLANConfig()
	mc.BindAddr, mc.BindPort = "127.0.0.1", 0
	mc.Logger = log.New(io.Discard, "", 0)
	lt, err := newLANTransport(mc, membersAt)
	require.NoError(t, err)
	require.Equal(t, lt.port, mc.BindPort, "port 0 is replaced by the bound port")
	require.Equal(t, lt.port, mc.AdvertisePort)
	t.Cleanup(func() { _ = lt.Shutdown() })
	return lt
}

func (t *lanTransport) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(t.port)) }

func recvPacket(t *testing.T, lt *lanTransport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-lt.PacketCh():
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no packet")
		return nil
	}
}

// TestLANTransportPackets: packets of every size up to the largest
// datagram arrive whole, from the sender's address, each in a buffer of
// its own length (not the 64 KiB read buffer), and a later packet does
// not overwrite an earlier one that memberlist still holds.
func TestLANTransportPackets(t *testing.T) {
	a, b := testLAN(t), testLAN(t)
	var got []*memberlist.Packet
	var sent [][]byte
	for i, n := range []int{1, 17, 1400, 9000, maxPacket - 28} { // 28: IPv4 and UDP headers
		msg := bytes.Repeat([]byte{byte(i + 1)}, n)
		sent = append(sent, msg)
		_, err := a.WriteTo(msg, b.addr())
		require.NoError(t, err)
		got = append(got, recvPacket(t, b))
	}
	for i, p := range got {
		require.Equal(t, sent[i], p.Buf, "packet %d", i)
		require.Equal(t, len(p.Buf), cap(p.Buf), "packet %d keeps only its own bytes", i)
		require.Equal(t, a.addr(), p.From.String())
		require.False(t, p.Timestamp.IsZero())
	}
	// WriteToAddress and a host name that needs resolving.
	_, err := a.WriteToAddress([]byte("by address"), memberlist.Address{Addr: b.addr(), Name: "b"})
	require.NoError(t, err)
	require.Equal(t, "by address", string(recvPacket(t, b).Buf))
	_, err = a.WriteTo([]byte("by name"), net.JoinHostPort("localhost", strconv.Itoa(b.port)))
	if err == nil { // an error: localhost resolved to ::1, which a's IPv4 socket cannot reach
		require.Equal(t, "by name", string(recvPacket(t, b).Buf))
	}
	_, err = a.WriteTo([]byte("x"), "not an address")
	require.Error(t, err)
}

// TestLANTransportStreams: a dialled stream is accepted and carries bytes
// both ways.
func TestLANTransportStreams(t *testing.T) {
	a, b := testLAN(t), testLAN(t)
	c, err := a.DialAddressTimeout(memberlist.Address{Addr: b.addr()}, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	var s net.Conn
	select {
	case s = <-b.StreamCh():
	case <-time.After(10 * time.Second):
		t.Fatal("no stream")
	}
	defer s.Close()
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(s, buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf))
	_, err = s.Write([]byte("pong"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, "pong", string(buf))
}

// TestLANTransportShutdown: Shutdown returns while a packet and a stream
// wait for a reader that never comes (memberlist has stopped), closes the
// stream, and can be called again; the sockets are closed.
func TestLANTransportShutdown(t *testing.T) {
	a, b := testLAN(t), testLAN(t)
	_, err := a.WriteTo([]byte("never read"), b.addr())
	require.NoError(t, err)
	c, err := a.DialTimeout(b.addr(), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- b.Shutdown() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	require.NoError(t, b.Shutdown())
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err, "the stream nobody took is closed")
	_, err = net.DialTimeout("tcp", b.addr(), time.Second)
	require.Error(t, err, "the listener is closed")
}

// TestLANTransportAdvertise: an explicit address wins (IPv4 in four
// bytes); without one, the bound address and port; a bad one is an
// error. Binding to something that is not an IP address is refused.
func TestLANTransportAdvertise(t *testing.T) {
	lt := testLAN(t)
	ip, port, err := lt.FinalAdvertiseAddr("10.1.2.3", 7946)
	require.NoError(t, err)
	require.Equal(t, net.IPv4(10, 1, 2, 3).To4(), ip)
	require.Equal(t, 7946, port)
	ip, port, err = lt.FinalAdvertiseAddr("", 0)
	require.NoError(t, err)
	require.Equal(t, net.IP{127, 0, 0, 1}, ip, "the bound IPv4 address in 4 bytes, as memberlist's NetTransport gives it")
	require.Equal(t, lt.port, port)
	_, _, err = lt.FinalAdvertiseAddr("not-an-ip", 1)
	require.Error(t, err)

	mc := memberlist.DefaultLANConfig()
	mc.BindAddr = "localhost"
	_, err = newLANTransport(mc, nil)
	require.ErrorContains(t, err, "not an IP address")
}

// TestLANTransportPortTaken: a fixed port another socket holds is an
// error, not a retry loop.
func TestLANTransportPortTaken(t *testing.T) {
	held := testLAN(t)
	mc := memberlist.DefaultLANConfig()
	mc.BindAddr, mc.BindPort = "127.0.0.1", held.port
	_, err := newLANTransport(mc, nil)
	require.ErrorIs(t, err, errAddrInUse)
}

// BenchmarkPacketReceive: what receiving one 300-byte gossip packet
// allocates, with memberlist's NetTransport and with lanTransport (B/op
// is the figure; ns/op includes the loopback send).
func BenchmarkPacketReceive(b *testing.B) {
	msg := bytes.Repeat([]byte{'g'}, 300)
	run := func(b *testing.B, tr memberlist.Transport, to string) {
		send := testLAN(b)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := send.WriteTo(msg, to); err != nil {
				b.Fatal(err)
			}
			<-tr.PacketCh()
		}
	}
	b.Run("memberlist", func(b *testing.B) {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"},
			Logger: log.New(io.Discard, "", 0)})
		if err != nil {
			b.Fatal(err)
		}
		defer nt.Shutdown()
		run(b, nt, net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort())))
	})
	b.Run("lan", func(b *testing.B) {
		lt := testLAN(b)
		run(b, lt, lt.addr())
	})
}

// TestLANTransportBoundsInboundStreams: what memberlist reads from inbound
// streams before it can tell a member from a stranger is bounded, and a
// stranger cannot spend the members' part. One stream reads at most
// maxStreamRead bytes, the open streams of one source where no member is
// known as much together, those of all such sources at most
// strangerReadBudget, while a member's address reads on; a closed stream
// gives its bytes back. Past streamsPerSource open streams from one
// stranger's address, or maxStrangerStreams from all, a new connection is
// closed unread, while members still get in; a stranger's stream that
// holds its request is cut after its read window, whatever deadline
// memberlist sets. Before, all streams shared one budget and one cap: a
// stranger that opened 4 streams of 8 MiB, or 128 idle ones, stalled the
// members' push/pulls until memberlist's TCPTimeout.
func TestLANTransportBoundsInboundStreams(t *testing.T) {
	member := netip.MustParseAddr("127.0.0.2")
	membersAt := func(ip netip.Addr) int {
		if ip == member {
			return 1
		}
		return 0
	}
	type stream struct{ client, server net.Conn }
	// from opens a stream to lt from the loopback address ip (an address
	// refused by the node gives a nil server side) and sends send bytes.
	from := func(t *testing.T, lt *lanTransport, ip string, send int) stream {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", lt.addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		var s net.Conn
		select {
		case s = <-lt.StreamCh():
		case <-time.After(10 * time.Second):
			t.Fatal("no stream")
		}
		t.Cleanup(func() { _ = s.Close() })
		require.Equal(t, c.LocalAddr().String(), s.RemoteAddr().String())
		go func() { _, _ = c.Write(make([]byte, send)) }() // ends when the client is closed
		return stream{c, s}
	}
	// refused: a connection from ip is closed by the node unread.
	refused := func(t *testing.T, lt *lanTransport, ip string) {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", lt.addr())
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF, "closed by the node, not left to time out")
		select {
		case s := <-lt.StreamCh():
			t.Fatalf("stream %v handed to memberlist past the cap", s.RemoteAddr())
		default:
		}
	}
	// drain reads what the server side lets memberlist read.
	drain := func(s net.Conn, limit int64) (int64, error) {
		_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
		return io.CopyN(io.Discard, s, limit)
	}
	stranger := func(i int) string { return "127.0.1." + strconv.Itoa(i) }
	tests := []struct {
		name string
		run  func(t *testing.T, lt *lanTransport)
	}{
		{"one stream stops at its share", func(t *testing.T, lt *lanTransport) {
			s := from(t, lt, stranger(1), maxStreamRead+1<<20)
			n, err := drain(s.server, maxStreamRead+1<<20)
			require.ErrorIs(t, err, errStreamBudget)
			require.EqualValues(t, maxStreamRead, n)
		}},
		{"a stranger's streams share one share and closing gives it back", func(t *testing.T, lt *lanTransport) {
			a := from(t, lt, stranger(1), maxStreamRead)
			n, err := drain(a.server, maxStreamRead)
			require.NoError(t, err)
			require.EqualValues(t, maxStreamRead, n)
			b := from(t, lt, stranger(1), 1<<20)
			n, err = drain(b.server, 1)
			require.ErrorIs(t, err, errStreamBudget, "the source's share is spent")
			require.Zero(t, n)
			other := from(t, lt, stranger(2), 1<<20)
			n, err = drain(other.server, 1<<20)
			require.NoError(t, err, "another source has a share of its own")
			require.EqualValues(t, 1<<20, n)
			require.NoError(t, a.server.Close())
			n, err = drain(b.server, 1<<20)
			require.NoError(t, err, "a closed stream gave its bytes back")
			require.EqualValues(t, 1<<20, n)
		}},
		{"strangers share one budget, members read on", func(t *testing.T, lt *lanTransport) {
			var full []stream
			for i := range strangerReadBudget / maxStreamRead {
				s := from(t, lt, stranger(i+1), maxStreamRead)
				n, err := drain(s.server, maxStreamRead)
				require.NoError(t, err)
				require.EqualValues(t, maxStreamRead, n)
				full = append(full, s)
			}
			late := from(t, lt, stranger(100), 1<<20)
			n, err := drain(late.server, 1)
			require.ErrorIs(t, err, errStreamBudget, "the strangers' budget is spent")
			require.Zero(t, n)
			m := from(t, lt, member.String(), maxStreamRead)
			n, err = drain(m.server, maxStreamRead)
			require.NoError(t, err, "a member's address is not counted with strangers")
			require.EqualValues(t, maxStreamRead, n)
			for _, s := range append(full, late, m) {
				require.NoError(t, s.server.Close())
			}
			lt.mu.Lock()
			defer lt.mu.Unlock()
			require.Zero(t, lt.strRead)
			require.Zero(t, lt.open)
			require.Empty(t, lt.sources)
		}},
		{"stream caps per source and for strangers leave members room", func(t *testing.T, lt *lanTransport) {
			for range streamsPerSource {
				from(t, lt, stranger(1), 0)
			}
			refused(t, lt, stranger(1))
			for i := streamsPerSource; i < maxStrangerStreams; i++ {
				from(t, lt, stranger(2+i/streamsPerSource), 0)
			}
			refused(t, lt, stranger(200))
			for range streamsPerMember {
				from(t, lt, member.String(), 0)
			}
			refused(t, lt, member.String())
		}},
		{"a stranger's held request is cut after its window", func(t *testing.T, lt *lanTransport) {
			lt.mu.Lock()
			lt.limits.strangerWindow = 200 * time.Millisecond
			lt.mu.Unlock()
			s := from(t, lt, stranger(1), 10)
			m := from(t, lt, member.String(), 10)
			for _, c := range []net.Conn{s.server, m.server} {
				require.NoError(t, c.SetDeadline(time.Now().Add(time.Minute)), "memberlist's TCPTimeout")
			}
			n, err := io.Copy(io.Discard, s.server)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.EqualValues(t, 10, n)
			_, err = m.client.Write([]byte("more"))
			require.NoError(t, err)
			_, err = io.ReadFull(m.server, make([]byte, 14))
			require.NoError(t, err, "a member's stream keeps memberlist's deadline")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, testLANWith(t, membersAt)) })
	}
}

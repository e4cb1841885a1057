package gossip

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"

	"github.com/rbee-project/rbee/internal/listen"
)

// Sizes and delays of lanTransport.
const (
	// bindRetries is how often a transport on port 0 is retried when the
	// port the kernel picked for TCP is taken for UDP (memberlist's own
	// figure).
	bindRetries = 10
	// maxPacket is the largest UDP datagram lanTransport reads: the most
	// an IPv4 UDP payload can be. memberlist keeps its own packets under
	// UDPBufferSize (1400 bytes on a LAN); the rest of the buffer only
	// catches a peer configured otherwise.
	maxPacket = 65535
	// udpReadBuffer is the socket receive buffer asked for, halved until
	// the kernel accepts it: room for a burst of gossip while the reader
	// is descheduled (memberlist's own figure).
	udpReadBuffer = 2 << 20
	// maxInboundStreams bounds the TCP streams accepted and not yet closed
	// (memberlist's own cap on concurrent push/pulls): memberlist handles
	// each in a goroutine of its own until its TCPTimeout.
	maxInboundStreams = 128
	// maxStrangerStreams bounds the open streams from sources where no
	// member is known (strangers, and nodes joining: memberlist cannot
	// tell them apart before it has read and decrypted a whole stream),
	// half of maxInboundStreams, so that the members always keep the
	// other half whatever strangers open.
	maxStrangerStreams = maxInboundStreams / 2
	// streamsPerSource bounds the open streams from one IP address where
	// no member is known, and streamsPerMember those from an address, per
	// member known there: a member pushes and pulls with one peer at a
	// time, plus a fallback probe and a settling push/pull now and then;
	// several members may share an address (nodes of one host).
	streamsPerSource = 4
	streamsPerMember = 8
	// maxStreamRead bounds the bytes one stream may read, and also what
	// the open streams of one source may read together (per member known
	// there, at least one share). memberlist reads an encrypted stream
	// whole, up to the 20 MB its header may claim, before it can tell
	// whether the sender has the key. A member's push/pull is its metadata
	// (512 B a member) and its state (node load reports, at most 1 MiB):
	// far below one share.
	maxStreamRead = 8 << 20
	// strangerReadBudget bounds what the open streams of all sources where
	// no member is known may read together: without a bound, a stranger's
	// streams that each claim and send 20 MB made a node hold 750 MB.
	// Members' streams are not counted in it, so strangers that spend it
	// delay joins (which retry) but not the members' push/pulls.
	strangerReadBudget = 32 << 20
	// strangerReadWindow is how long a stream from a source where no
	// member is known may take to deliver its request, from its accept
	// (memberlist's own deadline, TCPTimeout, is 10 s on a LAN): a joining
	// node sends its push/pull (about 100 bytes a member, 100 KB at 1,000
	// members) at once after it dials, which takes milliseconds on a LAN;
	// a stream that trickles or holds its bytes gives its slot back after
	// this long.
	strangerReadWindow = 2 * time.Second
)

// lanTransport is memberlist's transport for a real network: gossip over
// UDP and push/pull and fallback probes over TCP, both on one port. It
// does what memberlist's NetTransport does, except how a packet is
// received: NetTransport reads each datagram into a fresh 64 KiB buffer
// and hands that buffer on, so every packet (typically under 1,400 bytes)
// costs a zeroed 64 KiB allocation that memberlist holds until it has
// handled the packet. With a hundred members gossiping while they join,
// that garbage was about 5% of the machine's CPU in allocation and
// clearing, and more in collections. lanTransport reads into one buffer it
// reuses and hands on a copy of exactly the packet's bytes.
//
// Its methods are safe for concurrent use, as memberlist requires.
type lanTransport struct {
	udp     *net.UDPConn
	tcp     *net.TCPListener
	bindIP  net.IP // as configured (ParseIP's 16 bytes)
	port    int
	logger  *log.Logger
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	// membersAt says how many members this node knows at an IP address
	// (nil: none), so the streams from a member's address are counted
	// apart from strangers'.
	membersAt func(netip.Addr) int
	// limits are the bounds on inbound streams (see the constants);
	// tests shrink them.
	limits streamLimits

	mu        sync.Mutex // guards the fields below and limits
	open      int        // inbound streams not yet closed
	strangers int        // of which from sources where no member is known
	strRead   int64      // bytes read by the strangers' open streams
	sources   map[netip.Addr]*sourceUse
}

// streamLimits are lanTransport's bounds on its inbound streams.
type streamLimits struct {
	streams, strangerStreams int
	perSource, perMember     int
	streamRead, strangerRead int64
	strangerWindow           time.Duration
}

// defaultStreamLimits are the bounds of the constants above.
func defaultStreamLimits() streamLimits {
	return streamLimits{
		streams: maxInboundStreams, strangerStreams: maxStrangerStreams,
		perSource: streamsPerSource, perMember: streamsPerMember,
		streamRead: maxStreamRead, strangerRead: strangerReadBudget,
		strangerWindow: strangerReadWindow,
	}
}

// sourceUse is what the open inbound streams of one IP address hold.
type sourceUse struct {
	streams int
	read    int64
}

var _ memberlist.NodeAwareTransport = (*lanTransport)(nil)

// newLANTransport binds a lanTransport for mc as memberlist.Create would
// bind its own: TCP first, then UDP on the same port. On port 0 the
// kernel's TCP port may be taken for UDP, so it retries (bindRetries
// times) and then sets mc's bind and advertise ports to the port it got.
// membersAt (nil: none) tells the members known at an address, whose
// streams are bounded apart from strangers' (see the constants).
func newLANTransport(mc *memberlist.Config, membersAt func(netip.Addr) int) (*lanTransport, error) {
	ip := net.ParseIP(mc.BindAddr)
	if ip == nil {
		return nil, fmt.Errorf("bind: %q is not an IP address", mc.BindAddr)
	}
	logger := mc.Logger
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	tries := 1
	if mc.BindPort == 0 {
		tries = bindRetries
	}
	var err error
	for range tries {
		var t *lanTransport
		if t, err = bindLAN(ip, mc.BindPort, logger); err == nil {
			if mc.BindPort == 0 {
				mc.BindPort, mc.AdvertisePort = t.port, t.port
			}
			t.membersAt = membersAt
			t.start()
			return t, nil
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	return nil, fmt.Errorf("bind: %w", err)
}

// errAddrInUse marks a bind that failed because the port was taken.
var errAddrInUse = errors.New("address already in use")

func bindLAN(ip net.IP, port int, logger *log.Logger) (*lanTransport, error) {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, wrapBind("TCP", ip, port, err)
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		_ = tcp.Close()
		return nil, wrapBind("UDP", ip, port, err)
	}
	for size := udpReadBuffer; size > 0; size /= 2 {
		if err = udp.SetReadBuffer(size); err == nil {
			break
		}
	}
	if err != nil {
		_ = tcp.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("UDP receive buffer: %w", err)
	}
	t := &lanTransport{udp: udp, tcp: tcp, bindIP: ip, port: port, logger: logger,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{}),
		limits: defaultStreamLimits(), sources: map[netip.Addr]*sourceUse{}}
	return t, nil
}

func wrapBind(proto string, ip net.IP, port int, err error) error {
	if strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%s on %s port %d: %w: %w", proto, ip, port, errAddrInUse, err)
	}
	return fmt.Errorf("%s on %s port %d: %w", proto, ip, port, err)
}

func (t *lanTransport) start() {
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
}

// readPackets hands each datagram to memberlist as a copy of its bytes,
// read through one reused buffer, until Shutdown.
func (t *lanTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		ts := time.Now()
		if err != nil {
			if t.closed() {
				return
			}
			t.logger.Printf("[ERR] memberlist: Error reading UDP packet: %v", err)
			continue
		}
		if n < 1 {
			t.logger.Printf("[ERR] memberlist: UDP packet too short (%d bytes) %s", n, from)
			continue
		}
		own := make([]byte, n)
		copy(own, buf)
		p := &memberlist.Packet{Buf: own, From: net.UDPAddrFromAddrPort(from), Timestamp: ts}
		select {
		case t.packets <- p:
		case <-t.done:
			return
		}
	}
}

// acceptStreams hands accepted TCP connections to memberlist until
// Shutdown, backing off after failed accepts. A connection past the
// bounds on inbound streams (admit) is closed unread.
func (t *lanTransport) acceptStreams() {
	defer t.wg.Done()
	for {
		c, err := listen.Accept(t.tcp, t.done, func(err error, _ time.Duration) {
			t.logger.Printf("[ERR] memberlist: Error accepting TCP connection: %v", err)
		})
		if err != nil {
			return
		}
		bc, why := t.admit(c)
		if bc == nil {
			t.logger.Printf("[DEBUG] memberlist: refusing TCP connection from %s: %s", c.RemoteAddr(), why)
			_ = c.Close()
			continue
		}
		select {
		case t.streams <- bc:
		case <-t.done:
			_ = bc.Close()
			return
		}
	}
}

// admit counts c among the open inbound streams and wraps it, or says
// which bound it is past. A stream from an address where k members are
// known may be one of streamsPerMember×k there; any other source (a
// stranger or a joining node) one of streamsPerSource there and of
// maxStrangerStreams in all, with strangerReadWindow to deliver its
// request.
func (t *lanTransport) admit(c net.Conn) (*budgetConn, string) {
	src := remoteIP(c)
	members := 0
	if t.membersAt != nil && src.IsValid() {
		members = t.membersAt(src)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.limits
	u := t.sources[src]
	if u == nil {
		u = &sourceUse{}
	}
	switch {
	case t.open >= l.streams:
		return nil, fmt.Sprintf("%d streams open", t.open)
	case members > 0 && u.streams >= l.perMember*members:
		return nil, fmt.Sprintf("%d streams open from %d members there", u.streams, members)
	case members == 0 && u.streams >= l.perSource:
		return nil, fmt.Sprintf("%d streams open from there (no member known there)", u.streams)
	case members == 0 && t.strangers >= l.strangerStreams:
		return nil, fmt.Sprintf("%d streams open from addresses where no member is known", t.strangers)
	}
	t.sources[src] = u
	u.streams++
	t.open++
	bc := &budgetConn{Conn: c, t: t, src: src, use: u, shares: int64(max(members, 1)), stranger: members == 0}
	if bc.stranger {
		t.strangers++
		bc.readBy = time.Now().Add(l.strangerWindow)
		_ = c.SetReadDeadline(bc.readBy)
	}
	return bc, ""
}

// remoteIP is c's remote IP address (unmapped; invalid when unknown).
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// errStreamBudget fails the read of an inbound stream past what it, its
// source or (for a stranger) all strangers' streams may read.
var errStreamBudget = errors.New("inbound gossip stream exceeds the read budget")

// budgetConn is an accepted stream that counts what it reads against its
// source's share and, from a source where no member is known, against the
// strangers' budget, and gives its slot and its bytes back when closed.
type budgetConn struct {
	net.Conn
	t        *lanTransport
	src      netip.Addr
	use      *sourceUse
	shares   int64     // maxStreamRead shares of its source: the members there, at least 1
	stranger bool      // no member is known at src
	readBy   time.Time // a stranger's request must be read by then
	read     int64     // counted against use and t.strRead; guarded by t.mu
	closed   bool      // guarded by t.mu
}

// left is how many bytes c may still read. Called with t.mu held.
func (c *budgetConn) left() int64 {
	l := c.t.limits
	n := min(l.streamRead-c.read, l.streamRead*c.shares-c.use.read)
	if c.stranger {
		n = min(n, l.strangerRead-c.t.strRead)
	}
	return n
}

func (c *budgetConn) Read(p []byte) (int, error) {
	c.t.mu.Lock()
	left := c.left()
	c.t.mu.Unlock()
	if left <= 0 {
		return 0, errStreamBudget
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.t.mu.Lock()
	if !c.closed {
		c.count(int64(n))
	}
	c.t.mu.Unlock()
	return n, err
}

// count adds n bytes read to c's, its source's and the strangers' use.
// Called with t.mu held.
func (c *budgetConn) count(n int64) {
	c.read += n
	c.use.read += n
	if c.stranger {
		c.t.strRead += n
	}
}

// SetDeadline sets the write deadline and the read deadline, the latter
// no later than a stranger's read window allows.
func (c *budgetConn) SetDeadline(d time.Time) error {
	if err := c.Conn.SetWriteDeadline(d); err != nil {
		return err
	}
	return c.SetReadDeadline(d)
}

// SetReadDeadline sets the read deadline, no later than a stranger's read
// window allows.
func (c *budgetConn) SetReadDeadline(d time.Time) error {
	if !c.readBy.IsZero() && (d.IsZero() || d.After(c.readBy)) {
		d = c.readBy
	}
	return c.Conn.SetReadDeadline(d)
}

func (c *budgetConn) Close() error {
	err := c.Conn.Close()
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.count(-c.read)
		c.use.streams--
		t.open--
		if c.stranger {
			t.strangers--
		}
		if c.use.streams == 0 {
			delete(t.sources, c.src)
		}
	}
	return err
}

func (t *lanTransport) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// FinalAdvertiseAddr is the address other members reach this one at: ip
// and port when ip is set (an IPv4 one in 4 bytes); else the first private
// address of the machine when bound to 0.0.0.0, or the TCP listener's
// address. The bytes are NetTransport's: memberlist compares a member's
// address byte for byte, so another length would make peers that knew
// this node from an older build refuse its alive messages as a conflict.
func (t *lanTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("failed to parse advertise address %q", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	if !t.bindIP.Equal(net.IPv4zero) {
		return t.tcp.Addr().(*net.TCPAddr).IP, t.port, nil
	}
	priv, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("failed to get interface addresses: %w", err)
	}
	a := net.ParseIP(priv)
	if a == nil {
		return nil, 0, errors.New("no private IP address found, and explicit IP not provided")
	}
	return a, t.port, nil
}

// WriteTo sends one packet to addr ("host:port").
func (t *lanTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		_, err = t.udp.WriteToUDPAddrPort(b, ap)
		return time.Now(), err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

// WriteToAddress sends one packet to a.Addr.
func (t *lanTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh delivers the packets received.
func (t *lanTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout opens a TCP stream to addr, from the bind address when it
// is not a wildcard: the peer tells a member's streams from a stranger's
// by their source address (admit), which must then be the address this
// member advertises, not the one the kernel would pick (on loopback,
// 127.0.0.1 whatever the bind address).
func (t *lanTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if !t.bindIP.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: t.bindIP}
	}
	return d.Dial("tcp", addr)
}

// DialAddressTimeout opens a TCP stream to a.Addr.
func (t *lanTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh delivers the TCP streams accepted.
func (t *lanTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown closes both sockets and waits for the reader and the acceptor.
// A packet or stream that nobody takes any more is dropped (a stream is
// closed), so Shutdown never waits on memberlist.
func (t *lanTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		_ = t.tcp.Close()
		_ = t.udp.Close()
	})
	t.wg.Wait()
	return nil
}

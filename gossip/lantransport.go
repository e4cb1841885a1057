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
	"sync/atomic"
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
	// each in a goroutine of its own until its TCPTimeout, and a stranger
	// needs no key to open one.
	maxInboundStreams = 128
	// streamReadBudget bounds the bytes all open inbound streams may have
	// read together, and maxStreamRead the bytes of one stream. memberlist
	// reads an encrypted stream whole, up to the 20 MB its header may
	// claim, before it can tell whether the sender has the key: without a
	// bound, a stranger's streams that each claim and send 20 MB made a
	// node hold 750 MB. A member's push/pull is its metadata (512 B a
	// member) and its state (node load reports, at most 1 MiB): far below
	// one stream's share.
	streamReadBudget = 32 << 20
	maxStreamRead    = 8 << 20
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

	// slots holds one token per open inbound stream (maxInboundStreams);
	// budget is what open inbound streams may still read together
	// (streamReadBudget), perStream what one may read (maxStreamRead).
	slots     chan struct{}
	budget    atomic.Int64
	perStream int64
}

var _ memberlist.NodeAwareTransport = (*lanTransport)(nil)

// newLANTransport binds a lanTransport for mc as memberlist.Create would
// bind its own: TCP first, then UDP on the same port. On port 0 the
// kernel's TCP port may be taken for UDP, so it retries (bindRetries
// times) and then sets mc's bind and advertise ports to the port it got.
func newLANTransport(mc *memberlist.Config) (*lanTransport, error) {
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
		slots: make(chan struct{}, maxInboundStreams), perStream: maxStreamRead}
	t.budget.Store(streamReadBudget)
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
// Shutdown, backing off after failed accepts.
func (t *lanTransport) acceptStreams() {
	defer t.wg.Done()
	for {
		c, err := listen.Accept(t.tcp, t.done, func(err error, _ time.Duration) {
			t.logger.Printf("[ERR] memberlist: Error accepting TCP connection: %v", err)
		})
		if err != nil {
			return
		}
		select {
		case t.slots <- struct{}{}:
		default:
			t.logger.Printf("[DEBUG] memberlist: refusing TCP connection from %s: %d streams open", c.RemoteAddr(), cap(t.slots))
			_ = c.Close()
			continue
		}
		bc := &budgetConn{Conn: c, t: t}
		select {
		case t.streams <- bc:
		case <-t.done:
			_ = bc.Close()
			return
		}
	}
}

// errStreamBudget fails the read of an inbound stream past its share of
// the transport's read budget.
var errStreamBudget = errors.New("inbound gossip stream exceeds the read budget")

// budgetConn is an accepted stream that counts what it reads against its
// transport's budget and gives its slot and its bytes back when closed.
type budgetConn struct {
	net.Conn
	t      *lanTransport
	mu     sync.Mutex
	read   int64 // counted against t.budget
	closed bool
}

func (c *budgetConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	left := min(c.t.budget.Load(), c.t.perStream-c.read)
	c.mu.Unlock()
	if left <= 0 {
		return 0, errStreamBudget
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if !c.closed {
		c.read += int64(n)
		c.t.budget.Add(-int64(n))
	}
	c.mu.Unlock()
	return n, err
}

func (c *budgetConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.t.budget.Add(c.read)
		<-c.t.slots
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

// DialTimeout opens a TCP stream to addr.
func (t *lanTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
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

package gossip

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport wraps memberlist's transport and counts the bytes this
// member sends: packets (probes, gossip, broadcasts) and stream writes
// (push/pull, fallback probes), in both the streams it dials and those it
// accepts. It is what SentBytes reports: the gossip load of one member.
type countingTransport struct {
	memberlist.NodeAwareTransport
	sent    *atomic.Uint64
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
}

func newCountingTransport(t memberlist.NodeAwareTransport, sent *atomic.Uint64) *countingTransport {
	c := &countingTransport{NodeAwareTransport: t, sent: sent, streams: make(chan net.Conn), done: make(chan struct{})}
	go c.relayStreams()
	return c
}

// relayStreams hands accepted streams on, wrapped, until Shutdown.
func (c *countingTransport) relayStreams() {
	in := c.NodeAwareTransport.StreamCh()
	for {
		select {
		case <-c.done:
			return
		case conn := <-in:
			select {
			case c.streams <- &countingConn{Conn: conn, sent: c.sent}:
			case <-c.done:
				_ = conn.Close()
				return
			}
		}
	}
}

func (c *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t, err := c.NodeAwareTransport.WriteTo(b, addr)
	if err == nil {
		c.sent.Add(uint64(len(b)))
	}
	return t, err
}

func (c *countingTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	t, err := c.NodeAwareTransport.WriteToAddress(b, addr)
	if err == nil {
		c.sent.Add(uint64(len(b)))
	}
	return t, err
}

func (c *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	conn, err := c.NodeAwareTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, sent: c.sent}, nil
}

func (c *countingTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	conn, err := c.NodeAwareTransport.DialAddressTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, sent: c.sent}, nil
}

func (c *countingTransport) StreamCh() <-chan net.Conn { return c.streams }

// Shutdown stops relaying and shuts the inner transport down. Its TCP
// listener may still be handing over a stream it accepted a moment ago,
// and with nobody reading the hand-over it would block, and the inner
// Shutdown wait for it, for ever: so until that Shutdown returns, streams
// still handed over are closed.
func (c *countingTransport) Shutdown() error {
	c.once.Do(func() { close(c.done) })
	stop, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		in := c.NodeAwareTransport.StreamCh()
		for {
			select {
			case conn := <-in:
				_ = conn.Close()
			case <-stop:
				return
			}
		}
	}()
	err := c.NodeAwareTransport.Shutdown()
	close(stop)
	<-drained
	return err
}

// countingConn counts what is written to a stream.
type countingConn struct {
	net.Conn
	sent *atomic.Uint64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.sent.Add(uint64(n))
	return n, err
}

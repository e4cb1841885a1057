//go:build unix

package spinconn

import (
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
)

// polls: Wrap wraps TCP connections on this platform.
const polls = true

// conn is a TCP connection whose reads poll before they sleep.
type conn struct {
	*net.TCPConn
	rc   syscall.RawConn
	spin time.Duration
	// The running read's buffer and the last poll's result (one read at
	// a time, as for any net.Conn), and pollFd bound once: a closure made
	// per poll would allocate on every one of them.
	buf   []byte
	n     int
	errno error
	poll  func(fd uintptr) bool
}

// pollFd reads into c.buf without blocking; it never asks RawConn.Read
// to wait.
func (c *conn) pollFd(fd uintptr) bool {
	c.n, c.errno = syscall.Read(int(fd), c.buf)
	return true
}

func wrap(c net.Conn, spin time.Duration) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	c2 := &conn{TCPConn: tc, rc: rc, spin: spin}
	c2.poll = c2.pollFd
	return c2
}

// Read polls the socket for up to c.spin, then reads as the wrapped
// connection does (sleeping in the poller until data, a deadline or
// Close).
func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return c.TCPConn.Read(p)
	}
	c.buf = p
	defer func() { c.buf = nil }()
	var start time.Time
	for polls := 1; ; polls++ {
		// RawConn.Read checks the deadline and Close before it calls
		// pollFd.
		if err := c.rc.Read(c.poll); err != nil {
			return 0, err
		}
		n, errno := c.n, c.errno
		switch {
		case errno == nil && n > 0:
			return n, nil
		case errno == nil:
			return 0, io.EOF
		case errno == syscall.EINTR:
			continue
		case errno != syscall.EAGAIN:
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
		}
		if polls%pollsPerCheck != 0 {
			continue
		}
		if start.IsZero() {
			start = time.Now()
		} else if time.Since(start) >= c.spin {
			return c.TCPConn.Read(p)
		}
		runtime.Gosched()
	}
}

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
	return &conn{TCPConn: tc, rc: rc, spin: spin}
}

// Read polls the socket for up to c.spin, then reads as the wrapped
// connection does (sleeping in the poller until data, a deadline or
// Close).
func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return c.TCPConn.Read(p)
	}
	var start time.Time
	for polls := 1; ; polls++ {
		var n int
		var errno error
		// RawConn.Read checks the deadline and Close before it calls
		// the function, which never asks it to wait.
		if err := c.rc.Read(func(fd uintptr) bool {
			n, errno = syscall.Read(int(fd), p)
			return true
		}); err != nil {
			return 0, err
		}
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

// Unwrap returns the TCP connection.
func (c *conn) Unwrap() *net.TCPConn { return c.TCPConn }

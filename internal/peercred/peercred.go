// Package peercred finds the local user behind a loopback TCP connection.
//
// A node's HTTP API serves clients on its own machine without a credential
// (inference, status). To keep one local user's jobs from another's, the API
// needs to know which user opened a connection. On Linux the kernel lists
// every TCP socket with its owner's uid in /proc/net/tcp and /proc/net/tcp6
// (what identd reads); the client's end of a loopback connection is the entry
// whose local address is the connection's remote address and whose remote
// address is the server's local address.
//
// On Linux a lookup asks the kernel's sock_diag netlink interface for the
// one socket (a hash lookup, as ss does), and reads procfs only when that
// gives no answer. Lookups are safe for concurrent use. Elsewhere, or when
// the entry is gone or is a mini socket without an owner (the client already
// closed), the uid is unknown.
package peercred

import (
	"errors"
	"net"
	"time"
)

// ErrUnknown: the connection's owner could not be found (not loopback, not
// Linux, or the socket is gone).
var ErrUnknown = errors.New("peercred: owner of the connection unknown")

// LoopbackUID returns the uid of the process that owns the client end of a
// loopback TCP connection, given the server's local and remote addresses of
// that connection (net.Conn.LocalAddr, RemoteAddr).
func LoopbackUID(local, remote net.Addr) (uint32, error) {
	l, ok1 := local.(*net.TCPAddr)
	r, ok2 := remote.(*net.TCPAddr)
	if !ok1 || !ok2 || !r.IP.IsLoopback() {
		return 0, ErrUnknown
	}
	return lookup(l, r)
}

// ServerUID returns the uid of the process that owns the server end of a
// loopback TCP connection this process dialled, given the connection's
// LocalAddr and RemoteAddr: who is listening there, as the kernel records
// it, not what the server says.
func ServerUID(local, remote net.Addr) (uint32, error) {
	// The server's end is the entry whose local address is our remote
	// one: LoopbackUID with the roles swapped. A server that has not
	// accepted the connection yet may have no owner to report (a socket
	// without a file, which older kernels list as root's): ask again for
	// a moment before giving up.
	r, ok := remote.(*net.TCPAddr)
	for try := 0; ; try++ {
		uid, err := LoopbackUID(local, remote)
		if !errors.Is(err, ErrUnknown) || !ok || !r.IP.IsLoopback() || !Supported() || try == serverRetries {
			return uid, err
		}
		time.Sleep(serverRetryWait)
	}
}

// A listener accepts within milliseconds unless its process is stuck:
// serverRetries × serverRetryWait bounds the wait (100 ms).
const (
	serverRetries   = 10
	serverRetryWait = 10 * time.Millisecond
)

// Supported reports whether this platform can find a connection's owner
// (Linux, through sock_diag or procfs).
func Supported() bool { return supported }

//go:build !unix

package spinconn

import (
	"net"
	"time"
)

// polls: Wrap leaves connections as they are on this platform.
const polls = false

func wrap(c net.Conn, _ time.Duration) net.Conn { return c }

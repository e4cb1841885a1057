//go:build !unix

package spinconn

import (
	"net"
	"time"
)

func wrap(c net.Conn, _ time.Duration) net.Conn { return c }

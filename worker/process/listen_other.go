//go:build !linux

package process

// exposedListener is not known outside Linux (no /proc/net/tcp).
func exposedListener(port, pgid int) (addr string, found bool) { return "", false }

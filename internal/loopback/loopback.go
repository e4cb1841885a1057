// Package loopback tells whether an HTTP request comes from this machine.
package loopback

import (
	"net"
	"net/http"
)

// Request reports whether r's remote address is a loopback address (a
// client on this machine). A RemoteAddr that does not parse is not.
func Request(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

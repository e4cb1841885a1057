// Package loopback tells whether a host, a listen address, a URL or an
// HTTP request's client is on this machine: "localhost" (and, as RFC 6761
// reserves them, names under ".localhost") or a loopback IP. Names are not
// resolved.
package loopback

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Host reports whether host (a name or an IP, without a port) is this
// machine.
func Host(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// HostPort reports whether a host:port (a listen address) is on loopback
// only. An address that does not parse, or has no host (all interfaces),
// is not.
func HostPort(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	return err == nil && host != "" && Host(host)
}

// URL reports whether a URL points at this machine.
func URL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Hostname() != "" && Host(u.Hostname())
}

// Request reports whether r's remote address is a loopback address (a
// client on this machine). A RemoteAddr that does not parse, or is a
// name, is not.
func Request(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

package auth

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/loopback"
)

// Errors of the browser checks' configuration.
var (
	// ErrBadOrigin: a --cors-origin is not an origin a browser sends
	// (scheme://host[:port]), or is one that any website can take on.
	ErrBadOrigin = errors.New("not a browser origin")
)

// CheckOrigin reports whether o may be a --cors-origin: a serialized
// origin, http:// or https:// (or a browser extension's, e.g.
// chrome-extension://<id>) and a host with an optional port (a trailing
// slash is tolerated), nothing else. "null" is refused, as any website can
// send it (a sandboxed frame, a data: URL), and so is "*", which the guard
// does not treat as a pattern.
func CheckOrigin(o string) error {
	switch strings.TrimSpace(o) {
	case "null":
		return fmt.Errorf("%w: %q is the origin of sandboxed frames, data: URLs and files, which any website can make a browser send", ErrBadOrigin, o)
	case "*":
		return fmt.Errorf("%w: %q would let every website act as this browser's user; name each origin (e.g. http://chat.lan:3000)", ErrBadOrigin, o)
	}
	u, err := url.Parse(strings.TrimSuffix(o, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && !strings.HasSuffix(u.Scheme, "-extension")) || u.Host == "" || u.Hostname() == "" ||
		u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" || !originHost(u.Hostname()) {
		return fmt.Errorf("%w: %q: want scheme://host[:port], e.g. http://chat.lan:3000 or chrome-extension://<id> (no path, no user, no wildcard)", ErrBadOrigin, o)
	}
	return nil
}

// originHost reports whether h is an IP address or a DNS name (no
// wildcard: an origin names one site).
func originHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	for _, c := range []byte(h) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// sameOrigin reports whether a --cors-origin entry names the origin a
// browser sent: scheme and host without regard to case, a trailing slash
// ignored, and the scheme's default port written or not (a browser never
// writes http's :80 or https's :443).
func sameOrigin(entry, origin string) bool {
	canon := func(o string) string {
		o = strings.TrimRight(strings.TrimSpace(o), "/")
		u, err := url.Parse(o)
		if err != nil || u.Host == "" {
			return strings.ToLower(o)
		}
		host := strings.ToLower(u.Host)
		if (u.Scheme == "http" && u.Port() == "80") || (u.Scheme == "https" && u.Port() == "443") {
			host = strings.TrimSuffix(host, ":"+u.Port())
		}
		return u.Scheme + "://" + host
	}
	return canon(entry) == canon(origin)
}

// HostAllowed reports whether a request's Host names this node: a loopback
// or own interface address, localhost (and *.localhost, which browsers
// resolve to loopback themselves), the node's name, the machine's hostname,
// or an --allowed-host entry. Anything else is what DNS rebinding sends.
func (g *Guard) HostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if loopback.Host(host) {
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		return g.ownIP(ip)
	}
	names, _ := g.identity()
	for _, h := range names {
		if host == h {
			return true
		}
	}
	return false
}

// hostIDRefresh: the machine's hostname and interface addresses are read
// at most this often for the Host check, not on every request (DHCP and a
// renamed host are picked up within it).
const hostIDRefresh = 10 * time.Second

// hostID caches what the Host check compares with; safe for concurrent use.
type hostID struct {
	mu    sync.Mutex
	at    time.Time
	names []string // lower case: node name, hostname (and its short form), --allowed-host names
	ips   []net.IP // the machine's interface addresses, --allowed-host addresses
}

// identity returns the cached names and addresses, reading them again when
// they are older than hostIDRefresh.
func (g *Guard) identity() ([]string, []net.IP) {
	c := &g.host
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < hostIDRefresh {
		return c.names, c.ips
	}
	names := []string{strings.ToLower(g.cfg.Name)}
	if h, err := os.Hostname(); err == nil && h != "" {
		h = strings.ToLower(h)
		names = append(names, h)
		if short, _, ok := strings.Cut(h, "."); ok {
			names = append(names, short)
		}
	}
	var ips []net.IP
	for _, a := range g.cfg.AllowedHosts {
		a = strings.ToLower(strings.TrimSpace(a))
		if h, _, err := net.SplitHostPort(a); err == nil {
			a = h
		}
		a = strings.TrimSuffix(strings.Trim(a, "[]"), ".")
		if ip := net.ParseIP(a); ip != nil {
			ips = append(ips, ip)
			continue
		}
		names = append(names, a)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if in, ok := a.(*net.IPNet); ok {
				ips = append(ips, in.IP)
			}
		}
	}
	c.names, c.ips, c.at = names, ips, time.Now()
	return names, ips
}

// ownIP reports whether ip is an address of this machine, of one of the
// node's listeners, or an --allowed-host address.
func (g *Guard) ownIP(ip net.IP) bool {
	if g.cfg.Node != nil {
		for _, a := range g.cfg.Node.ListenAddrs() {
			if ta, ok := a.(*net.TCPAddr); ok && ta.IP.Equal(ip) {
				return true
			}
		}
	}
	_, ips := g.identity()
	for _, own := range ips {
		if own.Equal(ip) {
			return true
		}
	}
	return false
}

// OriginAllowed reports whether a browser Origin may use the API: the
// node's own origin (the page it serves, host being the request's Host) or
// a --cors-origin entry.
func (g *Guard) OriginAllowed(origin, host string) bool {
	for _, o := range g.cfg.CORSOrigins {
		if sameOrigin(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, host) && g.HostAllowed(u.Host)
}

// Package redirectguard keeps the redirects of an HTTP download away from
// this machine and its LAN: a server (a hostile Hub, a mirror, a release
// server) answers a GET with a redirect, and the client must not follow it
// to a service that only this node can reach (a router's admin page, a
// cloud metadata address, another daemon on loopback).
//
// The rule: a request chain (a request and the redirects it follows) may
// reach a loopback, link-local, private (RFC 1918, ULA), shared (RFC 6598),
// unspecified, "this network", broadcast or multicast address only on the
// host it started at (its origin: the URL the node's configuration or the
// user named, such as HF_ENDPOINT=http://192.168.1.5:8080, which may then
// redirect to itself on any port). Any other host must be a public
// address. The check runs when a connection is dialled, on the address it
// is dialled to (net.Dialer.Control), so a name that resolves to a public
// address when checked and to a private one when used (DNS rebinding) gets
// no further than a name that always resolved so. Redirects must also stay
// on http(s) and may not go from https to http.
//
// Limits: through an HTTP proxy (from the environment) the proxy resolves
// names, so only IP literals are checked; a kept-alive connection is reused
// without a new dial, so a chain may reach a private host another chain of
// the same transport started at (by the same name and port) while that
// connection lives.
package redirectguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrForbidden is the error (wrapped, with the host and the rule) of a
// request or redirect the guard refuses.
var ErrForbidden = errors.New("redirect refused")

const (
	// dialTimeout and keepAlive are http.DefaultTransport's: the guard
	// changes which addresses may be dialled, not how.
	dialTimeout = 30 * time.Second
	keepAlive   = 30 * time.Second
)

// special lists the address blocks no chain reaches except on its origin,
// besides what netip.Addr's own predicates name (loopback, private,
// link-local, unspecified, multicast).
var special = [...]netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network": Linux dials 0.x as a local address
	netip.MustParsePrefix("100.64.0.0/10"),      // shared address space (carrier NAT, VPN meshes)
	netip.MustParsePrefix("255.255.255.255/32"), // limited broadcast
}

// Special reports whether ip is an address of this machine or its local
// networks (see the package comment); IPv4-mapped IPv6 addresses are
// judged as the IPv4 address they carry.
func Special(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() || ip.IsMulticast() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range special {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

type originKey struct{}

// WithOrigin marks ctx with the URL a request chain starts at: requests
// made with the returned context (and the redirects the http.Client
// follows for them) may reach a special address on that URL's host only.
// Without an origin every host must be public.
func WithOrigin(ctx context.Context, origin *url.URL) context.Context {
	return context.WithValue(ctx, originKey{}, origin.Hostname())
}

func originOf(ctx context.Context) string {
	s, _ := ctx.Value(originKey{}).(string)
	return s
}

// sameHost reports whether two URL hosts (without port) name the same
// host: equal names (case-insensitive) or equal IP addresses.
func sameHost(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	if strings.EqualFold(a, b) {
		return true
	}
	x, errx := netip.ParseAddr(a)
	y, erry := netip.ParseAddr(b)
	return errx == nil && erry == nil && x.Unmap() == y.Unmap()
}

// refuse is the error for a host (host:port) whose address ip is special.
func refuse(hostport string, ip netip.Addr, origin string) error {
	if origin == "" {
		return fmt.Errorf("%w: %s is a local or private address (%s)", ErrForbidden, hostport, ip)
	}
	return fmt.Errorf("%w: %s is a local or private address (%s) of a host other than %s, where the request started", ErrForbidden, hostport, ip, origin)
}

// CheckRedirect is an http.Client.CheckRedirect rule: a redirect must go
// to http or https, never from https to http, and not to an IP literal
// that is special on a host other than the chain's origin (the dial check
// catches names; this one also catches a kept-alive connection). It does
// not bound the number of redirects: the caller's own rule does.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	switch req.URL.Scheme {
	case "http", "https":
	default:
		return fmt.Errorf("%w: to a URL that is not http(s)", ErrForbidden)
	}
	if req.URL.Scheme == "http" && via[len(via)-1].URL.Scheme == "https" {
		return fmt.Errorf("%w: from https to plain http (%s)", ErrForbidden, req.URL.Host)
	}
	origin := via[0].URL.Hostname()
	if ip, err := netip.ParseAddr(req.URL.Hostname()); err == nil && Special(ip) && !sameHost(origin, req.URL.Hostname()) {
		return refuse(req.URL.Host, ip, origin)
	}
	return nil
}

// Transport returns a copy of base (nil: http.DefaultTransport) whose
// connections obey the rule: a dial to a host other than the origin in the
// request's context (WithOrigin) fails with ErrForbidden when the address
// it would connect to is special. When base has no dial function of its
// own the address is checked before the connection is made; when it has
// one (DialContext, DialTLSContext) the connection it returns is checked
// and closed before a byte is sent on it.
func Transport(base *http.Transport) *http.Transport {
	own := base == nil
	if own {
		base = http.DefaultTransport.(*http.Transport)
	}
	t := base.Clone()
	g := &guard{inner: t.DialContext, proxies: map[string]bool{}}
	if own || g.inner == nil {
		g.inner = nil
		g.dialer = net.Dialer{Timeout: dialTimeout, KeepAlive: keepAlive}
	}
	t.DialContext = g.dial
	if tlsDial := t.DialTLSContext; tlsDial != nil {
		t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if g.exempt(ctx, addr) {
				return tlsDial(ctx, network, addr)
			}
			return checkConn(tlsDial(ctx, network, addr))(addr, originOf(ctx))
		}
	}
	if proxy := t.Proxy; proxy != nil {
		t.Proxy = func(req *http.Request) (*url.URL, error) {
			u, err := proxy(req)
			if err != nil || u == nil {
				return u, err
			}
			// The proxy resolves names: only an IP literal can be judged.
			origin := originOf(req.Context())
			if ip, perr := netip.ParseAddr(req.URL.Hostname()); perr == nil && Special(ip) && !sameHost(origin, req.URL.Hostname()) {
				return nil, refuse(req.URL.Host, ip, origin)
			}
			g.addProxy(canonicalAddr(u))
			return u, nil
		}
	}
	return t
}

// guard holds the dial rule of one transport.
type guard struct {
	dialer net.Dialer // when inner is nil
	inner  func(ctx context.Context, network, addr string) (net.Conn, error)

	mu      sync.Mutex
	proxies map[string]bool // host:port of the proxies the transport uses
}

func (g *guard) addProxy(addr string) {
	g.mu.Lock()
	g.proxies[addr] = true
	g.mu.Unlock()
}

// exempt reports whether a dial to addr (host:port) needs no check: it
// goes to the chain's origin host, or to a proxy the configuration named.
func (g *guard) exempt(ctx context.Context, addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err == nil && sameHost(originOf(ctx), host) {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.proxies[addr]
}

func (g *guard) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.inner != nil {
		if g.exempt(ctx, addr) {
			return g.inner(ctx, network, addr)
		}
		return checkConn(g.inner(ctx, network, addr))(addr, originOf(ctx))
	}
	if g.exempt(ctx, addr) {
		return g.dialer.DialContext(ctx, network, addr)
	}
	d := g.dialer
	origin := originOf(ctx)
	d.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s: unreadable address %q", ErrForbidden, addr, address)
		}
		if Special(ap.Addr()) {
			return refuse(addr, ap.Addr(), origin)
		}
		return nil
	}
	return d.DialContext(ctx, network, addr)
}

// checkConn checks the remote address of a connection another dial
// function made, closing it when it is special.
func checkConn(c net.Conn, err error) func(addr, origin string) (net.Conn, error) {
	return func(addr, origin string) (net.Conn, error) {
		if err != nil {
			return nil, err
		}
		ap, perr := netip.ParseAddrPort(c.RemoteAddr().String())
		if perr != nil || Special(ap.Addr()) {
			c.Close()
			return nil, refuse(addr, ap.Addr(), origin)
		}
		return c, nil
	}
}

// canonicalAddr is u's host:port, with the scheme's default port.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// Reason returns the guard's own error in err's chain (without the
// url.Error and net.OpError around it, which quote the URL redirected to,
// signature and all), and whether there is one.
func Reason(err error) (error, bool) {
	if !errors.Is(err, ErrForbidden) {
		return nil, false
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		var ue *url.Error
		var oe *net.OpError
		if !errors.As(e, &ue) && !errors.As(e, &oe) {
			return e, true
		}
	}
	return err, true
}

package peercred

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ownedDialTimeout bounds a connection of an OwnedBy client whose
// transport had no dialer of its own: a loopback server answers at once
// unless its machine is stuck.
const ownedDialTimeout = 10 * time.Second

// ErrServerOwner: the server at a loopback address is not run by the user
// whose credential the client was about to send. Any local user can
// listen on a loopback port the node is not using (while it restarts, or
// when it runs on another port): a CLI that sent the node's admin key
// there would hand that user the cluster, a worker that sent its
// heartbeat its secret.
var ErrServerOwner = errors.New("the server is not run by the node's user")

// OwnedBy returns a copy of hc whose every connection is checked, before
// anything is sent on it, to have its server end owned by uid, as the
// kernel records it (on Linux, /proc/net/tcp): a credential that only the
// node's user may present goes only to a process of that user. A
// connection that fails the check is closed and the request fails with an
// error wrapping ErrServerOwner. Only loopback connections can be checked,
// so every other one fails too. Where the platform cannot tell a
// connection's owner (not Linux), hc is returned unchanged.
func OwnedBy(hc *http.Client, uid uint32) *http.Client { return ownedBy(hc, uid, false) }

// LoopbackOwnedBy is OwnedBy for a client whose server may also be on
// another machine: a connection to a loopback address is checked as
// OwnedBy checks it, any other goes unchecked. For a credential that a
// loopback server must be the same user's to get (any local user may
// listen on a loopback port the owner's server is not using), and that
// goes off the machine only where the caller was told to send it.
func LoopbackOwnedBy(hc *http.Client, uid uint32) *http.Client { return ownedBy(hc, uid, true) }

func ownedBy(hc *http.Client, uid uint32, onlyLoopback bool) *http.Client {
	if !Supported() {
		return hc
	}
	tr, ok := CloneTransport(hc)
	if !ok {
		// Not a transport this package made: nothing can be checked.
		return &http.Client{Transport: refuse{}, Timeout: hc.Timeout}
	}
	check := func(c net.Conn, err error) (net.Conn, error) {
		if err != nil {
			return nil, err
		}
		_, unixConn := c.(*net.UnixConn)
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); onlyLoopback && !unixConn && (!ok || !ta.IP.IsLoopback()) {
			return c, nil
		}
		if err := CheckServer(c, uid); err != nil {
			_ = c.Close()
			return nil, err
		}
		return c, nil
	}
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: ownedDialTimeout}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return check(dial(ctx, network, addr))
	}
	if tls := tr.DialTLSContext; tls != nil {
		// The TLS handshake sends nothing secret; the check runs before
		// the first request.
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return check(tls(ctx, network, addr))
		}
	}
	tr.Proxy = nil
	return &http.Client{Transport: tr, Timeout: hc.Timeout, CheckRedirect: hc.CheckRedirect, Jar: hc.Jar}
}

// CloneTransport returns a copy of hc's transport to change its dialer:
// http.DefaultTransport's for a nil one; ok is false for a RoundTripper
// that is not an *http.Transport (its connections cannot be reached).
func CloneTransport(hc *http.Client) (tr *http.Transport, ok bool) {
	switch t := hc.Transport.(type) {
	case nil:
		return http.DefaultTransport.(*http.Transport).Clone(), true
	case *http.Transport:
		return t.Clone(), true
	}
	return nil, false
}

// refuse is a RoundTripper that sends nothing.
type refuse struct{}

func (refuse) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("%w: this client cannot check who runs the server", ErrServerOwner)
}

// CheckServer returns nil when the server end of c, a TCP connection this
// process dialled, is owned by uid as the kernel records it; else an
// error wrapping ErrServerOwner (also when the owner cannot be told: a
// connection off loopback). A Unix socket connection (*net.UnixConn) is
// checked by the credentials the kernel took from its server when it
// connected (SO_PEERCRED). The caller closes c on an error, before
// sending anything on it.
func CheckServer(c net.Conn, uid uint32) error {
	var got uint32
	var err error
	if uc, ok := c.(*net.UnixConn); ok {
		got, err = unixPeerUID(uc)
	} else {
		got, err = ServerUID(c.LocalAddr(), c.RemoteAddr())
	}
	switch {
	case err != nil:
		return fmt.Errorf("%w: cannot tell who runs %s (%v)", ErrServerOwner, c.RemoteAddr(), err)
	case got != uid:
		return fmt.Errorf("%w: %s is served by uid %d, the credential belongs to uid %d; not sending it there", ErrServerOwner, c.RemoteAddr(), got, uid)
	}
	return nil
}

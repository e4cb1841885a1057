package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRemoteClients: a remote client is its address (IPv6 ones too: a
// LAN's hosts share its /64); remote clients together are capped
// (maxRemoteConns), so a host with many addresses cannot run the node out
// of file descriptors, while
// loopback users keep their own caps.
func TestRemoteClients(t *testing.T) {
	keys := []struct{ ip, client string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		// Each IPv6 address is its own client: a LAN's hosts share its /64.
		{"2001:db8:1:2::1", "2001:db8:1:2::1"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2:aaaa:bbbb:cccc:dddd"},
		{"fe80::1", "fe80::1"},
		{"fe80::2", "fe80::2"},
	}
	for _, k := range keys {
		require.Equal(t, k.client, remoteClient(net.ParseIP(k.ip)), k.ip)
	}

	tests := []struct {
		name      string
		perClient int
		clients   int // distinct remote clients, each taking perClient
		wantTaken int
	}{
		{"one client", 8, 1, 8},
		{"many clients stop at the total", 256, 40, maxRemoteConns},
		{"a per-client cap above the total raises it", 5000, 2, 5000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := newConnCounts(tc.perClient)
			taken := 0
			var keys []string
			for c := range tc.clients {
				key := remoteClient(net.ParseIP(fmt.Sprintf("2001:db8:%x::1", c+1)))
				for range tc.perClient + 3 { // more connections than the cap
					if cc.take(key, true) {
						taken++
						keys = append(keys, key)
					}
				}
			}
			require.Equal(t, tc.wantTaken, taken)
			require.True(t, cc.take("uid:1000", false), "a local user is not held off by remote clients")
			cc.release("uid:1000", false)
			cc.release(keys[0], true)
			require.True(t, cc.take(keys[0], true), "a closed connection gave its slot back")
			for _, k := range keys {
				cc.release(k, true)
			}
			require.Empty(t, cc.per)
			require.Zero(t, cc.remote)
		})
	}
}

// nopConn is a connection whose Close does nothing (the tests count, they
// do not talk).
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

// TestRemotePoolFullTakesAnIdleSlot: with remote clients together at
// their cap (16 addresses holding 256 connections each, none serving a
// request), a new client takes the slot of a connection of the client
// holding the most, which is closed; connections serving a request are
// never taken, nor one of a client holding barely more than the newcomer.
// Before, every newcomer was refused until those connections closed.
func TestRemotePoolFullTakesAnIdleSlot(t *testing.T) {
	const perClient = 256
	counts := newConnCounts(perClient)
	l := &limitListener{counts: counts}
	var strangers []*countedConn
	open := func(client string) (*countedConn, *countedConn, bool) {
		cc := &countedConn{Conn: nopConn{}, l: l, key: client, remote: true}
		victim, ok := counts.takeRemote(client, cc)
		return cc, victim, ok
	}
	for i := range maxRemoteConns / perClient {
		for range perClient {
			cc, victim, ok := open(fmt.Sprintf("10.0.0.%d", i+1))
			require.True(t, ok)
			require.Nil(t, victim, "the pool was not full yet")
			strangers = append(strangers, cc)
		}
	}
	require.Equal(t, maxRemoteConns, counts.remote)

	tests := []struct {
		name      string
		busy      bool // the strangers' connections serve requests
		client    string
		wantTaken bool
	}{
		{"all serving: refused", true, "192.0.2.1", false},
		{"idle or silent: a slot is taken", false, "192.0.2.1", true},
		{"the same newcomer again", false, "192.0.2.1", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range strangers {
				s.busy.Store(tc.busy)
			}
			cc, victim, ok := open(tc.client)
			require.Equal(t, tc.wantTaken, ok)
			if !ok {
				require.Nil(t, victim)
				return
			}
			require.NotNil(t, victim)
			require.Contains(t, victim.key, "10.0.0.", "a stranger's connection was taken")
			require.NoError(t, victim.Close())
			require.Equal(t, maxRemoteConns, counts.remote, "the victim's slot went to the newcomer")
			_ = cc
		})
	}
	// A client holding barely more than the newcomer keeps its slots.
	fair := newConnCounts(perClient)
	fair.maxRemote = 3
	fl := &limitListener{counts: fair}
	for _, k := range []string{"a", "a", "b"} {
		_, ok := fair.takeRemote(k, &countedConn{Conn: nopConn{}, l: fl, key: k, remote: true})
		require.True(t, ok)
	}
	_, ok := fair.takeRemote("b", &countedConn{Conn: nopConn{}, l: fl, key: "b", remote: true})
	require.False(t, ok, "b would hold as many as a")
}

// TestConnStateMarksBusy: the API servers' ConnState marks a connection
// (under TLS too) busy while a request is served, and not otherwise.
func TestConnStateMarksBusy(t *testing.T) {
	cc := &countedConn{Conn: nopConn{}}
	for _, c := range []net.Conn{cc, tls.Server(cc, &tls.Config{})} {
		connState(c, http.StateActive)
		require.True(t, cc.busy.Load())
		connState(c, http.StateIdle)
		require.False(t, cc.busy.Load())
	}
}

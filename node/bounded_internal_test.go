package node

import (
	"fmt"
	"net"
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

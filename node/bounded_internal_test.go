package node

import (
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRemoteClients: a remote client is an IPv4 address or an IPv6 /64,
// so a host cannot pass its cap by picking more addresses from its
// prefix; and remote clients together are capped (maxRemoteConns), so
// many addresses cannot run the node out of file descriptors, while
// loopback users keep their own caps.
func TestRemoteClients(t *testing.T) {
	keys := []struct{ ip, client string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1", "fe80::/64"},
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
		{"one /64, many addresses", 8, 1, 8},
		{"many clients stop at the total", 256, 40, maxRemoteConns},
		{"a per-client cap above the total raises it", 5000, 2, 5000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := newConnCounts(tc.perClient)
			taken := 0
			var keys []string
			for c := range tc.clients {
				for a := range tc.perClient + 3 { // more addresses than the cap
					key := remoteClient(net.ParseIP(fmt.Sprintf("2001:db8:%x::%x", c+1, a+1)))
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

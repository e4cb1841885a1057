package redirectguard_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"

	"github.com/rbee-project/rbee/internal/redirectguard"
	"github.com/stretchr/testify/require"
)

func TestSpecial(t *testing.T) {
	for _, tc := range []struct {
		ip      string
		special bool
	}{
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true},
		{"10.1.2.3", true}, {"172.16.0.1", true}, {"192.168.1.5", true}, {"fd00::1", true},
		{"169.254.169.254", true}, {"fe80::1", true},
		{"0.0.0.0", true}, {"0.1.2.3", true}, {"::", true},
		{"224.0.0.1", true}, {"ff02::1", true}, {"255.255.255.255", true},
		{"100.64.0.1", true}, {"::ffff:127.0.0.1", true}, {"::ffff:10.0.0.1", true},
		{"8.8.8.8", false}, {"1.1.1.1", false}, {"2606:4700::1111", false}, {"172.32.0.1", false}, {"100.128.0.1", false},
	} {
		require.Equal(t, tc.special, redirectguard.Special(netip.MustParseAddr(tc.ip)), tc.ip)
	}
}

// A transport whose own dial function the guard wraps checks the address
// the connection reached: a connection to a special address of a host
// other than the origin is closed before the request is sent.
func TestTransportWithItsOwnDial(t *testing.T) {
	reached := 0
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ }))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	var d net.Dialer
	tr := redirectguard.Transport(&http.Transport{DialContext: d.DialContext})
	defer tr.CloseIdleConnections()
	target, err := url.Parse(srv.URL)
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		origin string
		ok     bool
	}{
		{"no origin", "", false},
		{"another origin", "http://127.0.0.1:1", false},
		{"its own origin", srv.URL, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.origin != "" {
				o, err := url.Parse(tc.origin)
				require.NoError(t, err)
				ctx = redirectguard.WithOrigin(ctx, o)
			}
			before := reached
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
			require.NoError(t, err)
			resp, err := tr.RoundTrip(req)
			if tc.ok {
				require.NoError(t, err)
				resp.Body.Close()
				require.Equal(t, before+1, reached)
				return
			}
			require.ErrorIs(t, err, redirectguard.ErrForbidden)
			require.Equal(t, before, reached)
		})
	}
}

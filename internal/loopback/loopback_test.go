package loopback

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoopback(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"localhost", true}, {"LocalHost", true}, {"localhost.", true}, {"app.localhost", true},
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true}, {"[::1]", true},
		{"", false}, {"0.0.0.0", false}, {"10.0.0.1", false}, {"notlocalhost", false}, {"localhost.example.com", false}, {"::", false},
	} {
		require.Equal(t, tc.want, Host(tc.host), tc.host)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:7833", true}, {"localhost:7833", true}, {"[::1]:7833", true},
		{"0.0.0.0:7833", false}, {":7833", false}, {"192.168.1.2:7833", false}, {"127.0.0.1", false},
	} {
		require.Equal(t, tc.want, HostPort(tc.addr), tc.addr)
	}
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"http://127.0.0.1:7833", true}, {"https://localhost:7843/x", true}, {"http://[::1]:1", true}, {"http://app.localhost", true},
		{"https://node1.lan:7843", false}, {"http://10.1.2.3", false}, {"::bad", false}, {"", false},
	} {
		require.Equal(t, tc.want, URL(tc.url), tc.url)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "127.0.0.1:5555"
	require.True(t, Request(r))
	r.RemoteAddr = "192.168.1.9:5555"
	require.False(t, Request(r))
	r.RemoteAddr = "localhost:5555" // a name is never a client address
	require.False(t, Request(r))
}

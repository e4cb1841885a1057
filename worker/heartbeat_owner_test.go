package worker

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/otheruser"
	"github.com/rbee-project/rbee/internal/peercred"
)

// A worker's heartbeat carries its secret; it goes only to a node run by
// the worker's own user. Another local user listening on the node's port
// while the node is down (a restart or an upgrade, which leave the workers
// running) got every worker's secret within a beat: the worker's port and
// the node's heartbeat route then took them as the worker.
func TestHeartbeatSecretOnlyToTheNodesUser(t *testing.T) {
	const secret = "worker-secret-0123456789abcdef"
	beat := func(url string) error {
		h := newHeartbeater(heartbeatURL(url), secret, time.Second, 0,
			func() Heartbeat { return Heartbeat{ID: "w-1", Port: 1, State: StateReady} }, nil, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return h.post(ctx, h.build())
	}

	t.Run("own node", func(t *testing.T) {
		got := make(chan string, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got <- r.Header.Get("Authorization")
			w.WriteHeader(http.StatusNoContent)
		}))
		t.Cleanup(srv.Close)
		require.NoError(t, beat(srv.URL))
		require.Equal(t, "Bearer "+secret, <-got)
	})

	// A node off loopback (a node on --insecure-http's address) cannot be
	// checked, and beats still reach it.
	t.Run("own node off loopback", func(t *testing.T) {
		ip := nonLoopbackIP(t)
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		require.NoError(t, err)
		got := make(chan string, 1)
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got <- r.Header.Get("Authorization")
			w.WriteHeader(http.StatusNoContent)
		}))
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		t.Cleanup(srv.Close)
		require.NoError(t, beat(srv.URL))
		require.Equal(t, "Bearer "+secret, <-got)
	})

	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run("another user's server on "+host, func(t *testing.T) {
			url, next := otheruser.Recorder(t, host, 0)
			err := beat(url)
			require.ErrorIs(t, err, peercred.ErrServerOwner)
			require.ErrorContains(t, err, "uid 65534")
			resp, err := http.Post(url+"/after", "application/json", nil)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, "-", next(), "the other user's server got the worker's secret")
		})
	}
}

// A head worker's link to a stage on this machine (the node's bridge, a
// shard worker) carries the stage's secret and then the hidden states of
// every prompt; it opens only on a server run by the head's own user (a
// stage worker that died leaves its port to any local user).
func TestStageLinkOnlyToTheNodesUser(t *testing.T) {
	url, next := otheruser.Recorder(t, "127.0.0.1", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialWorkerStage(ctx, url, "stage-secret-0123456789abcdef")
	if err == nil {
		c.Close()
	}
	require.ErrorIs(t, err, peercred.ErrServerOwner)
	resp, err := http.Get(url + "/after")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "-", next(), "the other user's server got the stage's secret")
}

// nonLoopbackIP is an IPv4 address of this machine off loopback; the test
// is skipped without one.
func nonLoopbackIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if in, ok := a.(*net.IPNet); ok && !in.IP.IsLoopback() && in.IP.To4() != nil {
			return in.IP.String()
		}
	}
	t.Skip("no address off loopback")
	return ""
}

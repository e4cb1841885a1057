package engineguard

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/otheruser"
)

// node is a real HTTP server answering /health with the id in id ("" =
// down: 503).
func node(t *testing.T, id *atomic.Value) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := id.Load().(string)
		if v == "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok", "id": v})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func cfg(url string, cmd ...string) Config {
	c := DefaultConfig()
	c.NodeURL, c.NodeID, c.Command = url, "n1", cmd
	c.Grace, c.Interval, c.StopTimeout = time.Second, 20*time.Millisecond, 2*time.Second
	return c
}

func TestEngineExitCodePassesThrough(t *testing.T) {
	var id atomic.Value
	id.Store("n1")
	srv := node(t, &id)
	code, err := Run(context.Background(), cfg(srv.URL, "sh", "-c", "exit 3"))
	require.NoError(t, err)
	require.Equal(t, 3, code)
}

func TestEngineStoppedWhenNodeGone(t *testing.T) {
	for name, gone := range map[string]func(srv *httptest.Server, id *atomic.Value){
		"unreachable":  func(srv *httptest.Server, _ *atomic.Value) { srv.Close() },
		"another node": func(_ *httptest.Server, id *atomic.Value) { id.Store("n2") },
		"unhealthy":    func(_ *httptest.Server, id *atomic.Value) { id.Store("") },
	} {
		t.Run(name, func(t *testing.T) {
			var id atomic.Value
			id.Store("n1")
			srv := node(t, &id)
			res := make(chan int, 1)
			go func() {
				code, err := Run(context.Background(), cfg(srv.URL, "sleep", "60"))
				require.NoError(t, err)
				res <- code
			}()
			// Alive node: the engine keeps running past the grace.
			select {
			case <-res:
				t.Fatal("the engine stopped while its node was there")
			case <-time.After(1500 * time.Millisecond):
			}
			gone(srv, &id)
			select {
			case code := <-res:
				require.Equal(t, 128+15, code, "stopped by SIGTERM")
			case <-time.After(30 * time.Second):
				t.Fatal("the engine outlived its node's grace")
			}
		})
	}
}

func TestNodeBackWithinGraceKeepsEngine(t *testing.T) {
	var id atomic.Value
	id.Store("n1")
	srv := node(t, &id)
	c := cfg(srv.URL, "sleep", "60")
	c.Grace = 2 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan int, 1)
	go func() {
		code, _ := Run(ctx, c)
		res <- code
	}()
	id.Store("") // a node restart: down for less than the grace
	time.Sleep(500 * time.Millisecond)
	id.Store("n1")
	select {
	case <-res:
		t.Fatal("stopped during a restart shorter than the grace")
	case <-time.After(2500 * time.Millisecond):
	}
	cancel()
	require.Equal(t, 128+15, <-res)
}

func TestBadConfig(t *testing.T) {
	_, err := Run(context.Background(), Config{})
	require.ErrorIs(t, err, ErrConfig)
}

// TestGuardFollowsTheNode: a node restarted on another port (its
// node.json says where) is asked there; the engine outlives the grace.
func TestGuardFollowsTheNode(t *testing.T) {
	var id atomic.Value
	id.Store("n1")
	old, moved := node(t, &id), node(t, &id)
	file := filepath.Join(t.TempDir(), "node.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"api_url":"`+moved.URL+`"}`), 0o600))
	c := cfg(old.URL, "sleep", "60")
	c.NodeFile = file
	old.Close() // the node restarted on moved's port
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan int, 1)
	go func() {
		code, _ := Run(ctx, c)
		res <- code
	}()
	select {
	case <-res:
		t.Fatal("the engine stopped though its node answers at its new address")
	case <-time.After(3 * c.Grace):
	}
	cancel()
	require.Equal(t, 128+15, <-res)
}

// Another local user listening on the node's port while the node is down
// and answering /health with the node's id (any local client reads it
// there) does not keep the engine: only a server of the guard's own user
// answers for the node on loopback.
func TestImpostorDoesNotKeepTheEngine(t *testing.T) {
	url, _ := otheruser.RecorderAnswering(t, "127.0.0.1", 0, `{"status":"ok","id":"n1"}`)
	res := make(chan int, 1)
	go func() {
		code, err := Run(context.Background(), cfg(url, "sleep", "60"))
		require.NoError(t, err)
		res <- code
	}()
	select {
	case code := <-res:
		require.Equal(t, 128+15, code, "stopped by SIGTERM")
	case <-time.After(30 * time.Second):
		t.Fatal("the impostor kept the engine past the node's grace")
	}
}

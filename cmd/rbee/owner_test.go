package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/otheruser"
	"github.com/rbee-project/rbee/node"
)

// fakeNode is an HTTP server on loopback that records the credentials it
// is sent and answers every request with an API error.
func fakeNode(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"fake"}}`))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// The CLI sends the node's admin key only to a server run by the key
// file's owner: a local user listening on the node's port (while it is
// down) gets no key.
func TestAdminKeyOnlyToTheNodesUser(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the server's owner is known on Linux only")
	}
	const key = "rbeeadm_testkeytestkeytestkey"
	run := func(t *testing.T, dir, url string) error {
		root := newRootCmd()
		root.SetArgs([]string{"status", "--node", url, "--data-dir", dir})
		root.SetOut(new(nopWriter))
		root.SetErr(new(nopWriter))
		return root.Execute()
	}

	t.Run("own server", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, node.AdminKeyFile), []byte(key+"\n"), 0o600))
		srv, got := fakeNode(t)
		require.Error(t, run(t, dir, srv.URL))
		require.Contains(t, got(), "Bearer "+key, "the node's own user's server gets the key")
	})

	t.Run("another user's key file", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give the key file to another user")
		}
		// The key file belongs to nobody: as far as the CLI can tell, the
		// node runs as nobody, and this server (root's) is not the node.
		dir := t.TempDir()
		path := filepath.Join(dir, node.AdminKeyFile)
		require.NoError(t, os.WriteFile(path, []byte(key+"\n"), 0o600))
		require.NoError(t, os.Chown(path, 65534, 65534))
		srv, got := fakeNode(t)
		err := run(t, dir, srv.URL)
		require.ErrorContains(t, err, "not run by the node's user")
		for _, h := range got() {
			require.NotContains(t, h, key)
		}
	})
}

// A server another local user runs on the node's port (here nobody's)
// gets no key, whether it listens on 127.0.0.1 or [::1].
func TestAdminKeyNotToAnotherUsersServer(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Skipf("no %s: %v", host, err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			script := fmt.Sprintf(`import http.server, socket
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in %q else socket.AF_INET
S((%q, %d), http.server.BaseHTTPRequestHandler).serve_forever()`, host, host, port)
			addr := net.JoinHostPort(host, strconv.Itoa(port))
			otheruser.Python(t, script, addr, nil)

			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, node.AdminKeyFile), []byte("rbeeadm_testkeytestkeytestkey\n"), 0o600))
			root := newRootCmd()
			root.SetArgs([]string{"status", "--node", "http://" + addr, "--data-dir", dir})
			root.SetOut(new(nopWriter))
			root.SetErr(new(nopWriter))
			err = root.Execute()
			require.ErrorContains(t, err, "not run by the node's user")
			require.ErrorContains(t, err, "uid 65534")
		})
	}
}

type nopWriter struct{}

func (*nopWriter) Write(p []byte) (int, error) { return len(p), nil }

package hf_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rbee-project/rbee/model/hf"
	"github.com/stretchr/testify/require"
)

// serveOn starts a server on addr (a loopback host with port 0).
func serveOn(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// A Hub (or a mirror) that redirects a file download to a service only
// this node can reach gets no request to it: a redirect may reach a local
// or private address only on the host the request started at, the check
// is on the address dialled (a name that resolves to loopback is caught
// too), and redirects stay on http(s) and never go from https to plain
// http. The refused download is not retried, and nothing of the other
// service's answer reaches the error.
func TestRedirectToAPrivateServiceIsRefused(t *testing.T) {
	var reached atomic.Int32
	// The "internal service": on 127.0.0.2, another host than the Hub's
	// 127.0.0.1, as a router or a metadata service would be.
	internal := serveOn(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"error":"internal-secret"}`))
	}))
	_, internalPort, _ := net.SplitHostPort(internal.Listener.Addr().String())
	// A file server on the Hub's own host (another port): allowed.
	blob := []byte("GGUF and some bytes of a model file")
	sameHost := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(blob)
	}))

	for _, tc := range []struct {
		name     string
		location string
		ok       bool
	}{
		{"another loopback host", internal.URL + "/latest/meta-data", false},
		{"a name that resolves to loopback", "http://localhost:" + internalPort + "/x", false},
		{"the IPv4-mapped IPv6 form", "http://[::ffff:127.0.0.2]:" + internalPort + "/x", false},
		{"another scheme", "file:///etc/passwd", false},
		{"the Hub's own host on another port", sameHost.URL + "/blob", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached.Store(0)
			var hubHits atomic.Int32
			hub := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hubHits.Add(1)
				http.Redirect(w, r, tc.location, http.StatusFound)
			}))
			c := newClient(t, hub.URL, "")
			res, err := c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf"},
				hf.Spec{Partial: filepath.Join(t.TempDir(), "m.part"), Retries: 3})
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, int64(len(blob)), res.Size)
				return
			}
			require.ErrorIs(t, err, hf.ErrRedirect)
			require.False(t, hf.IsRetryable(err), "a refused redirect is not retried")
			require.Equal(t, int32(1), hubHits.Load(), "not retried")
			require.Zero(t, reached.Load(), "the internal service got no request")
			require.NotContains(t, err.Error(), "internal-secret")
		})
	}
}

// A LAN mirror (HF_ENDPOINT on a private address) keeps working when it
// redirects to itself, and an https endpoint may not redirect to plain
// http, even on its own host.
func TestRedirectDowngradeIsRefused(t *testing.T) {
	plain := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("bytes"))
	}))
	hub := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/blob", http.StatusFound)
	}))
	t.Cleanup(hub.Close)
	cfg := hf.DefaultConfig()
	cfg.Endpoint = hub.URL
	cfg.HTTPClient = hub.Client()
	c, err := hf.New(cfg)
	require.NoError(t, err)
	_, err = c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf"},
		hf.Spec{Partial: filepath.Join(t.TempDir(), "m.part")})
	require.ErrorIs(t, err, hf.ErrRedirect)
	require.Contains(t, err.Error(), "https to plain http")
}

// An error answer of the host a download was redirected to (the CDN, or
// whatever the Hub named) is not quoted in the error: only the Hub's own
// messages are.
func TestErrorOfARedirectTargetIsNotQuoted(t *testing.T) {
	cdn := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Error-Message", "header-secret")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":"body-secret"}`))
	}))
	hub := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "gated") {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":"accept the licence"}`))
			return
		}
		http.Redirect(w, r, cdn.URL+"/blob", http.StatusFound)
	}))
	c := newClient(t, hub.URL, "")
	_, err := c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf"},
		hf.Spec{Partial: filepath.Join(t.TempDir(), "m.part")})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret")
	_, err = c.DownloadFile(context.Background(), "org/gated", "main", hf.File{Path: "m.gguf"},
		hf.Spec{Partial: filepath.Join(t.TempDir(), "g.part")})
	require.True(t, errors.Is(err, hf.ErrGated))
	require.Contains(t, err.Error(), "accept the licence", "the Hub's own message is kept")
}

// A redirect loop ends after 10 hops, once: the download is not retried
// through the same loop.
func TestRedirectLoopIsNotRetried(t *testing.T) {
	const maxHops = 10 // requests before the client gives up (net/http's default)
	var hits atomic.Int32
	hub := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
	}))
	c := newClient(t, hub.URL, "")
	_, err := c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf"},
		hf.Spec{Partial: filepath.Join(t.TempDir(), "m.part"), Retries: 3, RetryBackoff: time.Millisecond})
	require.ErrorIs(t, err, hf.ErrHTTP)
	require.ErrorContains(t, err, "stopped after 10 redirects")
	require.Equal(t, int32(maxHops), hits.Load(), "one pass through the loop, no retry")
}

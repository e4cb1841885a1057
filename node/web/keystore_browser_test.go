package web_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/web"
)

// keyPageMux serves the page and a feed that refuses a request without
// key with status and the API error refusal (401 as a node with
// RequireToken does, 403 for a key without read).
func keyPageMux(key string, status int, refusal string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", web.Handler())
	mux.Handle("GET /ui/", web.Handler())
	mux.HandleFunc("GET /v1/cluster/events", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+key {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprint(w, refusal)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: state\ndata: {\"status\":{\"node\":\"n1\",\"nodes\":[{\"name\":\"n1\",\"id\":\"n1\",\"state\":\"alive\"}]}}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[]}`)
	})
	return mux
}

// requireKey is keyPageMux's refusal of a node with RequireToken.
const requireKey = `{"error":{"code":"unauthorized","message":"this node requires a key","type":"invalid_request_error"}}`

// saveKey enters key in the page's key form and waits for the feed.
func saveKey(tb *tab, key string) {
	tb.wait("the key form", `!document.getElementById('token-form').hidden`, 10*time.Second)
	tb.do(chromedp.SetValue(chromedp.ID("token-input"), key), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
	tb.wait("the feed with the key", `document.getElementById('conn').textContent === 'live' && document.querySelectorAll('#nodes .node').length === 1`, 10*time.Second)
}

// TestPageKeyStorage: a key given to a page that came over plain HTTP (the
// node's loopback listener) is never written to the origin's storage. That
// origin is only an address and port: once the node stops, another local
// user may listen there, and the page they serve is the same origin and
// read the admin key the node's page had saved. A key saved earlier is
// removed when the page loads. Over HTTPS (whose certificate another user
// cannot present) the key is kept across reloads.
func TestPageKeyStorage(t *testing.T) {
	exe := findChromium()
	if exe == "" {
		t.Skip("no Chromium found: apt-get install chromium")
	}
	const key = "rbk_admin-of-the-node"

	t.Run("plain HTTP", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		node := httptest.NewUnstartedServer(keyPageMux(key, http.StatusUnauthorized, requireKey))
		node.Listener.Close()
		node.Listener = ln
		node.Start()
		t.Cleanup(func() { node.CloseClientConnections(); node.Close() })

		tb := newTab(t, browser(t, exe), artifactDir(t))
		tb.do(chromedp.Navigate(node.URL + "/"))
		saveKey(tb, key)
		require.True(t, eval[bool](tb, `localStorage.getItem('rbee.token') === null`), "the key is in the origin's storage")

		// The node stops; another local user listens on its address and
		// the browser opens the page there: the same origin.
		node.CloseClientConnections()
		node.Close()
		var thief net.Listener
		require.Eventually(t, func() bool {
			thief, err = net.Listen("tcp", addr)
			return err == nil
		}, 10*time.Second, 50*time.Millisecond, "listen on the node's address again")
		other := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<!doctype html><title>not rbee</title>")
		}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = other.Serve(thief) }()
		t.Cleanup(func() { _ = other.Close() })
		tb.do(chromedp.Navigate("http://" + addr + "/"))
		tb.wait("the other user's page", `document.title === 'not rbee'`, 10*time.Second)
		require.Equal(t, 0, eval[int](tb, `localStorage.length`), "the other user's page reads the origin's storage")

		// A key that an earlier page saved is removed at load; the page
		// asks for a key again.
		_ = other.Close()
		var again net.Listener
		require.Eventually(t, func() bool {
			again, err = net.Listen("tcp", addr)
			return err == nil
		}, 10*time.Second, 50*time.Millisecond, "listen on the node's address again")
		node2 := &http.Server{Handler: keyPageMux(key, http.StatusUnauthorized, requireKey), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = node2.Serve(again) }()
		t.Cleanup(func() { _ = node2.Close() })
		require.True(t, eval[bool](tb, `(localStorage.setItem('rbee.token', `+js(key)+`), true)`))
		tb.do(chromedp.Navigate("http://" + addr + "/"))
		tb.wait("the key form", `!document.getElementById('token-form').hidden`, 10*time.Second)
		require.True(t, eval[bool](tb, `localStorage.getItem('rbee.token') === null`), "an earlier saved key stays")
		tb.noErrors()
	})

	t.Run("HTTPS", func(t *testing.T) {
		node := httptest.NewTLSServer(keyPageMux(key, http.StatusUnauthorized, requireKey))
		t.Cleanup(func() { node.CloseClientConnections(); node.Close() })
		tb := newTab(t, browser(t, exe, chromedp.Flag("ignore-certificate-errors", true)), artifactDir(t))
		tb.do(chromedp.Navigate(node.URL + "/"))
		saveKey(tb, key)
		require.Equal(t, key, eval[string](tb, `localStorage.getItem('rbee.token')`))
		// A reload goes live with the saved key, no form.
		tb.do(chromedp.Reload())
		tb.wait("the feed after a reload", `document.getElementById('conn').textContent === 'live' && document.querySelectorAll('#nodes .node').length === 1`, 10*time.Second)
		require.True(t, eval[bool](tb, `document.getElementById('token-form').hidden`))
		tb.noErrors()
	})
}

package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	return string(b)
}

func TestHandlerServes(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `id="chat-form"`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "/v1/cluster/events"},
		{"/ui/style.css", "text/css; charset=utf-8", "@media"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := get(t, h, http.MethodGet, tc.path, nil)
			require.Equal(t, http.StatusOK, r.StatusCode)
			require.Equal(t, tc.ctype, r.Header.Get("Content-Type"))
			require.Equal(t, CSP, r.Header.Get("Content-Security-Policy"))
			require.Equal(t, "nosniff", r.Header.Get("X-Content-Type-Options"))
			require.NotEmpty(t, r.Header.Get("ETag"))
			require.Contains(t, body(t, r), tc.contains)
		})
	}
}

func TestPageHasItsParts(t *testing.T) {
	page := body(t, get(t, Handler(), http.MethodGet, "/", nil))
	for _, id := range []string{"nodes", "workers", "models", "jobs", "conn", "token-form", "token-input",
		"chat-model", "chat-prompt", "chat-log", "chat-send", "spawn-form", "spawn-hive", "spawn-model",
		"download-form", "download-hive", "download-model", "actions-log", "insecure-banner"} {
		require.Contains(t, page, `id="`+id+`"`, "page lacks #%s", id)
	}
	require.Contains(t, page, `name="viewport"`)
	// The SSE reader loads before the app that uses it.
	sse, app := strings.Index(page, `src="/ui/sse.js?v=`), strings.Index(page, `src="/ui/app.js?v=`)
	require.True(t, sse > 0 && app > sse, "sse.js must be linked (versioned) before app.js")
	// No external resources and nothing inline the CSP would block.
	require.NotRegexp(t, `(src|href)="(https?:)?//`, page)
	require.NotRegexp(t, `<script>|<style|style="|\son[a-z]+="`, page)
	js := body(t, get(t, Handler(), http.MethodGet, "/ui/app.js", nil))
	require.NotContains(t, js, "EventSource", "the feed must use fetch to send the token")
	require.NotContains(t, js, "innerHTML", "text from the API must never be parsed as HTML")
}

func TestCacheHeaders(t *testing.T) {
	h := Handler()
	r := get(t, h, http.MethodGet, "/", nil)
	require.Equal(t, cachePage, r.Header.Get("Cache-Control"))
	page := body(t, r)
	// The page links assets with their content version.
	m := regexp.MustCompile(`"/ui/app\.js\?v=([0-9a-f]{16})"`).FindStringSubmatch(page)
	require.NotNil(t, m, "app.js is not linked with a version")
	r = get(t, h, http.MethodGet, "/ui/app.js?v="+m[1], nil)
	require.Equal(t, cacheVersioned, r.Header.Get("Cache-Control"))
	r = get(t, h, http.MethodGet, "/ui/app.js?v=0000000000000000", nil)
	require.Equal(t, cacheAsset, r.Header.Get("Cache-Control"), "a stale version must be revalidated")
	r = get(t, h, http.MethodGet, "/ui/app.js", nil)
	require.Equal(t, cacheAsset, r.Header.Get("Cache-Control"))

	// Revalidation answers 304 with the same ETag.
	etag := r.Header.Get("ETag")
	r = get(t, h, http.MethodGet, "/ui/app.js", map[string]string{"If-None-Match": etag})
	require.Equal(t, http.StatusNotModified, r.StatusCode)
	r = get(t, h, http.MethodGet, "/", map[string]string{"If-None-Match": `"nope"`})
	require.Equal(t, http.StatusOK, r.StatusCode)
}

func TestNotFoundAndMethods(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/ui/", "/ui/nope.js", "/ui/../web.go", "/ui/app.js/x", "/index.html", "/static/index.html", "/x"} {
		r := get(t, h, http.MethodGet, p, nil)
		require.Equal(t, http.StatusNotFound, r.StatusCode, p)
		require.Equal(t, CSP, r.Header.Get("Content-Security-Policy"), p)
	}
	r := get(t, h, http.MethodHead, "/ui/style.css", nil)
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.Empty(t, body(t, r))
	r = get(t, h, http.MethodPost, "/", nil)
	require.Equal(t, http.StatusMethodNotAllowed, r.StatusCode)
	require.Equal(t, "GET, HEAD", r.Header.Get("Allow"))
}

// TestMountedLikeTheNode checks the handler behind the same patterns the
// node mounts it on, through a real HTTP server.
func TestMountedLikeTheNode(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", Handler())
	mux.Handle("GET /ui/", Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]int{"/": 200, "/ui/app.js": 200, "/ui/missing.css": 404, "/elsewhere": 404} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, path)
		if path == "/" {
			require.True(t, strings.HasPrefix(string(b), "<!doctype html>"))
		}
	}
}

// FuzzHandler sends arbitrary paths and queries: the handler never panics,
// answers only 200/304/404/405, and 200 only for the page and its assets.
func FuzzHandler(f *testing.F) {
	for _, s := range []string{"/", "/ui/app.js", "/ui/app.js?v=0123456789abcdef", "/ui/", "/ui/../web.go", "/ui/%2e%2e/web.go", "/ui//app.js", "/ui/app.js/", "//", "/x?y=%zz"} {
		f.Add(http.MethodGet, s)
	}
	f.Add(http.MethodPost, "/")
	f.Add(http.MethodHead, "/ui/style.css")
	h := Handler()
	known := map[string]bool{"/": true}
	for name := range h.(*site).assets {
		known["/ui/"+name] = true
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		req, err := http.NewRequest(method, "http://node"+target, nil)
		if err != nil || req.URL.Path == "" {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusNotModified:
			if !known[req.URL.Path] {
				t.Fatalf("%s %q answered %d", method, target, rec.Code)
			}
		case http.StatusNotFound, http.StatusMethodNotAllowed:
		default:
			t.Fatalf("%s %q answered %d", method, target, rec.Code)
		}
		if rec.Header().Get("Content-Security-Policy") != CSP {
			t.Fatalf("%s %q: no CSP", method, target)
		}
	})
}

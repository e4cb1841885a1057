package hf_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/hf"
)

// TestFailureBeforeTheFirstByteKeepsNothing: a transfer that fails or is
// cancelled before a byte arrived leaves no empty partial (nor validator)
// behind, and its error does not say "0 bytes kept ... for a resume".
func TestFailureBeforeTheFirstByteKeepsNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		cancel  bool
	}{
		{name: "404", handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{name: "503 through the retries", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}},
		{name: "cut before the first byte", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}},
		{name: "cancelled while the server is silent", cancel: true, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			dir := t.TempDir()
			partial := filepath.Join(dir, ".partial", "m.part")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				time.AfterFunc(200*time.Millisecond, cancel)
			}
			c := newClient(t, srv.URL, "")
			_, err := hf.Transfer(ctx, c.URLOpener(srv.URL+"/m.gguf"),
				hf.Spec{Partial: partial, Retries: 1, RetryBackoff: time.Millisecond})
			require.Error(t, err)
			require.NotContains(t, err.Error(), "kept")
			ents, rerr := os.ReadDir(filepath.Dir(partial))
			require.NoError(t, rerr)
			require.Empty(t, ents)
		})
	}
}

package hf_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/hf"
)

// TestMetadataRequestsHaveADeadline: a Hub that accepts the connection and
// then says nothing (no headers, or a tree page that stops mid-body) must
// not hold a download forever: the tree listing and the HEAD of a file
// fail with ErrHTTP naming the timeout, well before the caller gives up.
func TestMetadataRequestsHaveADeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		hang http.HandlerFunc
		call func(context.Context, *hf.Client) error
	}{
		{name: "tree, no answer", hang: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			call: func(ctx context.Context, c *hf.Client) error {
				_, err := c.ListFiles(ctx, "org/repo", "main")
				return err
			}},
		{name: "tree, body stops", hang: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`[{"type":"file","path":"a.gguf",`))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, call: func(ctx context.Context, c *hf.Client) error {
			_, err := c.ListFiles(ctx, "org/repo", "main")
			return err
		}},
		{name: "HEAD, no answer", hang: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			call: func(ctx context.Context, c *hf.Client) error {
				_, err := c.FileMetadata(ctx, "org/repo", "main", "a.gguf")
				return err
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.hang)
			t.Cleanup(srv.Close)
			c := newClientWith(t, srv.URL, func(cfg *hf.Config) { cfg.APITimeout = 300 * time.Millisecond })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			began := time.Now()
			err := tc.call(ctx, c)
			require.ErrorIs(t, err, hf.ErrHTTP)
			require.Contains(t, err.Error(), "did not answer within 300ms")
			require.NoError(t, ctx.Err(), "the request's own deadline ended it, not the test's")
			require.Less(t, time.Since(began), 10*time.Second)
		})
	}
}

package hf_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestListFilesRetriesABusyHub: the tree listing, the first request of
// every hf:ORG/REPO download, is repeated after a 503 or a 429 (the Hub
// rate-limits anonymous users), waiting the Retry-After it names when
// that is short, as the file download itself is; a long Retry-After fails
// at once and says how long; a 404 is not repeated.
func TestListFilesRetriesABusyHub(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fail      int // answers before the listing
		status    int
		after     string
		wantErr   string
		wantCalls int64
		minWait   time.Duration
	}{
		{name: "503 twice", fail: 2, status: http.StatusServiceUnavailable, wantCalls: 3},
		{name: "429 with Retry-After 1", fail: 1, status: http.StatusTooManyRequests, after: "1", wantCalls: 2, minWait: time.Second},
		{name: "429 with a huge Retry-After", fail: 1, status: http.StatusTooManyRequests, after: "999999999",
			wantErr: "the Hub asks to wait", wantCalls: 1},
		{name: "503 on every try", fail: 100, status: http.StatusServiceUnavailable, wantErr: "HTTP 503", wantCalls: 4},
		{name: "404 is not repeated", fail: 100, status: http.StatusNotFound, wantErr: "not found", wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) <= int64(tc.fail) {
					if tc.after != "" {
						w.Header().Set("Retry-After", tc.after)
					}
					http.Error(w, `{"error":"busy"}`, tc.status)
					return
				}
				_, _ = w.Write([]byte(`[{"type":"file","oid":"x","size":10,"path":"m-Q4_K_M.gguf"}]`))
			}))
			t.Cleanup(srv.Close)
			c := newClient(t, srv.URL, "")
			began := time.Now()
			files, err := c.ListFiles(context.Background(), "org/repo", "main")
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
			} else {
				require.NoError(t, err)
				require.Len(t, files, 1)
			}
			require.Equal(t, tc.wantCalls, calls.Load())
			require.GreaterOrEqual(t, time.Since(began), tc.minWait)
		})
	}
}

// TestFileMetadataRetriesABusyHub: the HEAD of an exact file
// (hf:ORG/REPO/FILE.gguf) is repeated after a 503, as the tree listing is.
func TestFileMetadataRetriesABusyHub(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Length", "1234")
		w.Header().Set("ETag", `"`+sum([]byte("x"))+`"`)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, "")
	m, err := c.FileMetadata(context.Background(), "org/repo", "main", "m.gguf")
	require.NoError(t, err)
	require.EqualValues(t, 1234, m.Size)
	require.Equal(t, sum([]byte("x")), m.SHA256)
	require.EqualValues(t, 3, calls.Load())
}

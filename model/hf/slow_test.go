package hf_test

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rbee-project/rbee/model/hf"
	"github.com/stretchr/testify/require"
)

// trickle answers with the whole of blob, one byte every 10 ms, until the
// client goes away: never idle, never done in useful time.
func trickle(w http.ResponseWriter, r *http.Request, blob []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
	w.WriteHeader(http.StatusOK)
	for _, b := range blob {
		if _, err := w.Write([]byte{b}); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A source that sends a byte every few milliseconds is never idle, so the
// idle timer never ends it; the minimum rate does: the attempt ends with
// ErrStalled and the retry (a new request) gets the file. With no retry
// left the error is ErrStalled, retryable, and what arrived is kept.
func TestTrickleIsGivenUp(t *testing.T) {
	blob := bigBlob(3, 64<<10)
	for _, tc := range []struct {
		name    string
		retries int
	}{
		{"retried", 1},
		{"no retry left", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			srv := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					trickle(w, r, blob)
					return
				}
				http.ServeContent(w, r, "m", time.Time{}, bytes.NewReader(blob))
			}))
			c := newClient(t, srv.URL, "")
			// Bounded even where the minimum is not enforced.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			partial := filepath.Join(t.TempDir(), "m.part")
			res, err := hf.Transfer(ctx, c.URLOpener(srv.URL+"/m"), hf.Spec{Partial: partial, SHA256: sum(blob),
				Retries: tc.retries, RetryBackoff: time.Millisecond, IdleTimeout: 10 * time.Second,
				MinBytes: 4 << 10, RateWindow: 300 * time.Millisecond})
			require.NoError(t, ctx.Err(), "the trickle was not given up")
			if tc.retries > 0 {
				require.NoError(t, err)
				require.Equal(t, sum(blob), res.SHA256)
				require.Equal(t, int32(2), n.Load())
				return
			}
			require.ErrorIs(t, err, hf.ErrStalled)
			require.True(t, hf.IsRetryable(err))
			require.Contains(t, err.Error(), "fewer than the 4096")
			require.FileExists(t, partial, "what arrived is kept for a resume")
		})
	}
}

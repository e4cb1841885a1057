package hf_test

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rbee-project/rbee/internal/trickle"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/stretchr/testify/require"
)

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
					trickle.Write(w, r, blob, 10*time.Millisecond)
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

// A 429 or 503 with Retry-After (seconds or an HTTP date) is waited for
// before the next try, however short the transfer's own backoff; one that
// asks for more than a minute fails at once, saying so.
func TestRetryAfterIsHonoured(t *testing.T) {
	blob := bigBlob(5, 1000)
	for _, tc := range []struct {
		name   string
		status int
		after  func() string
		wait   time.Duration // at least; 0: fails at once
	}{
		{"seconds, 429", http.StatusTooManyRequests, func() string { return "1" }, time.Second},
		{"HTTP date, 503", http.StatusServiceUnavailable, func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, time.Second},
		{"over the cap", http.StatusTooManyRequests, func() string { return "3600" }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var at []time.Time
			srv := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				at = append(at, time.Now())
				first := len(at) == 1
				mu.Unlock()
				if first {
					w.Header().Set("Retry-After", tc.after())
					w.WriteHeader(tc.status)
					return
				}
				w.Write(blob)
			}))
			c := newClient(t, srv.URL, "")
			_, err := hf.Transfer(context.Background(), c.URLOpener(srv.URL+"/m"), hf.Spec{
				Partial: filepath.Join(t.TempDir(), "m.part"), Retries: 2, RetryBackoff: time.Millisecond})
			mu.Lock()
			defer mu.Unlock()
			if tc.wait == 0 {
				require.Error(t, err)
				require.Contains(t, err.Error(), "asks to wait 1h0m0s")
				require.Len(t, at, 1)
				return
			}
			require.NoError(t, err)
			require.Len(t, at, 2)
			require.GreaterOrEqual(t, at[1].Sub(at[0]), tc.wait, "the retry waited for Retry-After")
		})
	}
}

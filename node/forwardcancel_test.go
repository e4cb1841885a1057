package node_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
)

// A job forwarded to another hive and then cancelled must stop there too:
// cancelling a model download run with --hive through another node left
// the download running on the target hive until the source had sent the
// whole file (and the model then appeared in its catalog), or, from a
// source that went quiet, through every retry of a minute's idle timeout.
func TestCancelledForwardedJobStopsOnTargetHive(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trickle bool
	}{
		{"source still sending", true},
		{"source gone quiet", false},
	} {
		t.Run(tc.name, func(t *testing.T) { testCancelledForwardedJob(t, tc.trickle) })
	}
}

func testCancelledForwardedJob(t *testing.T, trickle bool) {
	data, err := os.ReadFile("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	var serving, gone atomic.Int32
	// A slow source: the GGUF's first bytes, then a trickle of the rest
	// (or nothing) until the client goes away (or 60 s).
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serving.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)*64))
		_, _ = w.Write(data[:64<<10])
		w.(http.Flusher).Flush()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case <-r.Context().Done():
				gone.Add(1)
				return
			case <-deadline:
				return
			case <-tick.C:
				if !trickle {
					continue
				}
				if _, err := w.Write(make([]byte, 16<<10)); err != nil {
					gone.Add(1)
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	}))
	t.Cleanup(slow.Close)

	c := nodetest.New(t, 2)
	c.WaitConverged(2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey())
	id, err := cl.Submit(ctx, map[string]any{"operation": "model_download", "model": slow.URL + "/m.gguf", "hive": c.Nodes[1].Name()})
	require.NoError(t, err)
	var status string
	cancelled := false
	err = cl.Follow(ctx, id, func(ev jobs.Event) error {
		switch {
		case ev.Type == jobs.TypeProgress && ev.Node == c.Nodes[1].Name() && !cancelled:
			cancelled = true
			return cl.Cancel(ctx, id)
		case ev.Type == jobs.TypeDone:
			status = ev.Status
		}
		return nil
	})
	require.True(t, cancelled, "no progress from the target hive: %v", err)
	require.Equal(t, jobs.StatusCancelled, status, "%v", err)
	require.Equal(t, int32(1), serving.Load())
	require.Eventually(t, func() bool { return gone.Load() == 1 }, 10*time.Second, 20*time.Millisecond,
		"the target hive kept downloading after the job was cancelled")
}

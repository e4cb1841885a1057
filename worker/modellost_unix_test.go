//go:build unix

package worker

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestModelFileTruncated: the model file truncated while the worker maps
// it (rewritten in place, a full disk during a copy over it) killed the
// worker with SIGBUS at the next request. Now that request ends with an
// error event (model_lost), which the node retries on another worker, and
// the worker stops itself (Err wraps ErrModelLost; rbee-worker exits 1),
// since every later request would fail too.
func TestModelFileTruncated(t *testing.T) {
	data, err := os.ReadFile(testModelPath)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	cfg := testConfig(t)
	cfg.ModelPath = path
	s, base := startServer(t, cfg)
	req := map[string]any{"prompt": "Joe loves writing stories", "max_tokens": 4, "temperature": 0}

	resp := post(t, testCtx(t), base+"/v1/infer", req)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotNil(t, parseInfer(t, readAllSSE(t, resp.Body)).End)

	require.NoError(t, os.Truncate(path, 4096))
	resp = post(t, testCtx(t), base+"/v1/infer", req)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	st := parseInfer(t, readAllSSE(t, resp.Body))
	require.Nil(t, st.End)
	require.NotNil(t, st.Err, "events %v", st.Order)
	require.Equal(t, "model_lost", st.Err.Code)
	require.Eventually(t, func() bool {
		select {
		case <-s.Done():
			return true
		default:
			return false
		}
	}, 10*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, s.Err(), ErrModelLost)
	require.Equal(t, StateStopped, s.State())
}

package worker

import (
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHugePromptRefusedBeforeTokenizing: a prompt that cannot fit the
// context whatever its tokens is refused with context_length_exceeded
// without tokenizing it, so its cost does not grow with its size.
func TestHugePromptRefusedBeforeTokenizing(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	huge := strings.Repeat("Once upon a time there was a little girl named Lily. ", 18000) // ~950 KB
	for _, tc := range []struct {
		path string
		body map[string]any
	}{
		{"/v1/completions", map[string]any{"prompt": huge, "max_tokens": 1}},
		{"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: huge}}, "max_tokens": 1}},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		resp := post(t, testCtx(t), base+tc.path, tc.body)
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		resp.Body.Close()
		runtime.ReadMemStats(&after)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, tc.path)
		require.Equal(t, "context_length_exceeded", e.Error.Code, tc.path)
		// The request body itself is ~1 MB and is read a few times (JSON
		// decoding); tokenizing it would allocate hundreds of MB.
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d MB allocated in the process", tc.path, alloc>>20)
		require.Less(t, alloc, uint64(64<<20), tc.path)
	}
}

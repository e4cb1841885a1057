package worker

import (
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHugePromptRefusedBeforeTokenizing: a prompt that cannot fit the
// context whatever its tokens is refused with context_length_exceeded
// without tokenizing it, so its cost does not grow with its size: a
// prompt, messages, a chat whose rendering cannot fit (the text in a tool
// call's arguments), an embeddings input. With truncate an embeddings
// input is cut to what the context can take before it is tokenized, and
// embeds as a shorter input with the same first tokens does.
func TestHugePromptRefusedBeforeTokenizing(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	huge := strings.Repeat("Once upon a time there was a little girl named Lily. ", 18000) // ~950 KB
	hugeArgs, err := json.Marshal(map[string]string{"story": huge})
	require.NoError(t, err)
	var cut EmbedResponse
	resp := post(t, testCtx(t), base+"/v1/embeddings", map[string]any{"input": huge[:64<<10], "truncate": true})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cut))
	for _, tc := range []struct {
		path string
		body map[string]any
		want int
	}{
		{"/v1/completions", map[string]any{"prompt": huge, "max_tokens": 1}, http.StatusBadRequest},
		{"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: huge}}, "max_tokens": 1}, http.StatusBadRequest},
		// The text is in a tool call's arguments, which the template
		// writes: the rendered chat is checked before it is tokenized.
		{"/v1/chat/completions", map[string]any{"messages": []map[string]any{
			{"role": "assistant", "content": "", "tool_calls": []ToolCall{{ID: "c", Type: "function", Function: ToolCallFunction{Name: "f", Arguments: string(hugeArgs)}}}},
			{"role": "user", "content": "Once"}}, "max_tokens": 1}, http.StatusBadRequest},
		{"/v1/embeddings", map[string]any{"input": huge}, http.StatusBadRequest},
		{"/v1/embeddings", map[string]any{"input": []string{"Once", huge}}, http.StatusBadRequest},
		{"/v1/embeddings", map[string]any{"input": huge, "truncate": true}, http.StatusOK},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		resp := post(t, testCtx(t), base+tc.path, tc.body)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		runtime.ReadMemStats(&after)
		require.Equal(t, tc.want, resp.StatusCode, "%s: %s", tc.path, body)
		if tc.want == http.StatusOK {
			var er EmbedResponse
			require.NoError(t, json.Unmarshal(body, &er))
			require.Equal(t, cut.Data[0].Embedding, er.Data[0].Embedding, "the same first tokens, the same vector")
			require.Equal(t, cut.Usage, er.Usage)
		} else {
			var e ErrorBody
			require.NoError(t, json.Unmarshal(body, &e))
			require.Equal(t, "context_length_exceeded", e.Error.Code, tc.path)
		}
		// The request body itself is ~1 MB and is read a few times (JSON
		// decoding); tokenizing it would allocate hundreds of MB.
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d MB allocated in the process", tc.path, alloc>>20)
		require.Less(t, alloc, uint64(64<<20), tc.path)
	}
}

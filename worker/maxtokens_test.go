package worker

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMaxTokensDefault: a request without max_tokens has no limit but the
// context (OpenAI's default, llama-server's and Ollama's -1) on every
// generation endpoint; an explicit limit holds, and max_tokens 0 is
// refused on the OpenAI endpoints as OpenAI refuses it. The context (300)
// is above the 256 tokens the worker once defaulted to.
func TestMaxTokensDefault(t *testing.T) {
	const ctxLen = 300
	m, err := testLoad(testModelPath, LoadOptions{Threads: 1, ContextSize: ctxLen})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	msgs := `"messages":[{"role":"user","content":"Once upon a time"}]`
	for _, tc := range []struct {
		name  string
		mode  endpoint
		body  string
		want  int // max tokens; -1: the room the prompt leaves
		param string
	}{
		{"completions, none", endpointCompletion, `{"prompt":"Once upon a time"}`, -1, ""},
		{"chat, none", endpointChat, `{` + msgs + `}`, -1, ""},
		{"infer prompt, none", endpointInfer, `{"prompt":"Once upon a time"}`, -1, ""},
		{"infer messages, none", endpointInfer, `{` + msgs + `}`, -1, ""},
		{"completions, 5", endpointCompletion, `{"prompt":"Once upon a time","max_tokens":5}`, 5, ""},
		{"chat, max_completion_tokens 7", endpointChat, `{` + msgs + `,"max_completion_tokens":7}`, 7, ""},
		{"above the room", endpointCompletion, `{"prompt":"Once upon a time","max_tokens":300}`, -1, ""},
		{"completions, 0", endpointCompletion, `{"prompt":"Once upon a time","max_tokens":0}`, 0, "max_tokens"},
		{"chat, 0", endpointChat, `{` + msgs + `,"max_tokens":0}`, 0, "max_tokens"},
		{"chat, max_completion_tokens 0", endpointChat, `{` + msgs + `,"max_completion_tokens":0}`, 0, "max_completion_tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			var g genRequest
			require.Nil(t, decodeBody(w, r, &g, tc.mode))
			gr, aerr := prepare(t.Context(), m, &g, tc.mode)
			if tc.param != "" {
				require.NotNil(t, aerr)
				require.Equal(t, tc.param, aerr.param)
				return
			}
			require.Nil(t, aerr)
			want := tc.want
			if want < 0 {
				want = ctxLen - len(gr.Prompt)
			}
			require.Equal(t, want, gr.MaxTokens)
		})
	}

	// Through the API: the started event says the limit.
	cfg := testConfig(t)
	cfg.ContextSize = ctxLen
	_, base := startServer(t, cfg)
	got := infer(t, base, map[string]any{"prompt": "Once upon a time", "temperature": 0, "stop": []string{"Once"}})
	require.Equal(t, ctxLen-got.Started.PromptTokens, got.Started.MaxTokens)
}

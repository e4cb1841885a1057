package worker

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// A stream whose interrupted attempt filled the context resumes with all
// its tokens and ends (with "length"), rather than a 400.
func TestResumeFillingTheContext(t *testing.T) {
	cfg := testConfig(t)
	cfg.ContextSize = 24
	_, base := startServer(t, cfg)
	body := map[string]any{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0.9, "seed": 11}
	full := infer(t, base, body)
	require.NotNil(t, full.End)
	ids := full.ids()
	t.Logf("tokens_in=%d out=%d reason=%s", full.End.TokensIn, full.End.TokensOut, full.End.StopReason)
	resp := post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0.9, "seed": 11, "stream": true, ExtField: Ext{V: ExtVersion, TokenIDs: true, Resume: ids}})
	b, _ := io.ReadAll(resp.Body)
	t.Logf("resume of all %d tokens: %d %s", len(ids), resp.StatusCode, b)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(b), `"finish_reason":"length"`)
}

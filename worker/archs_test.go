package worker

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/rbee-project/rbee/model/synth"
	"github.com/stretchr/testify/require"
)

// TestServesEveryArchitecture: a worker serves a model of each
// architecture the engine runs (written by model/synth: experts, fused
// projections, windows, soft caps, LongRoPE), with several sequences in
// flight at once (batched), through the chat endpoint: each answer has
// its tokens, and the worker is still healthy after.
func TestServesEveryArchitecture(t *testing.T) {
	for _, arch := range synth.Archs() {
		t.Run(arch, func(t *testing.T) {
			mcfg := synth.DefaultConfig()
			mcfg.Arch, mcfg.Std, mcfg.SlidingWindow, mcfg.OrigCtx = arch, 0.3, 4, 64
			if arch == "qwen2moe" || arch == "qwen3moe" || arch == "llama" || arch == "gpt-oss" {
				mcfg.Experts, mcfg.ExpertsUsed = 4, 2
			}
			path := filepath.Join(t.TempDir(), arch+".gguf")
			require.NoError(t, synth.Write(path, mcfg))
			cfg := testConfig(t)
			cfg.ModelPath, cfg.Slots = path, 3
			_, base := startServer(t, cfg)
			body, err := json.Marshal(map[string]any{
				"messages": []Message{{Role: "user", Content: "the quick brown fox"}}, "max_tokens": 6, "temperature": 0})
			require.NoError(t, err)
			done := make(chan ChatCompletion, 3)
			for i := 0; i < 3; i++ {
				go func() {
					var cc ChatCompletion
					defer func() { done <- cc }()
					req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
					if err != nil {
						return
					}
					req.Header.Set("Content-Type", "application/json")
					resp, err := authed.Do(req)
					if err != nil {
						return
					}
					defer resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						_ = json.NewDecoder(resp.Body).Decode(&cc)
					}
				}()
			}
			for i := 0; i < 3; i++ {
				cc := <-done
				require.Equal(t, 6, cc.Usage.CompletionTokens, arch)
			}
			var info map[string]any
			require.Equal(t, http.StatusOK, getJSON(t, base+"/health", &info))
		})
	}
}

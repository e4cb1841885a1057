package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/stretchr/testify/require"
)

// synthRef is testdata/synth.llamacpp.json: llama.cpp's greedy ids for
// models that model/synth writes from a config (see its generator field).
type synthRef struct {
	PromptIDs []int32 `json:"prompt_ids"`
	Cases     []struct {
		Arch         string  `json:"arch"`
		Dim          int     `json:"dim"`
		Layers       int     `json:"layers"`
		Heads        int     `json:"heads"`
		KVHeads      int     `json:"kv_heads"`
		HeadDim      int     `json:"head_dim"`
		FF           int     `json:"ff"`
		Vocab        int     `json:"vocab"`
		Std          float32 `json:"std"`
		EmbedStd     float32 `json:"embed_std"`
		Window       int     `json:"sliding_window"`
		AttnCap      float32 `json:"attn_cap"`
		FinalCap     float32 `json:"final_cap"`
		Experts      int     `json:"experts"`
		ExpertsUsed  int     `json:"experts_used"`
		ExpertFF     int     `json:"expert_ff"`
		SharedFF     int     `json:"shared_ff"`
		Ctx          int     `json:"ctx"`
		OrigCtx      int     `json:"orig_ctx"`
		RopeAttn     float32 `json:"rope_attn_factor"`
		Yarn         float32 `json:"yarn_factor"`
		Seed         uint64  `json:"seed"`
		Type         string  `json:"type"`
		GeneratedIDs []int32 `json:"generated_ids"`
	} `json:"cases"`
}

// TestSynthMatchesLlamaCpp runs architectures that no real fixture covers
// (qwen3's per-head q/k norms; gemma's scaled embeddings and GELU; gemma2's
// soft caps, post norms and sliding window; gemma3's local RoPE; experts
// as Mixtral (llama), qwen2moe (with its shared expert), qwen3moe and
// gpt-oss (biases, attention sinks, swiglu_oai, YaRN);
// phi3's fused projections and LongRoPE (short and long factors, attention
// factor); heads
// longer than dim/heads; grouped KV heads) on random-weight models and
// compares free-running greedy generation with llama.cpp's, token for
// token. The prompt is longer than the windows, so windowed layers mask.
func TestSynthMatchesLlamaCpp(t *testing.T) {
	raw, err := os.ReadFile("testdata/synth.llamacpp.json")
	require.NoError(t, err)
	var ref synthRef
	require.NoError(t, json.Unmarshal(raw, &ref))
	require.NotEmpty(t, ref.Cases)
	for _, c := range ref.Cases {
		t.Run(fmt.Sprintf("%s-seed%d", c.Arch, c.Seed), func(t *testing.T) {
			typ, err := quant.ParseType(c.Type)
			require.NoError(t, err)
			cfg := synth.DefaultConfig()
			cfg.Arch, cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.HeadDim = c.Arch, c.Dim, c.Layers, c.Heads, c.KVHeads, c.HeadDim
			cfg.FF, cfg.Vocab, cfg.Std, cfg.Seed, cfg.Type = c.FF, c.Vocab, c.Std, c.Seed, typ
			cfg.EmbedStd, cfg.SlidingWindow, cfg.AttnCap, cfg.FinalCap = c.EmbedStd, c.Window, c.AttnCap, c.FinalCap
			cfg.Experts, cfg.ExpertsUsed, cfg.ExpertFF, cfg.SharedFF = c.Experts, c.ExpertsUsed, c.ExpertFF, c.SharedFF
			cfg.OrigCtx, cfg.RopeAttnFactor, cfg.YarnFactor = c.OrigCtx, c.RopeAttn, c.Yarn
			if c.Ctx > 0 {
				cfg.Ctx = c.Ctx
			}
			// llama.cpp ran at context 512, which picks LongRoPE's factors.
			m, err := Load(writeSynth(t, cfg), Options{Threads: 2, KVCache: KVF32, ContextSize: 512})
			require.NoError(t, err)
			defer m.Close()
			s := m.NewSession()
			ctx := context.Background()
			logits, err := s.eval(ctx, ref.PromptIDs)
			require.NoError(t, err)
			got := make([]int32, 0, len(c.GeneratedIDs))
			for range c.GeneratedIDs {
				id := argmax(logits)
				got = append(got, id)
				if logits, err = s.eval(ctx, []int32{id}); err != nil {
					require.NoError(t, err)
				}
			}
			require.Equal(t, c.GeneratedIDs, got)
		})
	}
}

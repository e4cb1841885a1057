package engine

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/synth"
)

// withKVs writes the synthetic model cfg with extra metadata keys (ones
// synth does not write for cfg).
func withKVs(t *testing.T, cfg synth.Config, extra map[string]any) string {
	t.Helper()
	w, err := synth.Build(cfg)
	require.NoError(t, err)
	for k, v := range extra {
		require.NoError(t, w.AddKV(k, v))
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, w.WriteFile(path))
	return path
}

// TestZeroMeansNone: llama.cpp reads expert_count 0 (and expert_used_count
// 0) as a dense model, and gemma3's sliding_window 0 as no window; a file
// that writes those zeros explicitly loads.
func TestZeroMeansNone(t *testing.T) {
	dense := withKVs(t, synth.DefaultConfig(), map[string]any{
		"llama.expert_count": uint32(0), "llama.expert_used_count": uint32(0),
	})
	m, err := Load(dense, Options{Threads: 1, ContextSize: 64})
	require.NoError(t, err, "a dense llama with expert_count = 0")
	m.Close()

	cfg := synth.DefaultConfig()
	cfg.Arch, cfg.HeadDim = "gemma3", 16 // synth writes no window: the file's 0 is the test's
	g := withKVs(t, cfg, map[string]any{"gemma3.attention.sliding_window": uint32(0)})
	m, err = Load(g, Options{Threads: 1, ContextSize: 64})
	require.NoError(t, err, "gemma3 with sliding_window = 0")
	defer m.Close()
	for _, l := range m.layers {
		require.False(t, l.swa)
	}
	require.Nil(t, m.ropeSWA)
}

// TestGemma3IgnoresAttnSoftcap: llama.cpp soft-caps attention scores for
// gemma2 only (hparams.attn_soft_cap); a gemma3 file's
// attn_logit_softcapping is not applied.
func TestGemma3IgnoresAttnSoftcap(t *testing.T) {
	cfg := synth.DefaultConfig()
	cfg.Arch, cfg.HeadDim = "gemma3", 16
	path := withKVs(t, cfg, map[string]any{"gemma3.attn_logit_softcapping": float32(0.5)})
	m, err := Load(path, Options{Threads: 1, ContextSize: 64})
	require.NoError(t, err)
	defer m.Close()
	require.Zero(t, m.hp.attnCap)
}

// TestMemoryNeedExperts: a mixture of experts' scratch (each pick's output
// for every row of a prompt batch) counts toward the memory bound: a
// small file of 512 experts, all used, cannot allocate gigabytes unseen.
func TestMemoryNeedExperts(t *testing.T) {
	dense := hparams{arch: "qwen3moe", dim: 4096, nLayer: 1, nHead: 32, nHeadKV: 8, headDim: 128, ff: 64, nCtx: 64}
	moe := dense
	moe.nExpert, moe.nExpertUsed, moe.ffExp = 512, 512, 64
	extra := moe.memoryNeed(KVF16, 0, 1, 32, 8, 1000, 1) - dense.memoryNeed(KVF16, 0, 1, 32, 8, 1000, 1)
	require.GreaterOrEqual(t, extra, float64(promptBatch*512*4096*4))
}

// TestPickTop: the picks are the largest, distinct, largest first, lower
// index on ties, and NaN never repeats a pick; the scratch is left clear.
func TestPickTop(t *testing.T) {
	used := make([]bool, 6)
	for _, tc := range []struct {
		p    []float32
		want []int32
	}{
		{[]float32{0.1, 0.5, 0.2, 0.5, 0, 0.3}, []int32{1, 3, 5}},
		// NaN compares false: which it picks is arbitrary, but distinct.
		{[]float32{nanF, nanF, nanF, 1, nanF, 2}, []int32{0, 1, 2}},
	} {
		got := make([]int32, 3)
		pickTop(tc.p, got, used)
		require.Equal(t, tc.want, got)
		require.Equal(t, make([]bool, 6), used)
	}
}

var nanF = float32(math.NaN())

package engine

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/synth"
)

// withKVs writes a copy of the synthetic model cfg with extra metadata.
func withKVs(t *testing.T, cfg synth.Config, extra map[string]any) string {
	t.Helper()
	src, err := gguf.Open(writeSynth(t, cfg))
	require.NoError(t, err)
	defer src.Close()
	w := gguf.NewWriter()
	for _, kv := range src.KVs {
		if v, ok := extra[kv.Key]; ok {
			require.NoError(t, w.AddKV(kv.Key, v))
			delete(extra, kv.Key)
			continue
		}
		require.NoError(t, w.AddKV(kv.Key, kv.Value))
	}
	for k, v := range extra {
		require.NoError(t, w.AddKV(k, v))
	}
	for i := range src.Tensors {
		ti := &src.Tensors[i]
		data, err := src.TensorData(ti)
		require.NoError(t, err)
		require.NoError(t, w.AddTensor(ti.Name, ti.Type, ti.Dims, data))
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
	cfg.Arch, cfg.HeadDim, cfg.SlidingWindow = "gemma3", 16, 4
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

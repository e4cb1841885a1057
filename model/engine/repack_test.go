package engine

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// stories260KQ4_0 is the Q4_0 fixture model: its matrices are repacked on
// CPUs with the repacked Q4_0 kernel.
const stories260KQ4_0 = "../../testdata/gguf/stories260K-quant/stories260K-Q4_0.gguf"

// TestRepackedMatchesFileLayout: a Q4_0, Q5_0, Q8_0, Q4_K, Q5_K or Q6_K model loaded with repacking (the
// default) gives the same logits, bit for bit (Q4_0 and the K-quants: within
// float tolerance, their repacked kernels' contracts being their own), and the same
// greedy ids as the same model loaded with NoRepack, for a prompt
// evaluated as one batch and token by token; and each gives the same
// logits, bit for bit, for the batch and token by token.
func TestRepackedMatchesFileLayout(t *testing.T) {
	cfg := synth.DefaultConfig()
	cfg.Type, cfg.Dim, cfg.FF, cfg.Heads, cfg.KVHeads = quant.Q4_0, 128, 256, 4, 2
	q40 := writeSynth(t, cfg)
	cfg.Type = quant.Q8_0
	q80 := writeSynth(t, cfg)
	cfg.Type = quant.Q5_0
	q50 := writeSynth(t, cfg)
	cfg.Type, cfg.Dim, cfg.FF = quant.Q4_K, 256, 512
	q4k := writeSynth(t, cfg)
	cfg.Type = quant.Q6_K
	q6k := writeSynth(t, cfg)
	cfg.Type = quant.Q5_K
	q5k := writeSynth(t, cfg)
	// Mixtures of experts: each expert's matrices are repacked too.
	moe := synth.DefaultConfig()
	moe.Arch, moe.Type, moe.Dim, moe.FF, moe.Heads, moe.KVHeads = "qwen3moe", quant.Q8_0, 128, 256, 4, 2
	moe.Experts, moe.ExpertsUsed, moe.ExpertFF = 8, 2, 128
	q3moe := writeSynth(t, moe)
	moe.Arch, moe.Type, moe.Dim, moe.SharedFF = "qwen2moe", quant.Q5_0, 128, 64
	q2moe := writeSynth(t, moe)
	moe.Arch, moe.Type, moe.Dim, moe.FF, moe.ExpertFF, moe.SharedFF = "llama", quant.Q4_K, 256, 512, 0, 0
	mixtral := writeSynth(t, moe)
	for _, path := range []string{
		stories260KQ4_0, q40, "../../testdata/gguf/stories260K-quant/stories260K-Q8_0.gguf", q80,
		"../../testdata/gguf/kquant/kquant-Q4_K.gguf", q4k, "../../testdata/gguf/kquant/kquant-Q6_K.gguf", q6k,
		q5k, q50, q3moe, q2moe, mixtral,
	} {
		// An f32 KV cache: the f16 one's rounding would turn the kernels'
		// last-bit differences into larger ones.
		packed, err := Load(path, Options{Threads: 2, ContextSize: 256, KVCache: KVF32})
		require.NoError(t, err)
		plain, err := Load(path, Options{Threads: 2, ContextSize: 256, NoRepack: true, KVCache: KVF32})
		require.NoError(t, err)
		if !packed.layers[0].wq.Repacked() {
			t.Logf("%s: no repacked kernel on this CPU; comparing the file layout with itself", path)
		}
		require.False(t, plain.layers[0].wq.Repacked())
		if e := packed.layers[0].moe; e != nil {
			for _, set := range [][]*quant.Matrix{e.gate, e.up, e.down} {
				for i, mat := range set {
					require.Equal(t, packed.layers[0].wq.Repacked(), mat.Repacked(), "%s: expert %d of %d", path, i, len(set))
				}
			}
			if e.shGate != nil {
				require.Equal(t, packed.layers[0].wq.Repacked(), e.shGate.Repacked(), "%s: shared expert", path)
			}
			require.False(t, plain.layers[0].moe.gate[0].Repacked())
		}
		ids := packed.Tokenizer().Encode("Once upon a time there was a little girl", true, false)
		batch := func(m *Model) []float32 {
			s := m.NewSession()
			l, err := s.eval(context.Background(), ids)
			require.NoError(t, err)
			return append([]float32(nil), l...)
		}
		single := func(m *Model) []float32 {
			s := m.NewSession()
			var l []float32
			for _, id := range ids {
				var err error
				l, err = s.eval(context.Background(), []int32{id})
				require.NoError(t, err)
			}
			return append([]float32(nil), l...)
		}
		wq := packed.layers[0].wq
		own := (wq.Type == quant.Q4_0 || wq.Type == quant.Q4_K || wq.Type == quant.Q5_K || wq.Type == quant.Q6_K) && wq.Repacked()
		for name, f := range map[string]func(*Model) []float32{"batch": batch, "single": single} {
			a, b := f(packed), f(plain)
			require.Len(t, a, len(b))
			for i := range a {
				if own {
					// Q4_0's and the K-quants' repacked kernels have
					// float contracts of their own: one or two FMAs per
					// block and row.
					require.InDelta(t, b[i], a[i], 1e-3*(1+math.Abs(float64(b[i]))), "%s %s logit %d", path, name, i)
					continue
				}
				require.Equal(t, math.Float32bits(b[i]), math.Float32bits(a[i]), "%s %s logit %d", path, name, i)
			}
		}
		// Either way a prompt evaluated as one batch and token by token
		// gives the same logits, bit for bit.
		for _, m := range []*Model{packed, plain} {
			a, b := batch(m), single(m)
			for i := range a {
				require.Equal(t, math.Float32bits(b[i]), math.Float32bits(a[i]), "%s batch against single, logit %d", path, i)
			}
		}
		gen := func(m *Model) []int32 {
			var out []int32
			_, err := m.NewSession().Generate(context.Background(), GenerateRequest{Prompt: ids, MaxTokens: 24},
				func(tk Token) error { out = append(out, tk.ID); return nil })
			require.NoError(t, err)
			return out
		}
		require.Equal(t, gen(plain), gen(packed), path)
		packed.Close()
		plain.Close()
	}
}

package engine

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/cputime"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// benchModel writes a small synthetic model (dim 256, 4 layers, vocab 4096)
// of type typ into the benchmark's TempDir and loads it.
func benchModel(b *testing.B, typ quant.Type) *Model {
	b.Helper()
	cfg := synth.DefaultConfig()
	cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Vocab, cfg.Type = 256, 4, 4, 4, 768, 4096, typ
	m, err := Load(writeSynth(b, cfg), Options{})
	require.NoError(b, err)
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkDecode measures one single-token forward pass (tg) at a short
// context; reported per token.
func BenchmarkDecode(b *testing.B) {
	for _, typ := range []quant.Type{quant.F32, quant.Q8_0, quant.Q4_K} {
		b.Run(typ.String(), func(b *testing.B) {
			m := benchModel(b, typ)
			s := m.NewSession()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if len(s.tokens)+1 > m.hp.nCtx || i%256 == 0 {
					s.Reset()
				}
				s.one[0] = int32(i % m.hp.vocab)
				if _, err := s.eval(ctx, s.one[:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPrompt measures processing a 128-token prompt (pp) from an empty
// cache; tokens/s is reported.
func BenchmarkPrompt(b *testing.B) {
	const n = 128
	for _, typ := range []quant.Type{quant.F32, quant.Q8_0, quant.Q4_K} {
		b.Run(typ.String(), func(b *testing.B) {
			m := benchModel(b, typ)
			s := m.NewSession()
			prompt := make([]int32, n)
			for i := range prompt {
				prompt[i] = int32((i * 31) % m.hp.vocab)
			}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.Reset()
				if _, err := s.eval(ctx, prompt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

func TestBenchAndInspect(t *testing.T) {
	m := loadStories(t)
	res, err := Bench(context.Background(), m, BenchConfig{PromptTokens: 16, GenTokens: 8, Reps: 3})
	require.NoError(t, err)
	require.Equal(t, 3, res.Reps)
	for _, st := range []BenchStats{res.PP, res.TG} {
		require.Positive(t, st.Min)
		require.LessOrEqual(t, st.Min, st.Median)
		require.LessOrEqual(t, st.Median, st.Max)
	}
	_, err = Bench(context.Background(), m, BenchConfig{PromptTokens: 16, Reps: 0})
	require.ErrorIs(t, err, ErrBadRequest)
	_, err = Bench(context.Background(), m, BenchConfig{PromptTokens: 5000, Reps: 1})
	require.ErrorIs(t, err, ErrContextOverflow)

	ins := Inspect(m.File())
	require.EqualValues(t, 3, ins.Version)
	require.Len(t, ins.Metadata, 19)
	require.Len(t, ins.Tensors, 48)
	require.Equal(t, "token_embd.weight", ins.Tensors[0].Name)
	require.EqualValues(t, 64*512*4, ins.Tensors[0].Bytes)
	for _, e := range ins.Metadata {
		if e.Key == "tokenizer.ggml.tokens" {
			require.Contains(t, e.Summary, "(512 elements)")
		}
	}
}

// BenchmarkBatchDecode measures one batched decode step of 1, 4, 8 and 16
// sequences at a short context (the worker's continuous batching);
// tokens/s counts all sequences. RBEE_BENCH_MODEL selects a model file
// instead of the synthetic Q4_K one.
func BenchmarkBatchDecode(b *testing.B) {
	for _, n := range []int{1, 4, 8, 16} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := benchDecodeModel(b)
			batch := m.NewBatch()
			plan := make([]segment, n)
			for i := range plan {
				s := m.NewSession()
				s.ensureKV(256)
				plan[i] = segment{s: s, ids: s.one[:], logits: true}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range plan {
					s := plan[k].s
					if len(s.tokens)+1 > 256 {
						s.Reset()
					}
					s.one[0] = int32((i + k) % m.hp.vocab)
				}
				if err := batch.forward(context.Background(), plan); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkBatchDecodeContext is BenchmarkBatchDecode at the context of a
// served chat (each sequence holds a 128-token prompt and decodes up to
// 256, then is cut back to the prompt, as a worker's slot reuses its
// Session): the KV cache is warm, and attention reads 128–256 positions
// per row, so it weighs as it does in serving.
func BenchmarkBatchDecodeContext(b *testing.B) {
	const prompt, limit = 128, 256
	for _, n := range []int{1, 8, 16} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := benchDecodeModel(b)
			batch := m.NewBatch()
			plan := make([]segment, n)
			ids := make([]int32, prompt)
			for i := range plan {
				s := m.NewSession()
				for j := range ids {
					ids[j] = int32((i*prompt + j*7) % m.hp.vocab)
				}
				// Warm the cache to the limit, then keep the prompt.
				for len(s.tokens) < limit {
					_, err := s.eval(context.Background(), ids[:min(prompt, limit-len(s.tokens))])
					require.NoError(b, err)
				}
				s.tokens = s.tokens[:prompt]
				plan[i] = segment{s: s, ids: s.one[:], logits: true}
			}
			b.ReportAllocs()
			cpu0, err := cputime.Self()
			require.NoError(b, err)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range plan {
					s := plan[k].s
					if len(s.tokens)+1 > limit {
						s.tokens = s.tokens[:prompt]
					}
					s.one[0] = int32((i + k) % m.hp.vocab)
				}
				if err := batch.forward(context.Background(), plan); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu1, err := cputime.Self()
			require.NoError(b, err)
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tokens/s")
			// CPU time per token does not depend on what else a shared
			// machine runs (a rate does).
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/1e3/float64(n*b.N), "cpu-ms/token")
		})
	}
}

// benchDecodeModel loads RBEE_BENCH_MODEL (context 512) or, without it,
// the synthetic Q4_K bench model.
func benchDecodeModel(b *testing.B) *Model {
	p := os.Getenv("RBEE_BENCH_MODEL")
	if p == "" {
		return benchModel(b, quant.Q4_K)
	}
	m, err := Load(p, Options{ContextSize: 512})
	require.NoError(b, err)
	b.Cleanup(func() { m.Close() })
	return m
}

// TestBenchParallel: every sequence of a parallel run decodes the greedy
// ids it decodes alone, and Bench reports every level with the first as
// the ratio's base.
func TestBenchParallel(t *testing.T) {
	m := loadStories(t)
	ctx := context.Background()
	const n, p, g = 3, 150, 12 // three prompts over four forward passes of up to 128 rows
	run, err := benchParallel(ctx, m, n, p, g)
	require.NoError(t, err)
	require.Positive(t, run.pp)
	require.Positive(t, run.tg)
	require.Len(t, run.ids, n)
	for k := range n {
		s := m.NewSession()
		prompt := make([]int32, p)
		for i := range prompt {
			prompt[i] = int32((uint64(k*p+i)*2654435761 + 12345) % uint64(m.hp.vocab))
		}
		logits, err := s.eval(ctx, prompt)
		require.NoError(t, err)
		var alone []int32
		for range g {
			id := argmax(logits)
			alone = append(alone, id)
			logits, err = s.eval(ctx, []int32{id})
			require.NoError(t, err)
		}
		require.Equal(t, alone, run.ids[k], "sequence %d", k)
	}

	res, err := Bench(ctx, m, BenchConfig{PromptTokens: 8, GenTokens: 4, Reps: 2, Parallel: []int{1, 4}})
	require.NoError(t, err)
	require.Len(t, res.Parallel, 2)
	require.Equal(t, 1, res.Parallel[0].Sequences)
	require.Equal(t, 4, res.Parallel[1].Sequences)
	require.InDelta(t, 1, res.Parallel[0].TGRatio, 1e-12)
	require.InDelta(t, res.Parallel[1].TG.Median/res.Parallel[0].TG.Median, res.Parallel[1].TGRatio, 1e-12)
	for _, pr := range res.Parallel {
		require.Positive(t, pr.PP.Min)
		require.Positive(t, pr.TG.Min)
	}
	for _, bad := range []BenchConfig{
		{PromptTokens: 8, GenTokens: 0, Reps: 1, Parallel: []int{2}},
		{PromptTokens: 8, GenTokens: 4, Reps: 1, Parallel: []int{0}},
		{PromptTokens: 8, GenTokens: 4, Reps: 1, Parallel: []int{MaxBenchParallel + 1}},
	} {
		_, err := Bench(ctx, m, bad)
		require.ErrorIs(t, err, ErrBadRequest, "%+v", bad)
	}
	half := m.hp.nCtx/2 + 1 // each fits alone, not both
	_, err = Bench(ctx, m, BenchConfig{PromptTokens: half, GenTokens: half, Reps: 1, Parallel: []int{2}})
	require.ErrorIs(t, err, ErrContextOverflow)
}

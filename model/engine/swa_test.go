package engine

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// TestSlidingWindowCache: in gemma2 and gemma3 models whose window is far
// shorter than the text, the windowed layers' caches stop growing at
// about a window and a prompt chunk (their front dropped a tile at a
// time) and their scores start at the window's tile; the logits are those
// of caches that keep every position (fullKV, the computation before
// caches slid), bit for bit, with either cache type: a long prompt
// evaluated in chunks, then decoding token by token past many slides,
// then prompts that reuse the cache (a prefix whose window is still held)
// or must start again (a prefix whose window was dropped).
func TestSlidingWindowCache(t *testing.T) {
	const window, ctxLen = 40, 1024
	for _, arch := range []string{"gemma2", "gemma3"} {
		for _, kv := range []KVType{KVF16, KVF32} {
			cfg := synth.DefaultConfig()
			cfg.Arch, cfg.Type, cfg.Dim, cfg.FF, cfg.Heads, cfg.KVHeads, cfg.Layers = arch, quant.Q8_0, 64, 128, 4, 2, 4
			cfg.SlidingWindow, cfg.Ctx = window, ctxLen
			path := writeSynth(t, cfg)
			load := func(full bool) *Model {
				m, err := Load(path, Options{Threads: 2, ContextSize: ctxLen, KVCache: kv, fullKV: full})
				require.NoError(t, err)
				t.Cleanup(func() { m.Close() })
				return m
			}
			slide, full := load(false), load(true)
			require.True(t, slide.hasSWA())
			ss, fs := slide.NewSession(), full.NewSession()
			name := arch + "/" + kvName(kv)
			same := func(what string, a, b []float32) {
				t.Helper()
				require.Len(t, a, len(b))
				for i := range a {
					require.Equal(t, math.Float32bits(b[i]), math.Float32bits(a[i]), "%s %s: logit %d", name, what, i)
				}
			}
			eval := func(what string, ids []int32) []float32 {
				t.Helper()
				a, err := ss.eval(context.Background(), ids)
				require.NoError(t, err)
				b, err := fs.eval(context.Background(), ids)
				require.NoError(t, err)
				same(what, a, b)
				return a
			}
			r := rand.New(rand.NewPCG(7, 7))
			prompt := make([]int32, 300) // three chunks: the third slides
			for i := range prompt {
				prompt[i] = int32(r.IntN(slide.hp.vocab))
			}
			logits := eval("prompt", prompt)
			for range 300 {
				logits = eval("decode", []int32{argmax(logits)})
			}
			require.Positive(t, ss.base, "%s: the windowed caches slid", name)
			require.LessOrEqual(t, ss.swaRows, slide.swaSpan(), "%s: windowed rows", name)
			require.Greater(t, ss.capTok, ss.swaRows, "%s: the global layers' caches grew past the windowed ones'", name)

			// A prompt that keeps the first tokens up to one whose window
			// is still held reuses the cache; one that keeps only tokens
			// whose window was dropped starts again. Either way the
			// logits are the full cache's.
			held := append(append([]int32(nil), ss.tokens[:ss.base+window+5]...), 1, 2, 3)
			dropped := append(append([]int32(nil), ss.tokens[:ss.base-1]...), 4, 5)
			for _, tc := range []struct {
				what   string
				prompt []int32
				reuse  int // what the sliding cache reuses
				full   int // what the full one does
			}{{"held prefix", held, len(held) - 3, len(held) - 3}, {"dropped prefix", dropped, 0, len(dropped) - 2}} {
				n, nf := ss.CommonPrefix(tc.prompt), fs.CommonPrefix(tc.prompt)
				require.Equal(t, tc.reuse, n, "%s %s", name, tc.what)
				require.Equal(t, tc.full, nf, "%s %s", name, tc.what)
				ss.tokens, fs.tokens = ss.tokens[:n], fs.tokens[:nf]
				a, err := ss.eval(context.Background(), tc.prompt[n:])
				require.NoError(t, err)
				b, err := fs.eval(context.Background(), tc.prompt[nf:])
				require.NoError(t, err)
				same(tc.what, a, b)
			}

			// Sequences at different points of their slides, decoded
			// together in one batch, generate what each does alone with
			// the full cache.
			prompts := [][]int32{prompt[:150], prompt[:290], prompt[:37]}
			b := slide.NewBatch()
			var seqs []*Sequence
			for _, p := range prompts {
				q, err := slide.NewSession().Begin(GenerateRequest{Prompt: p, MaxTokens: 200})
				require.NoError(t, err)
				seqs = append(seqs, q)
			}
			got := make([][]int32, len(seqs))
			for active := append([]*Sequence(nil), seqs...); len(active) > 0; {
				require.NoError(t, b.Step(active))
				kept := active[:0]
				for _, q := range active {
					i := indexOf(seqs, q)
					for _, tk := range q.Tokens() {
						got[i] = append(got[i], tk.ID)
					}
					if !q.Done() {
						kept = append(kept, q)
					}
				}
				active = kept
			}
			for i, p := range prompts {
				var want []int32
				_, err := full.NewSession().Generate(context.Background(), GenerateRequest{Prompt: p, MaxTokens: 200},
					func(tk Token) error { want = append(want, tk.ID); return nil })
				require.NoError(t, err)
				require.Equal(t, want, got[i], "%s: batched sequence %d", name, i)
			}

			// A pipeline's stages and a tensor group's shards slide alike
			// (the head's positions decide): a long first turn and a
			// second that reuses it give the ids of the same group whose
			// caches keep everything (a group sums in its own order, so
			// it is compared with itself, not with the whole model).
			turn1 := GenerateRequest{Prompt: prompt[:290], MaxTokens: 150}
			opts := Options{Threads: 2, ContextSize: ctxLen, KVCache: kv}
			fullOpts := opts
			fullOpts.fullKV = true
			pipe, _ := loadPipeline(t, path, []int{0, 1, 4}, opts)
			pipeFull, _ := loadPipeline(t, path, []int{0, 1, 4}, fullOpts)
			tens, _ := loadTensorGroup(t, path, []int{0, 1, 2}, false, opts)
			tensFull, _ := loadTensorGroup(t, path, []int{0, 1, 2}, false, fullOpts)
			for _, g := range []struct {
				name       string
				slide, ref *Model
			}{{"pipeline", pipe, pipeFull}, {"tensor", tens, tensFull}} {
				s, rs := g.slide.NewSession(), g.ref.NewSession()
				first := generate(t, s, turn1)
				require.Equal(t, generate(t, rs, turn1).ids, first.ids, "%s %s: first turn", name, g.name)
				require.Positive(t, s.base, "%s %s: slid", name, g.name)
				turn2 := GenerateRequest{Prompt: append(append(append([]int32(nil), prompt[:290]...), first.ids...), 9, 8, 7), MaxTokens: 50}
				require.Positive(t, s.CommonPrefix(turn2.Prompt), "%s %s: second turn reuses the cache", name, g.name)
				require.Equal(t, generate(t, rs, turn2).ids, generate(t, s, turn2).ids, "%s %s: second turn", name, g.name)
			}
		}
	}
}

func kvName(kv KVType) string {
	if kv == KVF32 {
		return "f32"
	}
	return "f16"
}

// TestSlidingWindowSpanSaturates: a file's window near the int range
// leaves the windowed rows and the memory estimate positive and bounded
// by the context (they overflowed to negative).
func TestSlidingWindowSpanSaturates(t *testing.T) {
	hp := hparams{swaWindow: math.MaxInt64 - 7, swaPattern: 6, nCtx: 4096, headDim: 64, nLayer: 12}
	require.Positive(t, hp.swaSpan())
	need := hp.memoryNeed(KVF16, 0, 12, 4, 4, 1000, 1)
	full := hparams{nCtx: 4096, headDim: 64, nLayer: 12}
	require.Equal(t, full.memoryNeed(KVF16, 0, 12, 4, 4, 1000, 1), need, "every layer at the whole context")
}

// TestStageRefusesDroppedWindow: a later stage asked to evaluate from a
// position whose window its windowed layers have dropped refuses with
// ErrStageState and keeps its cache (it indexed before its windowed
// cache's first row and panicked, taking the node down); from the first
// position whose window it holds, and from 0, it evaluates.
func TestStageRefusesDroppedWindow(t *testing.T) {
	const window = 40
	cfg := synth.DefaultConfig()
	cfg.Arch, cfg.Type, cfg.Dim, cfg.FF, cfg.Heads, cfg.KVHeads, cfg.Layers = "gemma2", quant.Q8_0, 64, 128, 4, 2, 4
	cfg.SlidingWindow, cfg.Ctx = window, 1024
	path := writeSynth(t, cfg)
	for _, kv := range []KVType{KVF16, KVF32} {
		head, ls := loadPipeline(t, path, []int{0, 1, 4}, Options{Threads: 2, ContextSize: 1024, KVCache: kv})
		s := head.NewSession()
		prompt := make([]int32, 300) // slides the windowed caches
		for i := range prompt {
			prompt[i] = int32(i % 50)
		}
		_, err := s.eval(context.Background(), prompt)
		require.NoError(t, err)
		st := ls.sess[0][s.ID()]
		base := st.base
		require.Positive(t, base, "%s: the stage's windowed caches slid", kvName(kv))
		hidden := make([]float32, cfg.Dim)
		for _, tc := range []struct {
			pos    int
			refuse bool
		}{{1, true}, {base, true}, {base + window - 2, true}, {base + window - 1, false}, {0, false}} {
			_, err := ls.b[0].StageForward(context.Background(), []StageSegment{{Session: st, Pos: tc.pos, N: 1, Logits: true}}, hidden)
			if tc.refuse {
				require.ErrorIs(t, err, ErrStageState, "%s: from %d", kvName(kv), tc.pos)
				require.Len(t, st.tokens, len(prompt), "%s: from %d: the cache is kept", kvName(kv), tc.pos)
				require.Equal(t, base, st.base, "%s: from %d", kvName(kv), tc.pos)
				continue
			}
			require.NoError(t, err, "%s: from %d", kvName(kv), tc.pos)
			require.Len(t, st.tokens, tc.pos+1, "%s: from %d", kvName(kv), tc.pos)
		}
	}
}

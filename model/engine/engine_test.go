package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/ggufedit"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/model/tokenizer"
)

const storiesPath = "../../testdata/model/stories260K.gguf"

func loadStories(t testing.TB) *Model {
	t.Helper()
	m, err := Load(storiesPath, Options{Threads: 2})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func TestInfo(t *testing.T) {
	m := loadStories(t)
	info := m.Info()
	require.Equal(t, "llama", info.Arch)
	require.Equal(t, 5, info.Layers)
	require.Equal(t, 64, info.Dim)
	require.Equal(t, 8, info.Heads)
	require.Equal(t, 4, info.KVHeads)
	require.Equal(t, 512, info.VocabSize)
	require.Equal(t, 2048, info.TrainContextLength)
	require.Equal(t, 2048, info.ContextLength)
	require.Equal(t, "F32", info.Quantization)
	// 2 × 512×64 embeddings + 5 × (64·64·2 + 64·32·2 + 3·64·172 + 2·64) + 64
	require.EqualValues(t, 2*512*64+5*(64*64*2+64*32*2+3*64*172+2*64)+64, info.Params)
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.gguf"), Options{})
	require.Error(t, err)
	// A GGUF without a supported architecture.
	_, err = Load("../../testdata/gguf/ggml-quant-ref.gguf", Options{})
	require.ErrorIs(t, err, ErrUnsupportedModel)
	// A tokenizer-only file has no weights.
	_, err = Load("../../testdata/tokenizer/ggml-vocab-llama-spm.gguf", Options{})
	require.Error(t, err)
}

func collect(t *testing.T, s *Session, req GenerateRequest) ([]int32, string, Result, error) {
	t.Helper()
	var ids []int32
	var sb strings.Builder
	res, err := s.Generate(context.Background(), req, func(tk Token) error {
		if tk.ID >= 0 {
			ids = append(ids, tk.ID)
		}
		sb.WriteString(tk.Text)
		return nil
	})
	return ids, sb.String(), res, err
}

func TestGenerateErrors(t *testing.T) {
	m := loadStories(t)
	s := m.NewSession()
	cases := []struct {
		name string
		req  GenerateRequest
		want error
	}{
		{"empty prompt", GenerateRequest{}, ErrEmptyPrompt},
		{"bad id", GenerateRequest{Prompt: []int32{1, 512}}, ErrBadRequest},
		{"negative id", GenerateRequest{Prompt: []int32{-1}}, ErrBadRequest},
		{"negative max", GenerateRequest{Prompt: []int32{1}, MaxTokens: -1}, ErrBadRequest},
		{"bad temperature", GenerateRequest{Prompt: []int32{1}, Sample: SampleParams{Temperature: -1}}, ErrBadRequest},
		{"bad top_p", GenerateRequest{Prompt: []int32{1}, Sample: SampleParams{TopP: 2}}, ErrBadRequest},
		{"empty stop", GenerateRequest{Prompt: []int32{1}, Stop: []string{""}}, ErrBadRequest},
		{"overflow", GenerateRequest{Prompt: make([]int32, 2048)}, ErrContextOverflow},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, err := collect(t, s, c.req)
			require.ErrorIs(t, err, c.want)
		})
	}
	// With a 16-token context, a 15-token prompt leaves room to evaluate
	// one generated token, whose logits give a second one.
	m2, err := Load(storiesPath, Options{Threads: 1, ContextSize: 16})
	require.NoError(t, err)
	defer m2.Close()
	ids, _, res, err := collect(t, m2.NewSession(), GenerateRequest{Prompt: make([]int32, 15)})
	require.NoError(t, err)
	require.Len(t, ids, 2)
	require.Equal(t, StopLength, res.StopReason)
	_, _, _, err = collect(t, m2.NewSession(), GenerateRequest{Prompt: make([]int32, 16)})
	require.ErrorIs(t, err, ErrContextOverflow)
}

func TestGenerateStopsAndCancel(t *testing.T) {
	m := loadStories(t)
	bos := []int32{m.Tokenizer().BOS()}
	_, full, _, err := collect(t, m.NewSession(), GenerateRequest{Prompt: bos, MaxTokens: 60})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(full, " Once upon a time, there was a little girl named Lily."), full)

	// A stop string ends generation; it and what follows are not emitted.
	ids, text, res, err := collect(t, m.NewSession(), GenerateRequest{Prompt: bos, MaxTokens: 60, Stop: []string{"little girl"}})
	require.NoError(t, err)
	require.Equal(t, StopString, res.StopReason)
	require.Equal(t, " Once upon a time, there was a ", text)
	require.Equal(t, len(ids), res.CompletionTokens)

	// A stop string that never occurs changes nothing.
	_, text, res, err = collect(t, m.NewSession(), GenerateRequest{Prompt: bos, MaxTokens: 60, Stop: []string{"zebra!"}})
	require.NoError(t, err)
	require.Equal(t, full, text)
	require.Equal(t, StopLength, res.StopReason)
	require.Equal(t, 1, res.PromptTokens)
	require.Equal(t, 60, res.CompletionTokens)
	require.Positive(t, res.PromptDuration)
	require.Positive(t, res.GenDuration)

	// Cancellation between tokens.
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	res, err = m.NewSession().Generate(ctx, GenerateRequest{Prompt: bos, MaxTokens: 100}, func(Token) error {
		n++
		if n == 3 {
			cancel()
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, StopCancelled, res.StopReason)
	require.Equal(t, 3, res.CompletionTokens)

	// An emit error is returned as is.
	boom := errors.New("boom")
	_, err = m.NewSession().Generate(context.Background(), GenerateRequest{Prompt: bos, MaxTokens: 5}, func(Token) error { return boom })
	require.ErrorIs(t, err, boom)
}

func TestPrefixReuseGivesSameResult(t *testing.T) {
	m := loadStories(t)
	tok := m.Tokenizer()
	p1 := tok.Encode("Once upon a time", true, false)
	p2 := tok.Encode("Once upon a time there was a dog", true, false)
	s := m.NewSession()
	_, _, first, err := collect(t, s, GenerateRequest{Prompt: p1, MaxTokens: 5})
	require.NoError(t, err)
	require.Zero(t, first.CachedTokens)
	got, _, res, err := collect(t, s, GenerateRequest{Prompt: p2, MaxTokens: 20})
	require.NoError(t, err)
	require.Equal(t, len(p1), res.CachedTokens, "the first prompt was not evaluated again")
	want, _, fresh, err := collect(t, m.NewSession(), GenerateRequest{Prompt: p2, MaxTokens: 20})
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Zero(t, fresh.CachedTokens)
	// Same prompt again: only the last token is re-evaluated, same output.
	again, _, res, err := collect(t, s, GenerateRequest{Prompt: p2, MaxTokens: 20})
	require.NoError(t, err)
	require.Equal(t, want, again)
	require.Equal(t, len(p2)-1, res.CachedTokens)
}

func TestSampledGenerationIsSeeded(t *testing.T) {
	m := loadStories(t)
	bos := []int32{m.Tokenizer().BOS()}
	p := SampleParams{Temperature: 1.0, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, Seed: 42}
	a, _, _, err := collect(t, m.NewSession(), GenerateRequest{Prompt: bos, MaxTokens: 40, Sample: p})
	require.NoError(t, err)
	b, _, _, err := collect(t, m.NewSession(), GenerateRequest{Prompt: bos, MaxTokens: 40, Sample: p})
	require.NoError(t, err)
	require.Equal(t, a, b)
	p.Seed = 7
	c, _, _, err := collect(t, m.NewSession(), GenerateRequest{Prompt: bos, MaxTokens: 40, Sample: p})
	require.NoError(t, err)
	require.NotEqual(t, a, c)
}

func TestConcurrentSessions(t *testing.T) {
	m := loadStories(t)
	bos := []int32{m.Tokenizer().BOS()}
	want, _, _, err := collect(t, m.NewSession(), GenerateRequest{Prompt: bos, MaxTokens: 30})
	require.NoError(t, err)
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			s := m.NewSession()
			var got []int32
			_, err := s.Generate(context.Background(), GenerateRequest{Prompt: bos, MaxTokens: 30}, func(tk Token) error {
				got = append(got, tk.ID)
				return nil
			})
			if err == nil && !slicesEqual(got, want) {
				err = errors.New("concurrent session diverged")
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		require.NoError(t, <-errs)
	}
}

func slicesEqual(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDecodeStepDoesNotAllocate: the per-token forward pass reuses the
// Session's buffers.
func TestDecodeStepDoesNotAllocate(t *testing.T) {
	// The repack cache's case: a node's workers map it, and every pass
	// checks that the mapped files did not change (filesChanged).
	cache := t.TempDir()
	for _, c := range []struct {
		path, cache string
	}{{storiesPath, ""}, {"../../testdata/gguf/kquant/kquant-Q4_K.gguf", ""}, {"../../testdata/gguf/kquant/kquant-Q4_K.gguf", cache}} {
		path := c.path
		m, err := Load(path, Options{Threads: 2, ContextSize: 512, RepackCache: c.cache})
		require.NoError(t, err)
		s := m.NewSession()
		ctx := context.Background()
		_, err = s.eval(ctx, []int32{1, 300, 301})
		require.NoError(t, err)
		allocs := testing.AllocsPerRun(50, func() {
			s.one[0] = 300
			if _, err := s.eval(ctx, s.one[:]); err != nil {
				panic(err)
			}
		})
		require.Zero(t, allocs, path)
		// Sampling with the full chain does not allocate either.
		p := SampleParams{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1}
		allocs = testing.AllocsPerRun(50, func() { s.smp.sample(s.logits, p, s.tokens) })
		require.Zero(t, allocs)
		m.Close()
	}
}

func writeSynth(t testing.TB, cfg synth.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "synth.gguf")
	require.NoError(t, synth.Write(path, cfg))
	return path
}

// TestSynthModels: synthetic models of every supported arch and several
// weight types load and generate; batched prompt processing gives the same
// logits as token-by-token evaluation.
func TestSynthModels(t *testing.T) {
	cases := []struct {
		arch    string
		typ     quant.Type
		experts int
	}{
		{"llama", quant.F32, 0}, {"llama", quant.Q8_0, 0}, {"llama", quant.Q4_K, 0}, {"qwen2", quant.F16, 0}, {"qwen2", quant.Q6_K, 0},
		{"qwen3", quant.Q8_0, 0}, {"gemma", quant.F16, 0}, {"gemma2", quant.Q8_0, 0}, {"gemma3", quant.Q4_K, 0},
		{"llama", quant.Q4_0, 4}, {"qwen2moe", quant.Q8_0, 4}, {"qwen3moe", quant.Q4_K, 8}, {"phi3", quant.Q8_0, 0},
		{"gpt-oss", quant.Q8_0, 4}, {"gpt-oss", quant.Q4_K, 8},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%s-%d", c.arch, c.typ, c.experts), func(t *testing.T) {
			cfg := synth.DefaultConfig()
			cfg.Arch, cfg.Type = c.arch, c.typ
			cfg.Dim, cfg.Heads, cfg.KVHeads, cfg.FF = 256, 4, 2, 256
			cfg.SlidingWindow = 4 // the prompt is longer: windowed layers mask
			if c.experts > 0 {
				cfg.Experts, cfg.ExpertsUsed, cfg.ExpertFF = c.experts, 2, 256
			}
			m, err := Load(writeSynth(t, cfg), Options{Threads: 2})
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, c.arch, m.Info().Arch)
			prompt := m.Tokenizer().Encode("the quick brown fox jumps over the lazy dog", true, false)
			require.Greater(t, len(prompt), 5)
			batched, err := m.NewSession().eval(context.Background(), prompt)
			require.NoError(t, err)
			batched = append([]float32(nil), batched...)
			s := m.NewSession()
			var one []float32
			for _, id := range prompt {
				one, err = s.eval(context.Background(), []int32{id})
				require.NoError(t, err)
			}
			// Same math, different batch shapes: equal up to float rounding.
			require.Less(t, maxAbsDiff(batched, one), 1e-4)
			ids, _, res, err := collect(t, m.NewSession(), GenerateRequest{Prompt: prompt, MaxTokens: 8})
			require.NoError(t, err)
			require.Equal(t, res.CompletionTokens, len(ids))
		})
	}
}

func TestCloseStopsSessions(t *testing.T) {
	m, err := Load(storiesPath, Options{Threads: 1})
	require.NoError(t, err)
	s := m.NewSession()
	_, _, _, err = collect(t, s, GenerateRequest{Prompt: []int32{1}, MaxTokens: 2})
	require.NoError(t, err)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close is idempotent")
	_, _, _, err = collect(t, s, GenerateRequest{Prompt: []int32{1, 400}, MaxTokens: 2})
	require.ErrorIs(t, err, ErrClosed)
}

// TestVocabSizeMismatch: a tokenizer with more tokens than the embedding
// has rows is a broken model, refused at Load (it loaded, and a prompt
// holding one of the extra tokens was refused as the client's bad
// request); fewer tokens than rows (padded embeddings) still load.
func TestVocabSizeMismatch(t *testing.T) {
	src, err := gguf.Open(writeSynth(t, synth.DefaultConfig())) // 512 tokens, 512 rows
	require.NoError(t, err)
	defer src.Close()
	for _, tc := range []struct {
		name  string
		extra int // tokens added (> 0) or removed (< 0)
		want  error
	}{
		{"more tokens than rows", 1000, ErrBadModel},
		{"one more token", 1, ErrBadModel},
		{"fewer tokens than rows", -100, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := rewriteModel(t, src, func(kv gguf.KV) any {
				switch kv.Key {
				case "tokenizer.ggml.tokens":
					toks := slices.Clone(kv.Value.Data.([]string))
					for i := 0; i < tc.extra; i++ {
						toks = append(toks, fmt.Sprintf("extra%d", i))
					}
					return toks[:len(toks)+min(tc.extra, 0)]
				case "tokenizer.ggml.scores":
					return resize(kv.Value.Data.([]float32), tc.extra, 0)
				case "tokenizer.ggml.token_type":
					return resize(kv.Value.Data.([]int32), tc.extra, 1)
				}
				return kv.Value
			})
			m, err := Load(path, Options{Threads: 1})
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				require.ErrorContains(t, err, "token_embd.weight has 512 rows")
				return
			}
			require.NoError(t, err)
			m.Close()
		})
	}
}

// resize returns s with n copies of fill appended (n > 0) or its last -n
// elements dropped.
func resize[T any](s []T, n int, fill T) []T {
	if n < 0 {
		return slices.Clone(s[:len(s)+n])
	}
	s = slices.Clone(s)
	for range n {
		s = append(s, fill)
	}
	return s
}

// rewriteModel writes a copy of src whose metadata values are what value
// returns for each pair, and returns its path.
func rewriteModel(t *testing.T, src *gguf.File, value func(gguf.KV) any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, ggufedit.Write(path, src, value, nil))
	return path
}

// TestTokenizerErrorMessage: a broken vocabulary is ErrBadModel wrapping
// the tokenizer's error, which names itself once (it said "tokenizer:
// tokenizer: bad tokenizer metadata").
func TestTokenizerErrorMessage(t *testing.T) {
	src, err := gguf.Open(writeSynth(t, synth.DefaultConfig()))
	require.NoError(t, err)
	defer src.Close()
	path := rewriteModel(t, src, func(kv gguf.KV) any {
		if kv.Key == "tokenizer.ggml.tokens" {
			toks := slices.Clone(kv.Value.Data.([]string))
			toks[300] = toks[301]
			return toks
		}
		return kv.Value
	})
	_, err = Load(path, Options{Threads: 1})
	require.ErrorIs(t, err, ErrBadModel)
	require.ErrorIs(t, err, tokenizer.ErrBadMetadata)
	require.ErrorContains(t, err, "duplicate token")
	require.NotContains(t, err.Error(), "tokenizer: tokenizer:")
}

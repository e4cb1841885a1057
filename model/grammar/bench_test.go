package grammar

import (
	"testing"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/tokenizer"
	"github.com/stretchr/testify/require"
)

// vocabFile prepares the vocabulary of a tokenizer-only GGUF in
// testdata/tokenizer.
func vocabFile(b testing.TB, name string) *Vocab {
	f, err := gguf.Open("../../testdata/tokenizer/" + name)
	require.NoError(b, err)
	b.Cleanup(func() { f.Close() })
	tok, err := tokenizer.FromGGUF(f)
	require.NoError(b, err)
	return TokenizerVocab(tok)
}

// BenchmarkMask measures one mask over Llama 2's 32000-token vocabulary,
// uncached (a new Matcher each time, the cost of the first visit of a
// state) and cached (the same state again), at states of increasing
// breadth.
func BenchmarkMask(b *testing.B) { benchMask(b, vocabFile(b, "ggml-vocab-llama-spm.gguf")) }

// BenchmarkMaskQwen2 is BenchmarkMask over Qwen2's 151k-token byte-level
// BPE vocabulary.
func BenchmarkMaskQwen2(b *testing.B) { benchMask(b, vocabFile(b, "ggml-vocab-qwen2.gguf")) }

func benchMask(b *testing.B, v *Vocab) {
	s, err := CompileSchema([]byte(testSchemas[0]))
	require.NoError(b, err)
	// The baseline: one greedy pass over the same logits, what sampling
	// costs without a grammar.
	b.Run("baseline-argmax", func(b *testing.B) {
		logits := make([]float32, len(v.pieces))
		for i := range logits {
			logits[i] = float32(i % 97)
		}
		var best int
		for b.Loop() {
			best = 0
			for i, l := range logits {
				if l > logits[best] {
					best = i
				}
			}
		}
		_ = best
	})
	// A string of a format is walked token by token (no plain-text
	// shortcut), but its automaton rejects most tokens at their first
	// byte.
	formatted, err := CompileSchema([]byte(`{"type":"object","properties":{"at":{"type":"string","format":"date-time"}}}`))
	require.NoError(b, err)
	for _, tc := range []struct {
		name, prefix string
		s            *Schema
	}{
		{"start", ``, s},
		{"key", `{"`, s},
		{"string", `{"name":"Jo`, s},
		{"number", `{"name":"Jo","age":1`, s},
		{"date-time", `{"at":"2024-05-01T1`, formatted},
	} {
		s := tc.s
		b.Run(tc.name+"/uncached", func(b *testing.B) {
			for b.Loop() {
				m := s.NewMatcher(v)
				require.NoError(b, m.Write([]byte(tc.prefix)))
				m.Allowed()
			}
		})
		b.Run(tc.name+"/cached", func(b *testing.B) {
			m := s.NewMatcher(v)
			require.NoError(b, m.Write([]byte(tc.prefix)))
			logits := make([]float32, len(v.pieces))
			for b.Loop() {
				m.Mask(logits)
			}
		})
	}
}

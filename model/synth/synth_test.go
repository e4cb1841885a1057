package synth

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/tokenizer"
)

func TestVocab(t *testing.T) {
	for _, n := range []int{MinVocab, 512, 32000} {
		toks, scores, types := Vocab(n)
		require.Len(t, toks, n)
		require.Len(t, scores, n)
		require.Len(t, types, n)
		seen := map[string]bool{}
		for i, s := range toks {
			require.False(t, seen[s], "duplicate %q", s)
			seen[s] = true
			if i > 0 {
				require.Less(t, scores[i], scores[i-1])
			}
			// Every multi-character normal piece splits into two pieces of
			// the vocabulary, so SentencePiece merges can reach it.
			if types[i] == 1 && len([]rune(s)) > 1 {
				r := []rune(s)
				require.True(t, seen[string(r[:len(r)-1])] && seen[string(r[len(r)-1:])], "piece %q unreachable", s)
			}
		}
	}
}

func TestStoredType(t *testing.T) {
	cases := []struct {
		t    quant.Type
		cols int
		want quant.Type
	}{
		{quant.Q4_K, 768, quant.Q4_K},
		{quant.Q4_K, 288, quant.Q5_0},
		{quant.Q6_K, 288, quant.Q8_0},
		{quant.Q5_K, 288, quant.Q5_1},
		{quant.Q4_K, 172, quant.F16},
		{quant.Q8_0, 288, quant.Q8_0},
		{quant.Q8_0, 172, quant.F16},
		{quant.F32, 7, quant.F32},
	}
	for _, c := range cases {
		require.Equal(t, c.want, StoredType(c.t, c.cols), "%v cols %d", c.t, c.cols)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
	}{
		{"arch", func(c *Config) { c.Arch = "gpt2" }},
		{"heads", func(c *Config) { c.Heads = 3 }},
		{"kv heads", func(c *Config) { c.KVHeads = 3 }},
		{"odd head dim", func(c *Config) { c.Dim, c.Heads, c.KVHeads = 36, 4, 4 }},
		{"vocab", func(c *Config) { c.Vocab = 100 }},
		{"zero layers", func(c *Config) { c.Layers = 0 }},
		{"std", func(c *Config) { c.Std = 0 }},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		c.edit(&cfg)
		err := Write(filepath.Join(t.TempDir(), "x.gguf"), cfg)
		require.ErrorIs(t, err, ErrConfig, c.name)
	}
}

func TestWriteReadBack(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Arch, cfg.Type, cfg.Dim, cfg.FF, cfg.KVHeads = "qwen2", quant.Q4_K, 256, 256, 2
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, Write(path, cfg))
	f, err := gguf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	arch, _ := f.String("general.architecture")
	require.Equal(t, "qwen2", arch)
	n, _ := f.Uint("qwen2.attention.head_count_kv")
	require.EqualValues(t, 2, n)
	_, tied := f.Tensor("output.weight")
	require.False(t, tied)
	q, ok := f.Tensor("blk.0.attn_q.weight")
	require.True(t, ok)
	require.Equal(t, quant.Q4_K, q.Type)
	require.Equal(t, []uint64{256, 256}, q.Dims)
	_, ok = f.Tensor("blk.1.attn_k.bias")
	require.True(t, ok)
	tok, err := tokenizer.FromGGUF(f)
	require.NoError(t, err)
	require.Equal(t, cfg.Vocab, tok.VocabSize())
	ids := tok.Encode("the quick brown fox", true, false)
	require.Equal(t, "the quick brown fox", strings.TrimPrefix(tok.Decode(ids), " "))

	// Same config, same bytes.
	w1, err := Build(cfg)
	require.NoError(t, err)
	w2, err := Build(cfg)
	require.NoError(t, err)
	var b1, b2 bytes.Buffer
	_, err = w1.WriteTo(&b1)
	require.NoError(t, err)
	_, err = w2.WriteTo(&b2)
	require.NoError(t, err)
	require.Equal(t, b1.Bytes(), b2.Bytes())
}

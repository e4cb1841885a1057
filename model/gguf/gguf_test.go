package gguf

import (
	"os"
	"testing"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/stretchr/testify/require"
)

const stories = "../../testdata/model/stories260K.gguf"

func TestOpenStories260K(t *testing.T) {
	f, err := Open(stories)
	require.NoError(t, err)
	defer f.Close()
	require.EqualValues(t, 3, f.Version)
	require.Len(t, f.KVs, 19)
	require.Len(t, f.Tensors, 48)
	require.EqualValues(t, 14176, f.DataOffset)
	require.EqualValues(t, 32, f.Alignment)

	arch, ok := f.String("general.architecture")
	require.True(t, ok)
	require.Equal(t, "llama", arch)
	ctx, ok := f.Uint("llama.context_length")
	require.True(t, ok)
	require.EqualValues(t, 2048, ctx)
	for key, want := range map[string]uint64{
		"llama.embedding_length": 64, "llama.feed_forward_length": 172, "llama.block_count": 5,
		"llama.attention.head_count": 8, "llama.attention.head_count_kv": 4, "llama.rope.dimension_count": 8,
	} {
		got, ok := f.Uint(key)
		require.True(t, ok, key)
		require.Equal(t, want, got, key)
	}
	eps, ok := f.Float("llama.attention.layer_norm_rms_epsilon")
	require.True(t, ok)
	require.InDelta(t, 1e-5, eps, 1e-12)
	toks, ok := f.Strings("tokenizer.ggml.tokens")
	require.True(t, ok)
	require.Len(t, toks, 512)
	require.Equal(t, "<0x00>", toks[3])
	scores, ok := f.Float32s("tokenizer.ggml.scores")
	require.True(t, ok)
	require.Len(t, scores, 512)
	types, ok := f.Int32s("tokenizer.ggml.token_type")
	require.True(t, ok)
	require.EqualValues(t, []int32{2, 3, 3, 6}, types[:4])
	_, ok = f.Uint("llama.rope.freq_base")
	require.False(t, ok)

	te, ok := f.Tensor("token_embd.weight")
	require.True(t, ok)
	require.Equal(t, []uint64{64, 512}, te.Dims)
	require.Equal(t, quant.F32, te.Type)
	require.EqualValues(t, 64*512, te.NumElements())
	data, err := f.TensorData(te)
	require.NoError(t, err)
	require.Len(t, data, 64*512*4)
	fk, ok := f.Tensor("blk.0.ffn_down.weight")
	require.True(t, ok)
	require.Equal(t, []uint64{172, 64}, fk.Dims)
	require.NoError(t, f.Close())
	_, err = f.TensorData(te)
	require.ErrorIs(t, err, ErrClosed)
}

// TestAdviseHugePages: a part of the file's data is accepted (the advice
// itself is tested in internal/hugepage and model/engine), bytes that are
// not the file's are ErrNotFound, a closed file ErrClosed, a parsed slice
// has nothing to advise.
func TestAdviseHugePages(t *testing.T) {
	f, err := Open(stories)
	require.NoError(t, err)
	ti, ok := f.Tensor("token_embd.weight")
	require.True(t, ok)
	data, err := f.TensorData(ti)
	require.NoError(t, err)
	require.NoError(t, f.AdviseHugePages(data))
	require.NoError(t, f.AdviseHugePages(data[len(data)/2:len(data)/2+3]))
	require.NoError(t, f.AdviseHugePages(nil))
	require.ErrorIs(t, f.AdviseHugePages(make([]byte, 64)), ErrNotFound)
	require.NoError(t, f.Close())
	require.ErrorIs(t, f.AdviseHugePages(data), ErrClosed)

	raw, err := os.ReadFile(stories)
	require.NoError(t, err)
	p, err := Parse(raw)
	require.NoError(t, err)
	pd, err := p.TensorData(ti)
	require.NoError(t, err)
	require.NoError(t, p.AdviseHugePages(pd), "nothing to advise for a parsed slice")
}

package quant_test

import (
	"math"
	"testing"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/stretchr/testify/require"
)

const refFile = "../../testdata/gguf/ggml-quant-ref.gguf"

// refTypes are the 14 types of ggml-quant-ref.gguf (tensor name = lower-case type name).
var refTypes = []string{"f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs"}

func openRef(t testing.TB) *gguf.File {
	f, err := gguf.Open(refFile)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func tensorF32(t testing.TB, f *gguf.File, name string) []float32 {
	ti, ok := f.Tensor(name)
	require.True(t, ok, name)
	require.Equal(t, quant.F32, ti.Type)
	b, err := f.TensorData(ti)
	require.NoError(t, err)
	out := make([]float32, ti.NumElements())
	require.NoError(t, quant.Dequantize(quant.F32, b, out))
	return out
}

func TestDequantizeMatchesReference(t *testing.T) {
	f := openRef(t)
	require.Len(t, refTypes, 14)
	for _, name := range refTypes {
		t.Run(name, func(t *testing.T) {
			ti, ok := f.Tensor(name)
			require.True(t, ok)
			typ, err := quant.ParseType(name)
			require.NoError(t, err)
			require.Equal(t, typ, ti.Type, "tensor's own type")
			data, err := f.TensorData(ti)
			require.NoError(t, err)
			want := tensorF32(t, f, name+".dequant")
			got := make([]float32, ti.NumElements())
			require.NoError(t, quant.Dequantize(ti.Type, data, got))
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("element %d: got %v (%#x), want %v (%#x)", i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
				}
			}
		})
	}
}

func TestQuantizeMatchesReference(t *testing.T) {
	f := openRef(t)
	src := tensorF32(t, f, "source")
	for _, name := range refTypes {
		t.Run(name, func(t *testing.T) {
			ti, ok := f.Tensor(name)
			require.True(t, ok)
			want, err := f.TensorData(ti)
			require.NoError(t, err)
			require.True(t, quant.CanQuantize(ti.Type))
			got := make([]byte, len(want))
			require.NoError(t, quant.Quantize(ti.Type, src, got))
			for i := range want {
				if got[i] != want[i] {
					bb := ti.Type.BlockBytes()
					t.Fatalf("byte %d (block %d, offset %d): got %#x, want %#x", i, i/bb, i%bb, got[i], want[i])
				}
			}
		})
	}
}

package quant_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/stretchr/testify/require"
)

const refFile = "../../testdata/gguf/ggml-quant-ref.gguf"

// refTypes are the 14 types of ggml-quant-ref.gguf (tensor name = lower-case type name).
var refTypes = []string{"f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs"}

// openRefMore opens ggml-quant-ref-more.gguf (the types the 14-type file
// lacks), closed when the test ends.
func openRefMore(t testing.TB) *gguf.File {
	f, err := gguf.Open("../../testdata/gguf/ggml-quant-ref-more.gguf")
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

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

// TestDequantizeEveryReference checks every tensor T that has a T.dequant
// beside it, in every ggml-quant-ref*.gguf under testdata/gguf (the 14
// types above and ggml-quant-ref-more.gguf's i-quants, ternary types and
// MXFP4, and any reference file of the same shape dropped there), bit for
// bit.
func TestDequantizeEveryReference(t *testing.T) {
	files, err := filepath.Glob("../../testdata/gguf/ggml-quant-ref*.gguf")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 2)
	seen := map[quant.Type]bool{}
	for _, path := range files {
		f, err := gguf.Open(path)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		for _, ti := range f.Tensors {
			want, ok := f.Tensor(ti.Name + ".dequant")
			if !ok {
				continue
			}
			t.Run(filepath.Base(path)+"/"+ti.Name, func(t *testing.T) {
				data, err := f.TensorData(&ti)
				require.NoError(t, err)
				wantF := tensorF32(t, f, want.Name)
				got := make([]float32, ti.NumElements())
				require.NoError(t, quant.Dequantize(ti.Type, data, got))
				for i := range wantF {
					if math.Float32bits(got[i]) != math.Float32bits(wantF[i]) {
						t.Fatalf("element %d: got %v (%#x), want %v (%#x)", i, got[i], math.Float32bits(got[i]), wantF[i], math.Float32bits(wantF[i]))
					}
				}
			})
			seen[ti.Type] = true
		}
	}
	for _, typ := range []quant.Type{quant.IQ2_XXS, quant.IQ2_XS, quant.IQ2_S, quant.IQ3_XXS, quant.IQ3_S,
		quant.IQ1_S, quant.IQ1_M, quant.TQ1_0, quant.TQ2_0, quant.MXFP4} {
		require.True(t, seen[typ], "no reference for %s", typ)
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

// TestMXFP4PassesOverNaN: a NaN in a block leaves its exponent to the
// others, as ggml's quantize_row_mxfp4_ref compares (amax < |v|): a block
// of a NaN, 1 and -0.5 gets exponent 125 (levels of 0.125: 1 is level 8,
// -0.5 level -4), the NaN index 0. The NaN made the exponent 0, and the
// block's values were lost.
func TestMXFP4PassesOverNaN(t *testing.T) {
	src := make([]float32, 32)
	src[0], src[1], src[17] = float32(math.NaN()), 1, -0.5
	got := make([]byte, 17)
	require.NoError(t, quant.Quantize(quant.MXFP4, src, got))
	want := make([]byte, 17)
	want[0] = 125          // floor(log2 1) - 2 + 127
	want[1] = 0x00         // NaN: index 0; src[16] = 0: index 0
	want[2] = 0x6 | 0xC<<4 // 1 = 8·0.125 (index 6); -0.5 = -4·0.125 (index 12)
	require.Equal(t, want, got)
}

// TestMXFP4MatchesReference: MXFP4 quantises the reference floats to
// ggml's bytes (ggml-quant-ref-more.gguf's mxfp4 is ggml_quantize_chunk of
// ggml-quant-ref.gguf's source), and its product, with activations
// quantised to Q8_0 as ggml's vec_dot_mxfp4_q8_0 takes them, equals
// ggml's arithmetic on the reference weights: per block the f16 scale
// times the halved E8M0 scale times the integer sum, blocks summed in
// order.
func TestMXFP4MatchesReference(t *testing.T) {
	src := tensorF32(t, openRef(t), "source")
	f := openRefMore(t)
	ti, ok := f.Tensor("mxfp4")
	require.True(t, ok)
	want, err := f.TensorData(ti)
	require.NoError(t, err)
	got := make([]byte, len(want))
	require.NoError(t, quant.Quantize(quant.MXFP4, src[:ti.NumElements()], got))
	require.Equal(t, want, got, "ggml's MXFP4 bytes")

	pool := quant.NewPool(2)
	defer pool.Close()
	cols, rows := int(ti.Dims[0]), int(ti.Dims[1])
	m := &quant.Matrix{Type: quant.MXFP4, Rows: rows, Cols: cols, Data: want}
	vt, ok := quant.VecDotType(quant.MXFP4)
	require.True(t, ok)
	require.Equal(t, quant.Q8_0, vt)
	x := make([]float32, cols)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	xq := make([]byte, cols/32*34)
	require.NoError(t, quant.Quantize(quant.Q8_0, x, xq))
	levels := [16]int32{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}
	res := make([]float32, rows)
	quant.MatMul(pool, res, m, x, 1)
	for r := 0; r < rows; r++ {
		var sum float32
		for b := 0; b < cols/32; b++ {
			wb := want[(r*cols/32+b)*17:][:17]
			xb := xq[b*34:][:34]
			e := wb[0]
			half := math.Float32frombits(uint32(e-1) << 23)
			if e < 2 {
				half = math.Float32frombits(0x00200000 << e)
			}
			var s int32
			for j := 0; j < 16; j++ {
				s += levels[wb[1+j]&0xf]*int32(int8(xb[2+j])) + levels[wb[1+j]>>4]*int32(int8(xb[18+j]))
			}
			sum += quant.F16ToF32(uint16(xb[0])|uint16(xb[1])<<8) * half * float32(s)
		}
		// The SIMD kernel sums eight lanes, then those: the same terms in
		// another order.
		require.InDelta(t, sum, res[r], 1e-4*(1+math.Abs(float64(sum))), "row %d", r)
	}
}

// TestIQKernelsMatchReference: the 2- and 3-bit i-quants multiply as
// ggml's vec_dot_*_q8_K: activations quantised to Q8_K, integer sums per
// 32 weights: MatMul equals the product of ggml's dequantised reference
// weights and the dequantised Q8_K activations, up to the rounding of the
// float scales (the integer sums are exact), for one and several vectors.
func TestIQKernelsMatchReference(t *testing.T) {
	f := openRefMore(t)
	pool := quant.NewPool(2)
	defer pool.Close()
	for _, name := range []string{"iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s"} {
		t.Run(name, func(t *testing.T) {
			ti, ok := f.Tensor(name)
			require.True(t, ok)
			vt, ok := quant.VecDotType(ti.Type)
			require.True(t, ok)
			require.Equal(t, quant.Q8_K, vt)
			data, err := f.TensorData(ti)
			require.NoError(t, err)
			cols, rows := int(ti.Dims[0]), int(ti.Dims[1])
			w := tensorF32(t, f, name+".dequant")
			m := &quant.Matrix{Type: ti.Type, Rows: rows, Cols: cols, Data: data}
			for _, n := range []int{1, 5} {
				x := make([]float32, n*cols)
				for i := range x {
					x[i] = float32(math.Sin(float64(i)))
				}
				got := make([]float32, n*rows)
				quant.MatMul(pool, got, m, x, n)
				xb, err := quant.Q8_K.RowBytes(cols)
				require.NoError(t, err)
				for v := 0; v < n; v++ {
					xq := make([]byte, xb)
					require.NoError(t, quant.Quantize(quant.Q8_K, x[v*cols:(v+1)*cols], xq))
					xd := make([]float32, cols)
					require.NoError(t, quant.Dequantize(quant.Q8_K, xq, xd))
					for r := 0; r < rows; r++ {
						var want, mag float64
						for c := 0; c < cols; c++ {
							p := float64(w[r*cols+c]) * float64(xd[c])
							want += p
							mag += math.Abs(p)
						}
						require.InDelta(t, want, float64(got[v*rows+r]), 1e-5*mag+1e-6, "vector %d row %d", v, r)
					}
				}
			}
		})
	}
}

// TestMatMulDequantTypes: the types without a kernel of their own multiply
// through their dequantiser: MatMul equals the float32 product of the
// dequantised reference weights, for one and several vectors, and the
// engine can load them (VecDotType).
func TestMatMulDequantTypes(t *testing.T) {
	f := openRefMore(t)
	pool := quant.NewPool(2)
	defer pool.Close()
	for _, name := range []string{"iq1_s", "iq1_m", "tq1_0", "tq2_0"} {
		t.Run(name, func(t *testing.T) {
			ti, ok := f.Tensor(name)
			require.True(t, ok)
			_, ok = quant.VecDotType(ti.Type)
			require.True(t, ok)
			data, err := f.TensorData(ti)
			require.NoError(t, err)
			cols, rows := int(ti.Dims[0]), int(ti.Dims[1])
			w := tensorF32(t, f, name+".dequant")
			m := &quant.Matrix{Type: ti.Type, Rows: rows, Cols: cols, Data: data}
			for _, n := range []int{1, 5} {
				x := make([]float32, n*cols)
				for i := range x {
					x[i] = float32(math.Sin(float64(i))) // deterministic, both signs
				}
				got := make([]float32, n*rows)
				quant.MatMul(pool, got, m, x, n)
				for v := 0; v < n; v++ {
					for r := 0; r < rows; r++ {
						var want float32
						for c := 0; c < cols; c++ {
							want += w[r*cols+c] * x[v*cols+c]
						}
						require.Equal(t, want, got[v*rows+r], "vector %d row %d", v, r)
					}
				}
			}
		})
	}
}

package quant_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/stretchr/testify/require"
)

func open(t testing.TB, path string) *gguf.File {
	f, err := gguf.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// TestQuantizeMatchesLlamaQuantize re-quantises the F32 weights of the
// kquant model and expects the exact bytes llama-quantize --pure stored
// (no importance matrix): 16 real Q4_K and 16 Q6_K tensors.
func TestQuantizeMatchesLlamaQuantize(t *testing.T) {
	src := open(t, "../../testdata/gguf/kquant/kquant-F32.gguf")
	for _, name := range []string{"kquant-Q4_K.gguf", "kquant-Q6_K.gguf"} {
		q := open(t, "../../testdata/gguf/kquant/"+name)
		n := 0
		for i := range q.Tensors {
			ti := &q.Tensors[i]
			if ti.Type == quant.F32 {
				continue
			}
			n++
			t.Run(name+"/"+ti.Name, func(t *testing.T) {
				want, err := q.TensorData(ti)
				require.NoError(t, err)
				st, ok := src.Tensor(ti.Name)
				require.True(t, ok)
				require.Equal(t, ti.Dims, st.Dims)
				raw, err := src.TensorData(st)
				require.NoError(t, err)
				got := make([]byte, len(want))
				require.NoError(t, quant.Quantize(ti.Type, quant.BytesToF32(raw), got))
				require.True(t, string(got) == string(want), "quantised bytes differ")
			})
		}
		require.Equal(t, 16, n, name)
	}
}

// TestMatMulRealWeights runs MatMul on every 2-D tensor of the quantised
// real models (Q8_0, Q4_0, Q5_0, F16 with 172-wide rows, Q4_K, Q6_K, F32) and
// compares with dequantise-then-float64-dot.
func TestMatMulRealWeights(t *testing.T) {
	pool := quant.NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(11, 12))
	seen := map[quant.Type]bool{}
	for _, path := range []string{
		"../../testdata/model/stories260K.gguf",
		"../../testdata/gguf/stories260K-quant/stories260K-Q8_0.gguf",
		"../../testdata/gguf/stories260K-quant/stories260K-Q4_0.gguf",
		"../../testdata/gguf/kquant/kquant-Q4_K.gguf",
		"../../testdata/gguf/kquant/kquant-Q6_K.gguf",
	} {
		f := open(t, path)
		for i := range f.Tensors {
			ti := &f.Tensors[i]
			if len(ti.Dims) != 2 {
				continue
			}
			seen[ti.Type] = true
			cols, rows := int(ti.Dims[0]), int(ti.Dims[1])
			data, err := f.TensorData(ti)
			require.NoError(t, err)
			deq := make([]float32, rows*cols)
			require.NoError(t, quant.Dequantize(ti.Type, data, deq))
			const n = 2
			x := make([]float32, n*cols)
			for k := range x {
				x[k] = float32(r.NormFloat64())
			}
			dst := make([]float32, n*rows)
			quant.MatMul(pool, dst, &quant.Matrix{Type: ti.Type, Rows: rows, Cols: cols, Data: data}, x, n)
			tol := 2e-2
			switch ti.Type {
			case quant.F32:
				tol = 1e-5
			case quant.F16:
				tol = 2e-3
			}
			for v := 0; v < n; v++ {
				for row := 0; row < rows; row++ {
					var want, mag float64
					for c := 0; c < cols; c++ {
						p := float64(deq[row*cols+c]) * float64(x[v*cols+c])
						want += p
						mag += math.Abs(p)
					}
					if got := float64(dst[v*rows+row]); math.Abs(got-want) > tol*mag+1e-6 {
						t.Fatalf("%s %s vector %d row %d: got %v, want %v", path, ti.Name, v, row, got, want)
					}
				}
			}
		}
	}
	for _, typ := range []quant.Type{quant.F32, quant.F16, quant.Q8_0, quant.Q4_0, quant.Q5_0, quant.Q4_K, quant.Q6_K} {
		require.True(t, seen[typ], typ.String())
	}
}

package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSIMDMatchesGeneric compares every assembly kernel with its generic
// Go reference on random data over a table of lengths.
func TestSIMDMatchesGeneric(t *testing.T) {
	if !useSIMD(true) {
		t.Skip("no SIMD kernels on this CPU/build")
	}
	r := rand.New(rand.NewPCG(7, 8))
	for typ := range genericKernels {
		if !CanQuantize(typ) && !slices.Contains(iqDotTypes, typ) {
			continue // the dequantised types: dotDequant, no SIMD kernel
		}
		simd := dotKernels[typ]
		gen := genericKernels[typ]
		bs := max(typ.BlockSize(), 1)
		lengths := []int{bs, 2 * bs, 3 * bs, 5 * bs, 16 * bs}
		if bs == 1 {
			lengths = []int{1, 7, 8, 9, 31, 32, 33, 100, 4096}
		}
		for _, cols := range lengths {
			t.Run(fmt.Sprintf("%s/%d", typ, cols), func(t *testing.T) {
				for trial := 0; trial < 5; trial++ {
					m, deq := quantMatrix(t, r, typ, 1, cols)
					x := randVec(r, cols, float32(1+trial))
					vt := vecDotType(typ)
					xb, err := vt.RowBytes(cols)
					require.NoError(t, err)
					xq := make([]byte, xb)
					quantizeActivations(vt, x, xq)
					xd := make([]float32, cols)
					require.NoError(t, Dequantize(vt, xq, xd))
					var mag float64
					for i := range xd {
						mag += math.Abs(float64(deq[i]) * float64(xd[i]))
					}
					want := gen(cols, m.Data, xq)
					got := simd(cols, m.Data, xq)
					require.InDelta(t, want, got, 1e-5*mag+1e-6, "trial %d", trial)
				}
			})
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 100, 1000, 4099} {
		a, b := randVec(r, n, 1), randVec(r, n, 1)
		var mag float64
		for i := range a {
			mag += math.Abs(float64(a[i]) * float64(b[i]))
		}
		require.InDelta(t, dotF32Generic(a, b), dotF32Impl(a, b), 1e-5*mag+1e-7, "f32 n=%d", n)
	}
	require.Equal(t, float32(0), DotF32(nil, []float32{1}))
}

// TestSIMDSwitch checks MatMul gives the same answers with either kernel set.
func TestSIMDSwitch(t *testing.T) {
	if !useSIMD(true) {
		t.Skip("no SIMD kernels on this CPU/build")
	}
	defer useSIMD(true)
	r := rand.New(rand.NewPCG(9, 10))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range matmulTypes {
		m, _ := quantMatrix(t, r, typ, 16, 512)
		x := randVec(r, 2*512, 1)
		a, b := make([]float32, 32), make([]float32, 32)
		useSIMD(false)
		MatMul(p, a, m, x, 2)
		useSIMD(true)
		MatMul(p, b, m, x, 2)
		for i := range a {
			require.InDelta(t, a[i], b[i], 1e-4*(math.Abs(float64(a[i]))+1), "%s %d", typ, i)
		}
	}
}

// TestDot4MatchesSingle checks every four-vector kernel against four calls
// of the single-vector kernel of its type: the results must be identical
// bit for bit, so MatMul's output does not depend on the batch size.
func TestDot4MatchesSingle(t *testing.T) {
	if !useSIMD(true) || len(dot4Kernels) == 0 {
		t.Skip("no four-vector kernels on this CPU/build")
	}
	r := rand.New(rand.NewPCG(13, 14))
	for typ, k4 := range dot4Kernels {
		bs := typ.BlockSize()
		lengths := []int{bs, 2 * bs, 3 * bs, 16 * bs}
		if bs == 1 {
			lengths = []int{1, 7, 8, 9, 33, 100, 4096}
		}
		for _, cols := range lengths {
			t.Run(fmt.Sprintf("%s/%d", typ, cols), func(t *testing.T) {
				m, _ := quantMatrix(t, r, typ, 1, cols)
				vt := vecDotType(typ)
				xB, _ := vt.RowBytes(cols)
				xq := make([]byte, 4*xB)
				for v := 0; v < 4; v++ {
					quantizeActivations(vt, randVec(r, cols, float32(v+1)), xq[v*xB:(v+1)*xB])
				}
				var out [4]float32
				k4(cols, m.Data, xq, xB, &out)
				for v := 0; v < 4; v++ {
					// Bit-identical: batch size must not change results.
					want := dotKernels[typ](cols, m.Data, xq[v*xB:(v+1)*xB])
					require.Equal(t, math.Float32bits(want), math.Float32bits(out[v]), "vector %d: %v vs %v", v, want, out[v])
				}
			})
		}
	}
}

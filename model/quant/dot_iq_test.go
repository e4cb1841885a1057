package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestIQSIMDMatchesTwin: the SIMD kernels of the 2- and 3-bit i-quants
// (one and four vectors) give their generic twins' results bit for bit
// (dot_iq.go defines the float order), on random blocks (every codebook
// index, sign, high index bit and scale) and activations quantised to
// Q8_K, for one to sixteen blocks.
func TestIQSIMDMatchesTwin(t *testing.T) {
	if !useSIMD(true) {
		t.Skip("no SIMD kernels on this CPU/build")
	}
	r := rand.New(rand.NewPCG(51, 52))
	for _, typ := range iqDotTypes {
		if !hasSIMDKernel(typ) {
			require.NotEqual(t, "amd64", runtime.GOARCH, "%s: no AVX2 kernel", typ)
			t.Logf("%s: no SIMD kernel on this architecture", typ)
			continue
		}
		for _, nb := range []int{1, 2, 3, 5, 16} {
			cols := nb * QKK
			t.Run(fmt.Sprintf("%s/%d", typ, cols), func(t *testing.T) {
				for trial := 0; trial < 8; trial++ {
					m, _ := quantMatrix(t, r, typ, 1, cols)
					xB, err := Q8_K.RowBytes(cols)
					require.NoError(t, err)
					xq := make([]byte, 4*xB)
					for v := 0; v < 4; v++ {
						quantizeActivations(Q8_K, randVec(r, cols, float32(1+v+trial)), xq[v*xB:(v+1)*xB])
					}
					want := make([]float32, 4)
					for v := range want {
						x := xq[v*xB : (v+1)*xB]
						want[v] = genericKernels[typ](cols, m.Data, x)
						got := dotKernels[typ](cols, m.Data, x)
						require.Equal(t, math.Float32bits(want[v]), math.Float32bits(got),
							"trial %d vector %d: twin %v, SIMD %v", trial, v, want[v], got)
					}
					if k4 := dot4Kernels[typ]; k4 != nil {
						var out [4]float32
						k4(cols, m.Data, xq, xB, &out)
						for v := range out {
							require.Equal(t, math.Float32bits(want[v]), math.Float32bits(out[v]),
								"trial %d x4 vector %d: twin %v, SIMD %v", trial, v, want[v], out[v])
						}
					}
				}
			})
		}
	}
}

// BenchmarkIQMatMul times MatMul of the 2- and 3-bit i-quants with the
// generic twins and with the SIMD kernels on the same 256 × 4096 matrix,
// alternating within each iteration so the reported ratio (simd_speedup)
// is not skewed by load changes; one thread, one and 32 vectors.
func BenchmarkIQMatMul(b *testing.B) {
	if !useSIMD(true) {
		b.Skip("no SIMD kernels")
	}
	defer useSIMD(true)
	const rows, cols = 256, 4096
	p := NewPool(1)
	defer p.Close()
	for _, typ := range iqDotTypes {
		m := benchMatrix(b, typ, rows, cols)
		for _, n := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/n=%d", typ, n), func(b *testing.B) {
				x := randVec(rand.New(rand.NewPCG(5, 5)), n*cols, 1)
				dst := make([]float32, n*rows)
				var tg, ts time.Duration
				for i := 0; i < b.N; i++ {
					useSIMD(false)
					t0 := time.Now()
					MatMul(p, dst, m, x, n)
					t1 := time.Now()
					useSIMD(true)
					MatMul(p, dst, m, x, n)
					ts += time.Since(t1)
					tg += t1.Sub(t0)
				}
				w := float64(rows) * cols * float64(n) * float64(b.N)
				b.ReportMetric(float64(tg)/float64(ts), "simd_speedup")
				b.ReportMetric(ts.Seconds()*1e9/w, "simd_ns/weight")
				b.ReportMetric(tg.Seconds()*1e9/w, "generic_ns/weight")
			})
		}
	}
}

package quant

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// benchMatrix builds a rows×cols matrix of type typ by quantising 16 random
// rows and tiling them (fast setup; the kernels' speed does not depend on
// the values).
func benchMatrix(b *testing.B, typ Type, rows, cols int) *Matrix {
	r := rand.New(rand.NewPCG(1, 1))
	const tile = 16
	m, _ := quantMatrix(b, r, typ, tile, cols)
	rb, _ := typ.RowBytes(cols)
	data := make([]byte, rb*rows)
	for i := 0; i < rows; i += tile {
		copy(data[i*rb:], m.Data)
	}
	return &Matrix{Type: typ, Rows: rows, Cols: cols, Data: data}
}

// BenchmarkMatMul measures MatMul per weight type, shape and batch size with
// the generic and the SIMD kernels. Metrics: GFLOP/s (2·rows·cols·n per op)
// and GB/s of weight data streamed.
func BenchmarkMatMul(b *testing.B) {
	defer useSIMD(true)
	shapes := []struct{ rows, cols int }{{768, 768}, {4096, 4096}}
	types := append([]Type{F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, BF16}, iqDotTypes...)
	p := NewPool(runtime.NumCPU())
	defer p.Close()
	for _, typ := range types {
		for _, sh := range shapes {
			m := benchMatrix(b, typ, sh.rows, sh.cols)
			for _, n := range []int{1, 32} {
				x := randVec(rand.New(rand.NewPCG(2, 2)), n*sh.cols, 1)
				dst := make([]float32, n*sh.rows)
				for _, impl := range []string{"generic", "simd"} {
					name := fmt.Sprintf("%s/%dx%d/n=%d/%s", typ, sh.rows, sh.cols, n, impl)
					b.Run(name, func(b *testing.B) {
						if !useSIMD(impl == "simd") {
							b.Skip("no SIMD kernels")
						}
						if impl == "simd" && !hasSIMDKernel(typ) {
							b.Skip("no SIMD kernel for this type")
						}
						MatMul(p, dst, m, x, n)
						b.ResetTimer()
						for i := 0; i < b.N; i++ {
							MatMul(p, dst, m, x, n)
						}
						sec := b.Elapsed().Seconds() / float64(b.N)
						b.ReportMetric(2*float64(sh.rows)*float64(sh.cols)*float64(n)/sec/1e9, "GFLOP/s")
						b.ReportMetric(float64(len(m.Data))/sec/1e9, "GB/s")
					})
				}
			}
		}
	}
}

// BenchmarkKernelSpeedup times the generic and the SIMD dot kernel of each
// type on the same 64 rows × 4096 columns within one benchmark, so the
// reported ratio (simd_speedup) is not skewed by load changes between
// separate benchmarks. Single-threaded.
func BenchmarkKernelSpeedup(b *testing.B) {
	if !useSIMD(true) {
		b.Skip("no SIMD kernels")
	}
	defer useSIMD(true)
	const rows, cols = 64, 4096
	types := append([]Type{F32}, matmulTypes[1:]...)
	for _, typ := range types {
		b.Run(typ.String(), func(b *testing.B) {
			m := benchMatrix(b, typ, rows, cols)
			x := randVec(rand.New(rand.NewPCG(3, 3)), cols, 1)
			vt := vecDotType(typ)
			xb, _ := vt.RowBytes(cols)
			xq := make([]byte, xb)
			quantizeActivations(vt, x, xq)
			gen, simd := genericKernels[typ], dotKernels[typ]
			if typ == F32 {
				gen = func(c int, w, _ []byte) float32 { return dotF32Generic(bytesToF32(w), x) }
				simd = func(c int, w, _ []byte) float32 { return dotF32Impl(bytesToF32(w), x) }
			}
			var tg, ts time.Duration
			var sink float32
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				for r := 0; r < rows; r++ {
					sink += gen(cols, m.Data[r*len(m.Data)/rows:(r+1)*len(m.Data)/rows], xq)
				}
				t1 := time.Now()
				for r := 0; r < rows; r++ {
					sink += simd(cols, m.Data[r*len(m.Data)/rows:(r+1)*len(m.Data)/rows], xq)
				}
				ts += time.Since(t1)
				tg += t1.Sub(t0)
			}
			if sink == 42 {
				b.Log(sink)
			}
			b.ReportMetric(float64(tg)/float64(ts), "simd_speedup")
			b.ReportMetric(2*rows*cols*float64(b.N)/ts.Seconds()/1e9, "simd_GFLOP/s")
			b.ReportMetric(2*rows*cols*float64(b.N)/tg.Seconds()/1e9, "generic_GFLOP/s")
		})
	}
}

// BenchmarkDot4 compares a four-vector kernel with four single-vector calls
// (single thread, 64 rows × 4096 columns); the metric x4_speedup is their
// time ratio, measured side by side.
func BenchmarkDot4(b *testing.B) {
	if !useSIMD(true) || len(dot4Kernels) == 0 {
		b.Skip("no four-vector kernels")
	}
	const rows, cols = 64, 4096
	for typ, k4 := range dot4Kernels {
		b.Run(typ.String(), func(b *testing.B) {
			m := benchMatrix(b, typ, rows, cols)
			rb := len(m.Data) / rows
			vt := vecDotType(typ)
			xB, _ := vt.RowBytes(cols)
			xq := make([]byte, 4*xB)
			r := rand.New(rand.NewPCG(4, 4))
			for v := 0; v < 4; v++ {
				quantizeActivations(vt, randVec(r, cols, 1), xq[v*xB:(v+1)*xB])
			}
			k1 := dotKernels[typ]
			var out [4]float32
			var t1, t4 time.Duration
			for i := 0; i < b.N; i++ {
				s := time.Now()
				for row := 0; row < rows; row++ {
					for v := 0; v < 4; v++ {
						out[v] = k1(cols, m.Data[row*rb:(row+1)*rb], xq[v*xB:(v+1)*xB])
					}
				}
				m1 := time.Now()
				for row := 0; row < rows; row++ {
					k4(cols, m.Data[row*rb:(row+1)*rb], xq, xB, &out)
				}
				t4 += time.Since(m1)
				t1 += m1.Sub(s)
			}
			b.ReportMetric(float64(t1)/float64(t4), "x4_speedup")
			b.ReportMetric(2*4*rows*cols*float64(b.N)/t4.Seconds()/1e9, "x4_GFLOP/s")
		})
	}
}

// BenchmarkRepackedFromMemory multiplies repacked Q4_K and Q6_K matrices
// (2048 x 768) by 1, 4 and 8 vectors on 1 and 2 threads, either one
// matrix again and again (in cache) or 62 MB of them in turn (70 of Q4_K,
// 48 of Q6_K: beyond L3, from memory, as a decode step streams a model's
// weights). Reports G
// multiply-adds a second; the ratio of the two is what the memory costs
// (the kernels' software prefetching is tuned on it, see q4kr16 in
// internal/asm).
func BenchmarkRepackedFromMemory(b *testing.B) {
	for _, typ := range []Type{Q4_K, Q6_K} {
		b.Run(typ.String(), func(b *testing.B) { benchFromMemory(b, typ) })
	}
}

func benchFromMemory(b *testing.B, typ Type) {
	const rows, cols = 2048, 768
	count := 70 * Q4_K.BlockBytes() / typ.BlockBytes() // 62 MB of Q4_K; as many matrices of the others
	mats := make([]*Matrix, count)
	for i := range mats {
		m := benchMatrix(b, typ, rows, cols)
		m.Data = bytes.Clone(m.Data)
		if !m.Repack() {
			b.Skip("no repacked kernel for this type on this CPU")
		}
		mats[i] = m
	}
	for _, threads := range []int{1, 2} {
		p := NewPool(threads)
		for _, n := range []int{1, 4, 8} {
			for _, k := range []int{1, count} {
				where := map[int]string{1: "cache", count: "memory"}[k]
				b.Run(fmt.Sprintf("threads=%d/n=%d/%s", threads, n, where), func(b *testing.B) {
					x := randVec(rand.New(rand.NewPCG(2, 2)), n*cols, 1)
					dst := make([]float32, n*rows)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						MatMul(p, dst, mats[i%k], x, n)
					}
					sec := b.Elapsed().Seconds() / float64(b.N)
					b.ReportMetric(float64(rows)*float64(cols)*float64(n)/sec/1e9, "GMAC/s")
				})
			}
		}
		p.Close()
	}
}

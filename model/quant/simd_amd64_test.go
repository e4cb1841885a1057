//go:build amd64 && !purego

package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// batchPaths lists the batch-kernel sets this CPU can run: AVX2 four-vector
// kernels always (with AVX2), AVX-512 VNNI four- and eight-vector kernels
// when the CPU has them.
func batchPaths() []string {
	paths := []string{}
	if hasAVX2 {
		paths = append(paths, "avx2")
	}
	if hasVNNI {
		paths = append(paths, "vnni")
	}
	return paths
}

// TestBatchKernelsAllPaths runs every batch kernel (four- and eight-vector,
// AVX2 and AVX-512 VNNI as the CPU allows) and the path's single-vector
// kernel against the AVX2 single-vector kernel of its type on quantised and raw random weights: results must be
// bit-identical, as MatMul's output must not depend on the batch size.
func TestBatchKernelsAllPaths(t *testing.T) {
	defer useVNNI(hasVNNI)
	r := rand.New(rand.NewPCG(23, 24))
	for _, path := range batchPaths() {
		if !useVNNI(path == "vnni") {
			t.Fatalf("cannot select %s", path)
		}
		if path == "vnni" {
			for _, typ := range []Type{Q4_K, Q8_0, Q4_0} {
				require.NotNil(t, dot4Kernels[typ], "%s x4", typ)
				require.NotNil(t, dot8Kernels[typ], "%s x8", typ)
				require.NotNil(t, dot16Kernels[typ], "%s x16", typ)
			}
		} else {
			require.Empty(t, dot8Kernels)
			require.Empty(t, dot16Kernels)
		}
		for typ := range dot4Kernels {
			bs := typ.BlockSize()
			for _, nb := range []int{1, 2, 3, 16} {
				cols := nb * bs
				for _, raw := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/%s/%d/raw=%v", path, typ, cols, raw), func(t *testing.T) {
						var w []byte
						if raw {
							if typ != Q4_K && typ != Q8_0 && typ != Q4_0 {
								t.Skip("raw weights only for Q4_K, Q8_0, Q4_0")
							}
							w = rawWeights(r, typ, cols)
						} else {
							m, _ := quantMatrix(t, r, typ, 1, cols)
							w = m.Data
						}
						vt := vecDotType(typ)
						xB, _ := vt.RowBytes(cols)
						xq := make([]byte, 16*xB)
						for v := 0; v < 16; v++ {
							quantizeActivations(vt, randVec(r, cols, float32(v+1)), xq[v*xB:(v+1)*xB])
						}
						// The AVX2 single-vector kernel defines the results.
						want := make([]float32, 16)
						for v := range want {
							want[v] = simdKernels[typ](cols, w, xq[v*xB:(v+1)*xB])
							got := dotKernels[typ](cols, w, xq[v*xB:(v+1)*xB])
							require.Equal(t, math.Float32bits(want[v]), math.Float32bits(got), "single vector %d: %v vs %v", v, want[v], got)
						}
						var out4 [4]float32
						dot4Kernels[typ](cols, w, xq, xB, &out4)
						for v := range out4 {
							require.Equal(t, math.Float32bits(want[v]), math.Float32bits(out4[v]), "x4 vector %d: %v vs %v", v, want[v], out4[v])
						}
						if k8 := dot8Kernels[typ]; k8 != nil {
							var out8 [8]float32
							k8(cols, w, xq, xB, &out8)
							for v := range out8 {
								require.Equal(t, math.Float32bits(want[v]), math.Float32bits(out8[v]), "x8 vector %d: %v vs %v", v, want[v], out8[v])
							}
						}
						if k16 := dot16Kernels[typ]; k16 != nil {
							var out16 [16]float32
							k16(cols, w, xq, xB, &out16)
							for v := range out16 {
								require.Equal(t, math.Float32bits(want[v]), math.Float32bits(out16[v]), "x16 vector %d: %v vs %v", v, want[v], out16[v])
							}
						}
					})
				}
			}
		}
	}
}

// TestMatMulBatchInvariantAllPaths repeats TestMatMulBatchInvariant's check
// (batched rows bit-identical to single rows) for each batch-kernel path,
// with batch sizes that exercise the x8, x4 and single tails.
func TestMatMulBatchInvariantAllPaths(t *testing.T) {
	defer useVNNI(hasVNNI)
	r := rand.New(rand.NewPCG(25, 26))
	p := NewPool(2)
	defer p.Close()
	for _, path := range batchPaths() {
		useVNNI(path == "vnni")
		for _, typ := range []Type{Q4_K, Q8_0, Q4_0} {
			const rows, cols = 11, 512
			m, _ := quantMatrix(t, r, typ, rows, cols)
			for _, n := range []int{4, 8, 13, 16, 20, 31} {
				x := randVec(r, n*cols, 1)
				batch := make([]float32, n*rows)
				MatMul(p, batch, m, x, n)
				one := make([]float32, rows)
				for i := 0; i < n; i++ {
					MatMul(p, one, m, x[i*cols:(i+1)*cols], 1)
					for row := range one {
						require.Equal(t, math.Float32bits(one[row]), math.Float32bits(batch[i*rows+row]),
							"%s %s n=%d vector %d row %d", path, typ, n, i, row)
					}
				}
			}
		}
	}
}

// BenchmarkBatchKernels times, side by side in one benchmark (single
// thread, 64 rows x 4096 columns, 16 activation vectors), the AVX2
// four-vector kernel and the VNNI four-, eight- and sixteen-vector kernels
// (as many calls as cover the 16 vectors); it reports ns per row for each
// and the speedups over AVX2 x4.
func BenchmarkBatchKernels(b *testing.B) {
	if !hasVNNI {
		b.Skip("no AVX-512 VNNI")
	}
	defer useVNNI(true)
	const rows, cols, nv = 64, 4096, 16
	for _, typ := range []Type{Q4_K, Q4_0, Q8_0} {
		b.Run(typ.String(), func(b *testing.B) {
			m := benchMatrix(b, typ, rows, cols)
			rb := len(m.Data) / rows
			vt := vecDotType(typ)
			xB, _ := vt.RowBytes(cols)
			xq := make([]byte, nv*xB)
			r := rand.New(rand.NewPCG(4, 4))
			for v := 0; v < nv; v++ {
				quantizeActivations(vt, randVec(r, cols, 1), xq[v*xB:(v+1)*xB])
			}
			useVNNI(false)
			avx2 := dot4Kernels[typ]
			useVNNI(true)
			v4, v8, v16 := dot4Kernels[typ], dot8Kernels[typ], dot16Kernels[typ]
			var out4 [4]float32
			var out8 [8]float32
			var out16 [16]float32
			var t [4]time.Duration
			for i := 0; i < b.N; i++ {
				s0 := time.Now()
				for row := 0; row < rows; row++ {
					w := m.Data[row*rb : (row+1)*rb]
					for v := 0; v < nv; v += 4 {
						avx2(cols, w, xq[v*xB:], xB, &out4)
					}
				}
				s1 := time.Now()
				for row := 0; row < rows; row++ {
					w := m.Data[row*rb : (row+1)*rb]
					for v := 0; v < nv; v += 4 {
						v4(cols, w, xq[v*xB:], xB, &out4)
					}
				}
				s2 := time.Now()
				for row := 0; row < rows; row++ {
					w := m.Data[row*rb : (row+1)*rb]
					v8(cols, w, xq, xB, &out8)
					v8(cols, w, xq[8*xB:], xB, &out8)
				}
				s3 := time.Now()
				for row := 0; row < rows; row++ {
					v16(cols, m.Data[row*rb:(row+1)*rb], xq, xB, &out16)
				}
				s4 := time.Now()
				t[0] += s1.Sub(s0)
				t[1] += s2.Sub(s1)
				t[2] += s3.Sub(s2)
				t[3] += s4.Sub(s3)
			}
			per := float64(b.N * rows)
			for k, name := range []string{"avx2x4", "vnnix4", "vnnix8", "vnnix16"} {
				b.ReportMetric(float64(t[k].Nanoseconds())/per, name+"_ns/row16")
				if k > 0 {
					b.ReportMetric(float64(t[0])/float64(t[k]), name+"_speedup")
				}
			}
		})
	}
}

// BenchmarkSingleKernels times the AVX2 and the AVX-512 VNNI single-vector
// kernel of each type that has one, side by side (single thread, 64 rows x
// 4096 columns, one vector), and reports ns per row and the speedup.
func BenchmarkSingleKernels(b *testing.B) {
	if !useVNNI(true) {
		b.Skip("no AVX-512 VNNI")
	}
	const rows, cols = 64, 4096
	for typ, kv := range vnniKernels {
		b.Run(typ.String(), func(b *testing.B) {
			m := benchMatrix(b, typ, rows, cols)
			rb := len(m.Data) / rows
			vt := vecDotType(typ)
			xB, _ := vt.RowBytes(cols)
			xq := make([]byte, xB)
			quantizeActivations(vt, randVec(rand.New(rand.NewPCG(4, 4)), cols, 1), xq)
			ka := simdKernels[typ]
			var ta, tv time.Duration
			var sink float32
			for i := 0; i < b.N; i++ {
				s := time.Now()
				for row := 0; row < rows; row++ {
					sink += ka(cols, m.Data[row*rb:(row+1)*rb], xq)
				}
				s1 := time.Now()
				for row := 0; row < rows; row++ {
					sink += kv(cols, m.Data[row*rb:(row+1)*rb], xq)
				}
				ta += s1.Sub(s)
				tv += time.Since(s1)
			}
			per := float64(b.N * rows)
			b.ReportMetric(float64(ta.Nanoseconds())/per, "avx2_ns/row")
			b.ReportMetric(float64(tv.Nanoseconds())/per, "vnni_ns/row")
			b.ReportMetric(float64(ta)/float64(tv), "speedup")
			_ = sink
		})
	}
}

// TestQuantizeQ8KAllPaths checks the AVX-512 Q8_K activation quantiser byte
// for byte against the Go one on random blocks of many magnitudes, blocks
// whose maximum |x| occurs more than once with either sign, blocks of ties
// and subnormals, and blocks the assembly leaves to Go (zeros, inf, NaN).
func TestQuantizeQ8KAllPaths(t *testing.T) {
	if !hasVNNI {
		t.Skip("no AVX-512")
	}
	defer useVNNI(true)
	r := rand.New(rand.NewPCG(33, 34))
	const blocks = 2048
	x := quantTestBlocks(r, blocks, QKK)
	want := make([]byte, blocks*292)
	got := make([]byte, blocks*292)
	useVNNI(false)
	require.Nil(t, quantQ8KBlock)
	quantizeRowQ8K(x, want)
	useVNNI(true)
	require.NotNil(t, quantQ8KBlock)
	quantizeRowQ8K(x, got)
	handled := 0
	for bi := 0; bi < blocks; bi++ {
		require.Equal(t, want[bi*292:(bi+1)*292], got[bi*292:(bi+1)*292], "block %d", bi)
		if quantQ8KSIMD(x[bi*QKK:(bi+1)*QKK], make([]byte, 292)) {
			handled++
		}
	}
	require.Greater(t, handled, blocks/2, "blocks the assembly quantised")
}

// TestQuantizeQ8_0AllPaths checks the AVX-512 Q8_0 activation quantisers
// (the Q8_0 block, and the repacked Q4_0 kernel's block with its sum)
// byte for byte against the Go ones on random blocks of many magnitudes,
// repeated maxima, ties, subnormals, and blocks the assembly leaves to Go
// (zeros, inf, NaN).
func TestQuantizeQ8_0AllPaths(t *testing.T) {
	if !hasVNNI {
		t.Skip("no AVX-512")
	}
	defer useVNNI(true)
	r := rand.New(rand.NewPCG(35, 36))
	const blocks = 4096
	x := quantTestBlocks(r, blocks, QK)
	for _, c := range []struct {
		name  string
		bytes int
		row   func(x []float32, dst []byte)
		block func(x []float32, dst []byte) bool
	}{
		{"Q8_0", 34, quantizeRowQ8_0, quantQ8_0SIMD},
		{"sums", q8sBlockBytes, quantizeRowQ8_0Sums, quantQ8_0SumsSIMD},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := make([]byte, blocks*c.bytes)
			got := make([]byte, blocks*c.bytes)
			useVNNI(false)
			require.Nil(t, quantQ8_0Block)
			require.Nil(t, quantQ8_0SumsBlock)
			c.row(x, want)
			useVNNI(true)
			require.NotNil(t, quantQ8_0Block)
			require.NotNil(t, quantQ8_0SumsBlock)
			c.row(x, got)
			handled := 0
			for bi := 0; bi < blocks; bi++ {
				require.Equal(t, want[bi*c.bytes:(bi+1)*c.bytes], got[bi*c.bytes:(bi+1)*c.bytes], "block %d", bi)
				if c.block(x[bi*QK:(bi+1)*QK], make([]byte, c.bytes)) {
					handled++
				}
			}
			require.GreaterOrEqual(t, handled, blocks/2, "blocks the assembly quantised")
		})
	}
}

// quantTestBlocks makes blocks of size floats for the quantiser tests:
// random blocks of many magnitudes, blocks whose maximum |x| occurs more
// than once with either sign, blocks of ties (after scaling by 1) and
// subnormals, zeros, an inf, a NaN, and blocks of -1, 0 and 1.
func quantTestBlocks(r *rand.Rand, blocks, size int) []float32 {
	x := make([]float32, blocks*size)
	for bi := 0; bi < blocks; bi++ {
		xb := x[bi*size : (bi+1)*size]
		scale := float32(math.Ldexp(1, r.IntN(60)-30))
		for j := range xb {
			xb[j] = float32(r.NormFloat64()) * scale
		}
		switch bi % 8 {
		case 1: // repeated maximum, both signs
			m := float32(3) * scale
			xb[r.IntN(size)], xb[r.IntN(size)], xb[r.IntN(size)] = m, -m, m
		case 2: // ties after scaling: max -127 gives a scale of 1
			for j := range xb {
				xb[j] = float32(r.IntN(254)-127) + 0.5
			}
			xb[r.IntN(size)] = -127
		case 3:
			clear(xb)
		case 4:
			xb[r.IntN(size)] = float32(math.Inf(1 - 2*r.IntN(2)))
		case 5:
			xb[r.IntN(size)] = float32(math.NaN())
		case 6: // subnormals
			for j := range xb {
				xb[j] = math.Float32frombits(uint32(r.IntN(1 << 23)))
			}
		case 7:
			for j := range xb {
				xb[j] = float32(r.IntN(3) - 1)
			}
		}
	}
	return x
}

// attnPath selects the attention kernels of path ("generic", "avx2",
// "avx512") and reports whether the CPU has them; "default" restores
// what init chose. vnniOn switches the AVX-512 kernels, VNNI or not.
func attnPath(path string) bool {
	vnniOn = path != "avx2"
	switch path {
	case "generic":
		return useSIMD(false)
	case "avx512":
		return hasAVX512VL && useSIMD(true)
	}
	return useSIMD(true)
}

// TestExpKernelsTakeTheirRange: the exp kernels compute every group whose
// elements are all within [-expRange, expRange] themselves (a kernel that
// stopped at once would still pass TestExpF32sMatchesMathExp, through
// math.Exp), with math.Exp's bits, and stop at the first group that is
// not.
func TestExpKernelsTakeTheirRange(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2")
	}
	r := rand.New(rand.NewPCG(9, 9))
	src := make([]float32, 64)
	for i := range src {
		src[i] = (r.Float32()*2 - 1) * expRange
	}
	src[5] = expRange
	src[6] = -expRange
	type kernel struct {
		name  string
		lanes int
		run   func(dst, src *float32, n int) int
	}
	ks := []kernel{{"expF32x4AVX2", 4, expF32x4AVX2}}
	if hasAVX512VL {
		ks = append(ks, kernel{"expF32x8AVX512", 8, expF32x8AVX512})
	}
	for _, k := range ks {
		dst := make([]float32, len(src))
		require.Equal(t, len(src), k.run(&dst[0], &src[0], len(src)), k.name)
		for i, x := range src {
			require.Equal(t, math.Float32bits(float32(math.Exp(float64(x)))), math.Float32bits(dst[i]), "%s exp(%g)", k.name, x)
		}
		for _, bad := range []float32{math.Nextafter32(expRange, 800), float32(math.NaN()), float32(math.Inf(-1))} {
			in := append([]float32(nil), src...)
			in[3*k.lanes+1] = bad
			require.Equal(t, 3*k.lanes, k.run(&dst[0], &in[0], len(in)), "%s stops at the group holding %g", k.name, bad)
		}
	}
}

// TestSoftmaxKernels: with AVX-512 the SIMD path runs the kernels (a
// kernel left unused would pass TestSoftmaxMatchesReference through the
// scalar tail), and each computes what its loop does.
func TestSoftmaxKernels(t *testing.T) {
	if !hasAVX512VL {
		t.Skip("no AVX-512")
	}
	defer useSIMD(true)
	require.True(t, useSIMD(true))
	require.True(t, softmaxVector)
	x := make([]float32, 48)
	for i := range x {
		x[i] = float32(i%13) - 6
	}
	x[7] = float32(math.NaN())
	require.Equal(t, float32(6*3), mulMaxF32x16AVX512(&x[0], len(x), 3))
	require.Equal(t, float32(-18), x[0])
	addF32x16AVX512(&x[0], len(x), 2)
	require.Equal(t, float32(-16), x[0])
	mulF32x16AVX512(&x[0], len(x), 0.5)
	require.Equal(t, float32(-8), x[0])
	require.Equal(t, float32((float32(47%13)-6)*3+2)*0.5, x[47])
	require.True(t, math.IsNaN(float64(x[7])))
}

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

// needVNNI skips t without the AVX-512 VNNI kernels and selects them.
func needVNNI(t testing.TB) {
	if !useVNNI(true) {
		t.Skip("no AVX-512 VNNI")
	}
}

// repackedKernels lists the repacked kernels: assembly and generic twin.
var repackedKernels = []struct {
	typ       Type
	asm, twin gemmR8Func
	nbs       []int // block counts tested
}{
	{Q8_0, gemmQ8_0R8VNNI, gemmQ8_0R8Generic, []int{1, 2, 3, 16, 64}},
	{Q5_0, gemmQ5_0R8VNNI, gemmQ5_0R8Generic, []int{1, 2, 3, 16, 64}},
}

// TestRepackedKernelsMatchSingle checks the repacked kernels, assembly and
// generic twin, against the AVX2 single-row kernel of the type on the
// original layout, bit for bit, for 1..9 vectors (every pass width and
// tail) on quantised and raw random weights.
func TestRepackedKernelsMatchSingle(t *testing.T) {
	needVNNI(t)
	defer useVNNI(true)
	r := rand.New(rand.NewPCG(31, 32))
	for _, k := range repackedKernels {
		bs := k.typ.BlockSize()
		vt := vecDotType(k.typ)
		for _, nb := range k.nbs {
			cols := nb * bs
			for _, raw := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%d/raw=%v", k.typ, cols, raw), func(t *testing.T) {
					m := testWeights(t, r, k.typ, RowGroup, cols, raw)
					require.True(t, m.Repack())
					const nv = 9
					xB, _ := vt.RowBytes(cols)
					xq := make([]byte, nv*xB)
					for v := 0; v < nv; v++ {
						quantizeActivations(vt, randVec(r, cols, float32(v+1)), xq[v*xB:(v+1)*xB])
					}
					rb := len(m.Data) / RowGroup
					for na := 1; na <= nv; na++ {
						got := make([]float32, RowGroup*na)
						twin := make([]float32, RowGroup*na)
						k.asm(nb, m.packed, xq, xB, na, got, RowGroup)
						k.twin(nb, m.packed, xq, xB, na, twin, RowGroup)
						// Into a wider result: the same values, and
						// nothing written between the vectors' eight.
						const ostride = 13
						wide := make([]float32, ostride*na)
						for i := range wide {
							wide[i] = -7
						}
						k.asm(nb, m.packed, xq, xB, na, wide, ostride)
						for a := 0; a < na; a++ {
							for l := 0; l < ostride; l++ {
								if l < RowGroup {
									require.Equal(t, math.Float32bits(got[RowGroup*a+l]), math.Float32bits(wide[ostride*a+l]), "na=%d strided vector %d row %d", na, a, l)
								} else {
									require.Equal(t, float32(-7), wide[ostride*a+l], "na=%d: written between vectors", na)
								}
							}
						}
						for a := 0; a < na; a++ {
							for row := 0; row < RowGroup; row++ {
								want := simdKernels[k.typ](cols, m.Data[row*rb:(row+1)*rb], xq[a*xB:(a+1)*xB])
								i := RowGroup*a + row
								require.Equal(t, math.Float32bits(want), math.Float32bits(got[i]), "asm na=%d vector %d row %d: %v vs %v", na, a, row, want, got[i])
								require.Equal(t, math.Float32bits(want), math.Float32bits(twin[i]), "twin na=%d vector %d row %d: %v vs %v", na, a, row, want, twin[i])
							}
						}
					}
				})
			}
		}
	}
}

// r16Kernels lists the sixteen-row kernels: assembly and generic twin,
// and how their activations are quantised (the twin's form and the file
// layout kernel's).
var r16Kernels = []struct {
	typ       Type
	asm, twin gemmR16Func
	colB      int
	xBlockB   int
	quant     func(x []float32, dst []byte)
	nbs       []int // block counts tested
}{
	{Q4_0, gemmQ4_0R16VNNI, gemmQ4_0R16Generic, q40ColBytes, q8sBlockBytes, quantizeRowQ8_0Sums, []int{1, 2, 3, 16, 64}},
	{Q4_K, gemmQ4KR16VNNI, gemmQ4KR16Generic, q4kColBytes, 292, quantizeRowQ8K, []int{1, 2, 3, 8, 16}},
	{Q5_K, gemmQ5KR16VNNI, gemmQ5KR16Generic, q5kColBytes, 292, quantizeRowQ8K, []int{1, 2, 3, 8, 16}},
	{Q6_K, gemmQ6KR16VNNI, gemmQ6KR16Generic, q6kColBytes, 292, quantizeRowQ8K, []int{1, 2, 3, 8, 16}},
}

// TestRepackedR16Kernels checks each sixteen-row kernel against its
// generic twin bit for bit, for 1..17 vectors (every pass width and
// tail), 8, 16 and 24 rows (a last group of padding rows, whose results
// must be zero), quantised and raw
// random weights; and both against the AVX2 single-row kernel on the file
// layout within float tolerance (their float contracts differ: one FMA per
// block and row, no lanes).
func TestRepackedR16Kernels(t *testing.T) {
	needVNNI(t)
	defer useVNNI(true)
	r := rand.New(rand.NewPCG(37, 38))
	for _, k := range r16Kernels {
		bs, vt := k.typ.BlockSize(), vecDotType(k.typ)
		for _, nb := range k.nbs {
			cols := nb * bs
			for _, rows := range []int{8, 16, 24} {
				for _, raw := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/%d/rows=%d/raw=%v", k.typ, cols, rows, raw), func(t *testing.T) {
						m := testWeights(t, r, k.typ, rows, cols, raw)
						require.True(t, m.Repack())
						const nv = 17
						xB := nb * k.xBlockB
						vB, _ := vt.RowBytes(cols)
						xq, xv := make([]byte, nv*xB), make([]byte, nv*vB)
						xs := make([][]float32, nv)
						for v := 0; v < nv; v++ {
							xs[v] = randVec(r, cols, float32(v+1))
							k.quant(xs[v], xq[v*xB:(v+1)*xB])
							quantizeActivations(vt, xs[v], xv[v*vB:(v+1)*vB])
						}
						rb := len(m.Data) / rows
						cb := nb * k.colB
						require.Len(t, m.packed, (rows+wideGroup-1)/wideGroup*cb)
						wrow := make([]float32, cols)
						for _, na := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17} {
							for p := 0; p*wideGroup < rows; p++ {
								w := m.packed[p*cb : (p+1)*cb]
								got, twin := make([]float32, 16*na), make([]float32, 16*na)
								k.asm(nb, w, xq, xB, na, got, 16)
								k.twin(nb, w, xq, xB, na, twin, 16)
								for i := range got {
									require.Equal(t, math.Float32bits(twin[i]), math.Float32bits(got[i]), "na=%d group %d out %d: %v vs %v", na, p, i, twin[i], got[i])
								}
								// Into a wider result (a matrix's rows
								// apart): the same values, and nothing
								// written between the vectors' sixteen.
								const ostride = 21
								wide := make([]float32, ostride*na)
								for i := range wide {
									wide[i] = -7
								}
								k.asm(nb, w, xq, xB, na, wide, ostride)
								for a := 0; a < na; a++ {
									for l := 0; l < ostride; l++ {
										if l < 16 {
											require.Equal(t, math.Float32bits(got[16*a+l]), math.Float32bits(wide[ostride*a+l]), "na=%d strided vector %d row %d", na, a, l)
										} else {
											require.Equal(t, float32(-7), wide[ostride*a+l], "na=%d: written between vectors", na)
										}
									}
								}
								for a := 0; a < na; a++ {
									for l := 0; l < 16; l++ {
										row := p*wideGroup + l
										if row >= rows {
											require.Zero(t, math.Float32bits(got[16*a+l]), "na=%d vector %d padding row %d", na, a, l)
											continue
										}
										wr := m.Data[row*rb : (row+1)*rb]
										want := simdKernels[k.typ](cols, wr, xv[a*vB:(a+1)*vB])
										require.NoError(t, Dequantize(k.typ, wr, wrow))
										var mag float64
										for e, wv := range wrow {
											mag += math.Abs(float64(wv) * float64(xs[a][e]))
										}
										require.InDelta(t, want, got[16*a+l], 1e-4*mag+1e-6, "na=%d vector %d row %d", na, a, row)
									}
								}
							}
						}
					})
				}
			}
		}
	}
}

// TestMatMulRepackedMatches checks MatMul on a repacked matrix against
// MatMul on the same matrix unrepacked, bit for bit (Q4_0 and Q4_K, with
// contracts of their own and rows that need not fill a group: within
// tolerance, and each vector's results the same in any batch), for batch sizes that
// exercise every tail, with one and two workers; and that switching the
// VNNI kernels off falls back to the original layout.
func TestMatMulRepackedMatches(t *testing.T) {
	needVNNI(t)
	defer useVNNI(true)
	r := rand.New(rand.NewPCG(33, 34))
	for _, threads := range []int{1, 2} {
		p := NewPool(threads)
		for _, sh := range []struct {
			typ        Type
			rows, cols int
		}{{Q4_0, 8, 32}, {Q4_0, 24, 256}, {Q4_0, 256, 768}, {Q4_0, 40, 96}, {Q4_0, 12, 64}, {Q4_0, 3, 32}, {Q4_0, 44, 96}, {Q8_0, 16, 96}, {Q8_0, 64, 768}, {Q5_0, 8, 32}, {Q5_0, 40, 288}, {Q4_K, 8, 256}, {Q4_K, 48, 512}, {Q4_K, 24, 768}, {Q4_K, 12, 256}, {Q4_K, 3, 512}, {Q6_K, 8, 256}, {Q6_K, 48, 512}, {Q6_K, 24, 768}, {Q6_K, 12, 256}, {Q6_K, 3, 512}, {Q5_K, 8, 256}, {Q5_K, 48, 512}, {Q5_K, 24, 768}, {Q5_K, 12, 256}, {Q5_K, 3, 512}} {
			m, _ := quantMatrix(t, r, sh.typ, sh.rows, sh.cols)
			pm := *m
			require.True(t, pm.Repack())
			require.False(t, pm.Repack(), "second Repack")
			for _, n := range []int{1, 2, 3, 4, 5, 8, 13, 17} {
				x := randVec(r, n*sh.cols, 1)
				want := make([]float32, n*sh.rows)
				got := make([]float32, n*sh.rows)
				MatMul(p, want, m, x, n)
				MatMul(p, got, &pm, x, n)
				if _, own := gemmR16Kernels[sh.typ]; own {
					// Its own float contract: close to the file
					// layout's, and independent of the batch.
					for i := range want {
						require.InDelta(t, want[i], got[i], 1e-4*(1+math.Abs(float64(want[i]))), "threads=%d %s %dx%d n=%d at %d", threads, sh.typ, sh.rows, sh.cols, n, i)
					}
					one := make([]float32, sh.rows)
					for v := 0; v < n; v++ {
						MatMul(p, one, &pm, x[v*sh.cols:(v+1)*sh.cols], 1)
						for i := range one {
							require.Equal(t, math.Float32bits(one[i]), math.Float32bits(got[v*sh.rows+i]), "batch invariance n=%d vector %d row %d", n, v, i)
						}
					}
				} else {
					for i := range want {
						require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "threads=%d %s %dx%d n=%d at %d", threads, sh.typ, sh.rows, sh.cols, n, i)
					}
				}
				useVNNI(false)
				MatMul(p, got, &pm, x, n)
				useVNNI(true)
				for i := range want {
					require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "fallback n=%d at %d", n, i)
				}
			}
		}
		p.Close()
	}
	// ReleaseData: a repacked matrix gives the same results without its
	// original layout; one that is not repacked keeps it.
	p := NewPool(2)
	defer p.Close()
	rm, _ := quantMatrix(t, r, Q4_K, 48, 512)
	require.True(t, rm.Repack())
	x := randVec(r, 5*512, 1)
	want, got := make([]float32, 5*48), make([]float32, 5*48)
	MatMul(p, want, rm, x, 5)
	require.True(t, rm.ReleaseData())
	require.Nil(t, rm.Data)
	MatMul(p, got, rm, x, 5)
	require.Equal(t, want, got)
	keep, _ := quantMatrix(t, r, Q3_K, 8, 256)
	require.False(t, keep.ReleaseData())
	require.NotEmpty(t, keep.Data)

	// Matrices Repack leaves alone.
	m, _ := quantMatrix(t, r, Q8_0, 12, 64)
	require.False(t, m.Repack(), "rows not a multiple of 8")
	m, _ = quantMatrix(t, r, Q3_K, 8, 256)
	require.False(t, m.Repack(), "no repacked Q3_K kernel")
}

// TestMatMulRepackedNoAlloc: the repacked path allocates nothing either.
func TestMatMulRepackedNoAlloc(t *testing.T) {
	needVNNI(t)
	r := rand.New(rand.NewPCG(35, 36))
	m, _ := quantMatrix(t, r, Q4_0, 64, 512)
	require.True(t, m.Repack())
	p := NewPool(2)
	defer p.Close()
	for _, n := range []int{1, 7} {
		x := randVec(r, n*512, 1)
		dst := make([]float32, n*64)
		MatMul(p, dst, m, x, n)
		require.Zero(t, testing.AllocsPerRun(20, func() { MatMul(p, dst, m, x, n) }), "n=%d", n)
	}
}

// BenchmarkRepackedKernels times, single thread, 64 rows x 4096 columns,
// each repacked kernel against the kernels MatMul used before for the same
// work: the single-row kernel for one vector, the VNNI x16 kernel for
// sixteen. Reports ns per row and the speedups.
func BenchmarkRepackedKernels(b *testing.B) {
	needVNNI(b)
	defer useVNNI(true)
	const rows, cols = 64, 4096
	r := rand.New(rand.NewPCG(4, 4))
	for _, k := range repackedKernels {
		m := benchMatrix(b, k.typ, rows, cols)
		pm := *m
		pm.Repack()
		vt := vecDotType(k.typ)
		xB, _ := vt.RowBytes(cols)
		nb := cols / k.typ.BlockSize()
		gb := len(pm.packed) / (rows / RowGroup)
		for _, nv := range []int{1, 8, 16} {
			b.Run(fmt.Sprintf("%s/n=%d", k.typ, nv), func(b *testing.B) {
				xq := make([]byte, nv*xB)
				for v := 0; v < nv; v++ {
					quantizeActivations(vt, randVec(r, cols, 1), xq[v*xB:(v+1)*xB])
				}
				out := make([]float32, RowGroup*nv)
				fileLayout := fileLayoutKernel(k.typ, m, nv, xq, xB, out)
				timeOldNew(b, rows, fileLayout, func() {
					for g := 0; g < rows/RowGroup; g++ {
						k.asm(nb, pm.packed[g*gb:(g+1)*gb], xq, xB, nv, out, RowGroup)
					}
				})
			})
		}
	}
}

// BenchmarkRepackedR16Kernels times, single thread, 64 rows x 4096
// columns, each sixteen-row kernel against the kernels the file layout
// runs for the same work: the single-row kernel for one vector, the
// VNNI four-, eight- or sixteen-vector kernel for more. Reports ns per row
// and the speedup.
func BenchmarkRepackedR16Kernels(b *testing.B) {
	needVNNI(b)
	defer useVNNI(true)
	const rows, cols = 64, 4096
	r := rand.New(rand.NewPCG(5, 5))
	for _, k := range r16Kernels {
		m := benchMatrix(b, k.typ, rows, cols)
		pm := *m
		pm.Repack()
		nb := cols / k.typ.BlockSize()
		cb := nb * k.colB
		vt := vecDotType(k.typ)
		vB, _ := vt.RowBytes(cols)
		xB := nb * k.xBlockB
		for _, nv := range []int{1, 4, 8, 16} {
			b.Run(fmt.Sprintf("%s/n=%d", k.typ, nv), func(b *testing.B) {
				xv, xq := make([]byte, nv*vB), make([]byte, nv*xB)
				for v := 0; v < nv; v++ {
					x := randVec(r, cols, 1)
					quantizeActivations(vt, x, xv[v*vB:(v+1)*vB])
					k.quant(x, xq[v*xB:(v+1)*xB])
				}
				out := make([]float32, 16*nv)
				fileLayout := fileLayoutKernel(k.typ, m, nv, xv, vB, out)
				timeOldNew(b, rows, fileLayout, func() {
					for p := 0; p < rows/wideGroup; p++ {
						k.asm(nb, pm.packed[p*cb:(p+1)*cb], xq, xB, nv, out, 16)
					}
				})
			})
		}
	}
}

// fileLayoutKernel returns a function that multiplies every row of m (its
// file layout) with nv activation vectors (xq, xB bytes apart) as MatMul
// does without repacking: the widest of the type's sixteen-, eight-,
// four-vector and single kernels that fits, then narrower ones; results
// go to out.
func fileLayoutKernel(typ Type, m *Matrix, nv int, xq []byte, xB int, out []float32) func() {
	rb := len(m.Data) / m.Rows
	var out4 [4]float32
	var out8 [8]float32
	var out16 [16]float32
	return func() {
		for row := 0; row < m.Rows; row++ {
			w := m.Data[row*rb : (row+1)*rb]
			for i := 0; i < nv; {
				x := xq[i*xB:]
				switch k16, k8, k4 := dot16Kernels[typ], dot8Kernels[typ], dot4Kernels[typ]; {
				case k16 != nil && nv-i >= 16:
					k16(m.Cols, w, x, xB, &out16)
					i += 16
				case k8 != nil && nv-i >= 8:
					k8(m.Cols, w, x, xB, &out8)
					i += 8
				case k4 != nil && nv-i >= 4:
					k4(m.Cols, w, x, xB, &out4)
					i += 4
				default:
					out[0] = dotKernels[typ](m.Cols, w, x)
					i++
				}
			}
		}
	}
}

// timeOldNew runs old and packed b.N times each, interleaved, and reports
// the ns per row of each (rows rows) and the speedup.
func timeOldNew(b *testing.B, rows int, old, packed func()) {
	var to, tp time.Duration
	for i := 0; i < b.N; i++ {
		s0 := time.Now()
		old()
		s1 := time.Now()
		packed()
		to += s1.Sub(s0)
		tp += time.Since(s1)
	}
	per := float64(b.N * rows)
	b.ReportMetric(float64(to.Nanoseconds())/per, "old_ns/row")
	b.ReportMetric(float64(tp.Nanoseconds())/per, "repacked_ns/row")
	b.ReportMetric(float64(to)/float64(tp), "speedup")
}

// testWeights returns a rows x cols matrix of typ: quantised random
// weights, or with raw random block bytes (rawWeights) when raw.
func testWeights(t testing.TB, r *rand.Rand, typ Type, rows, cols int, raw bool) *Matrix {
	if !raw {
		m, _ := quantMatrix(t, r, typ, rows, cols)
		return m
	}
	rb, _ := typ.RowBytes(cols)
	data := make([]byte, 0, rows*rb)
	for range rows {
		data = append(data, rawWeights(r, typ, cols)...)
	}
	return &Matrix{Type: typ, Rows: rows, Cols: cols, Data: data}
}

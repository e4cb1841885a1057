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
	{Q4_0, gemmQ4_0R8VNNI, gemmQ4_0R8Generic, []int{1, 2, 3, 16, 64}},
	{Q8_0, gemmQ8_0R8VNNI, gemmQ8_0R8Generic, []int{1, 2, 3, 16, 64}},
	{Q5_0, gemmQ5_0R8VNNI, gemmQ5_0R8Generic, []int{1, 2, 3, 16, 64}},
	{Q4_K, gemmQ4KR8VNNI, gemmQ4KR8Generic, []int{1, 2, 3, 8}},
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
					var m *Matrix
					if raw {
						rb, _ := k.typ.RowBytes(cols)
						data := make([]byte, 0, RowGroup*rb)
						for range RowGroup {
							data = append(data, rawWeights(r, k.typ, cols)...)
						}
						m = &Matrix{Type: k.typ, Rows: RowGroup, Cols: cols, Data: data}
					} else {
						m, _ = quantMatrix(t, r, k.typ, RowGroup, cols)
					}
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
						k.asm(nb, m.packed, xq, xB, na, got)
						k.twin(nb, m.packed, xq, xB, na, twin)
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

// TestMatMulRepackedMatches checks MatMul on a repacked matrix against
// MatMul on the same matrix unrepacked, bit for bit, for batch sizes that
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
		}{{Q4_0, 8, 32}, {Q4_0, 24, 256}, {Q4_0, 256, 768}, {Q8_0, 16, 96}, {Q8_0, 64, 768}, {Q5_0, 8, 32}, {Q5_0, 40, 288}, {Q4_K, 8, 256}, {Q4_K, 48, 512}} {
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
				for i := range want {
					require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "threads=%d %s %dx%d n=%d at %d", threads, sh.typ, sh.rows, sh.cols, n, i)
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
	// Matrices Repack leaves alone.
	m, _ := quantMatrix(t, r, Q4_0, 12, 64)
	require.False(t, m.Repack(), "rows not a multiple of 8")
	m, _ = quantMatrix(t, r, Q6_K, 8, 256)
	require.False(t, m.Repack(), "no repacked Q6_K kernel")
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
		rb := len(m.Data) / rows
		vt := vecDotType(k.typ)
		xB, _ := vt.RowBytes(cols)
		nb := cols / k.typ.BlockSize()
		gb := len(pm.packed) / (rows / RowGroup)
		for _, nv := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/n=%d", k.typ, nv), func(b *testing.B) {
				xq := make([]byte, nv*xB)
				for v := 0; v < nv; v++ {
					quantizeActivations(vt, randVec(r, cols, 1), xq[v*xB:(v+1)*xB])
				}
				out := make([]float32, RowGroup*nv)
				var out16 [16]float32
				var old, packed time.Duration
				for i := 0; i < b.N; i++ {
					s0 := time.Now()
					for row := 0; row < rows; row++ {
						w := m.Data[row*rb : (row+1)*rb]
						if nv == 16 {
							dot16Kernels[k.typ](cols, w, xq, xB, &out16)
						} else {
							out[0] = dotKernels[k.typ](cols, w, xq)
						}
					}
					s1 := time.Now()
					for g := 0; g < rows/RowGroup; g++ {
						k.asm(nb, pm.packed[g*gb:(g+1)*gb], xq, xB, nv, out)
					}
					s2 := time.Now()
					old += s1.Sub(s0)
					packed += s2.Sub(s1)
				}
				per := float64(b.N * rows)
				b.ReportMetric(float64(old.Nanoseconds())/per, "old_ns/row")
				b.ReportMetric(float64(packed.Nanoseconds())/per, "repacked_ns/row")
				b.ReportMetric(float64(old)/float64(packed), "speedup")
			})
		}
	}
}

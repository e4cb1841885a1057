package quant

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// tiledCases runs check on the generic and (where the CPU has it) the
// assembly path, for contiguous rows and tiled layouts, over lengths
// around the kernels' 8- and 32-element steps: a of n+2 floats, b of size
// elements, and want(row, i) the index of vector row's element i in b.
func tiledCases(t *testing.T, check func(t *testing.T, simd bool, a []float32, size, n, rows, rowStride, tile int, at func(row, i int) int)) {
	defer useSIMD(true)
	r := rand.New(rand.NewPCG(3, 4))
	for _, simd := range []bool{false, true} {
		if !useSIMD(simd) {
			continue
		}
		for _, n := range []int{1, 5, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 257} {
			for _, tc := range []struct {
				name                  string
				rows, rowStride, tile int
			}{
				{"rows", 5, n + 3, TileF32},
				{"tiles", 7, TileF32, 9 * TileF32},
				{"tiles-offset", 3, 2 * TileF32, 6 * TileF32},
			} {
				t.Run(fmt.Sprintf("simd=%v/%s/%d", simd, tc.name, n), func(t *testing.T) {
					last := (tc.rows-1)*tc.rowStride + ((n-1)/TileF32)*tc.tile + (n-1)%TileF32
					at := func(row, i int) int { return row*tc.rowStride + (i/TileF32)*tc.tile + i%TileF32 }
					check(t, simd, randVec(r, n+2, 1), last+1, n, tc.rows, tc.rowStride, tc.tile, at)
				})
			}
		}
	}
}

// TestDotF32TiledMatchesDotF32 checks that every product of DotF32Tiled
// equals DotF32 of the gathered vector bit for bit (tiledCases).
func TestDotF32TiledMatchesDotF32(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	tiledCases(t, func(t *testing.T, simd bool, a []float32, size, n, rows, rowStride, tile int, at func(row, i int) int) {
		b := randVec(r, size, 2)
		dst := make([]float32, rows)
		DotF32Tiled(dst, a, b, n, rowStride, tile)
		v := make([]float32, n)
		for row := range rows {
			for i := range v {
				v[i] = b[at(row, i)]
			}
			want := DotF32(a[:n], v)
			if simd && tile != TileF32 && runtime.GOARCH == "arm64" {
				want = dotF32Generic(a[:n], v) // no NEON tiled kernel
			}
			require.Equal(t, want, dst[row], "row %d", row)
		}
	})
}

func TestDotF32TiledBounds(t *testing.T) {
	a, b := make([]float32, 64), make([]float32, 100)
	dst := []float32{1, 2}
	DotF32Tiled(dst, a, b, 0, 10, TileF32)
	require.Equal(t, []float32{0, 0}, dst)
	require.Panics(t, func() { DotF32Tiled(dst, a, b, 65, 10, TileF32) })
	require.Panics(t, func() { DotF32Tiled(dst, a, b, 64, 40, TileF32) })
	require.Panics(t, func() { DotF32Tiled(dst, a, b, 8, 1, 8) })
}

// BenchmarkAttentionDots times the dot products of one attention head of
// 64 dimensions over 256 positions: "dotf32" is one DotF32 per key and
// one per dimension over a transposed value cache (the engine before
// DotF32Tiled), "tiled" one DotF32Tiled call for the keys and one for the
// values stored in tiles. Same data sizes, one thread.
func BenchmarkAttentionDots(b *testing.B) {
	const hd, pos, kvDim = 64, 256, 768
	r := rand.New(rand.NewPCG(1, 2))
	q := randVec(r, hd, 1)
	kc := randVec(r, pos*kvDim, 1)
	vc := randVec(r, pos*kvDim, 1)
	sc := make([]float32, pos)
	out := make([]float32, hd)
	b.Run("dotf32", func(b *testing.B) {
		for b.Loop() {
			for j := range pos {
				sc[j] = DotF32(q, kc[j*kvDim:j*kvDim+hd])
			}
			for d := range out {
				out[d] = DotF32(sc, vc[d*pos:(d+1)*pos])
			}
		}
	})
	b.Run("tiled", func(b *testing.B) {
		for b.Loop() {
			DotF32Tiled(sc, q, kc, hd, kvDim, TileF32)
			DotF32Tiled(out, sc, vc, pos, TileF32, kvDim*TileF32)
		}
	})
}

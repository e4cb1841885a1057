package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAttnF16 checks the attention kernels on every path the CPU has
// (useSIMD, useVNNI: AVX2, AVX-512) against their generic twins bit for bit, and the twins
// against float64 sums within rounding, for head sizes with and without
// kernels (hd 2..128) and position counts around the tile and pair sizes.
func TestAttnF16(t *testing.T) {
	defer attnPath("default")
	r := rand.New(rand.NewPCG(11, 12))
	half := func(n int, scale float32) []uint16 {
		h := make([]uint16, n)
		for i, f := range randVec(r, n, scale) {
			h[i] = F32ToF16(f)
		}
		return h
	}
	for _, path := range []string{"generic", "avx2", "avx512"} {
		if !attnPath(path) {
			continue
		}
		for _, hd := range []int{2, 6, 8, 24, 64, 72, 80, 128} {
			for _, n := range []int{1, 2, 3, 8, 31, 32, 33, 64, 65, 200} {
				t.Run(fmt.Sprintf("%s/hd=%d/n=%d", path, hd, n), func(t *testing.T) {
					tiles := (n + TileF32 - 1) / TileF32
					q := randVec(r, hd, 1)
					k := half(tiles*TileF32*hd, 1)
					got, twin := make([]float32, tiles*TileF32), make([]float32, tiles*TileF32)
					AttnScoresF16(got, q, k, n, hd)
					attnScoresF16Generic(twin, q, k, tiles, hd)
					for p := 0; p < n; p++ {
						require.Equal(t, math.Float32bits(twin[p]), math.Float32bits(got[p]), "score %d", p)
						var want, mag float64
						for d := 0; d < hd; d++ {
							kv := float64(F16ToF32(k[(p/TileF32)*hd*TileF32+d*TileF32+p%TileF32]))
							want += float64(q[d]) * kv
							mag += math.Abs(float64(q[d]) * kv)
						}
						require.InDelta(t, want, got[p], 1e-6*mag+1e-7, "score %d", p)
					}
					w := randVec(r, n, 1)
					v := half(n*hd, 1)
					out, tout := make([]float32, hd), make([]float32, hd)
					AttnValuesF16(out, w, v, n, hd)
					attnValuesF16Generic(tout, w, v, n, hd)
					for d := 0; d < hd; d++ {
						require.Equal(t, math.Float32bits(tout[d]), math.Float32bits(out[d]), "value %d", d)
						var want, mag float64
						for p := 0; p < n; p++ {
							want += float64(w[p]) * float64(F16ToF32(v[p*hd+d]))
							mag += math.Abs(float64(w[p]) * float64(F16ToF32(v[p*hd+d])))
						}
						require.InDelta(t, want, out[d], 1e-6*mag+1e-7, "value %d", d)
					}
				})
			}
		}
	}
	out := []float32{1, 2}
	AttnValuesF16(out, nil, nil, 0, 2)
	require.Equal(t, []float32{0, 0}, out)
	require.Panics(t, func() { AttnScoresF16(make([]float32, 32), make([]float32, 3), make([]uint16, 96), 1, 3) }, "odd hd")
	require.Panics(t, func() { AttnScoresF16(make([]float32, 31), make([]float32, 2), make([]uint16, 64), 1, 2) }, "dst shorter than a tile")
	require.Panics(t, func() { AttnValuesF16(make([]float32, 8), make([]float32, 2), make([]uint16, 15), 2, 8) }, "v short")
}

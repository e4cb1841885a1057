package quant

import "fmt"

// Attention over an f16 KV cache. Keys are stored in tiles of TileF32
// positions, each tile hd rows of TileF32 halves (row d holds dimension d
// of the tile's positions), so the scores of a query are FMAs of a
// broadcast query element with eight positions at a time, with no
// horizontal sums; values are stored one row of hd halves per position, so
// the weighted sum is FMAs of a broadcast weight with eight dimensions at
// a time. Each sum is split by parity (even and odd dimensions, or
// positions) into two chains of fused multiply-adds, added at the end:
// that order is the contract (the generic twins below), the same on every
// path, so a result does not depend on the CPU's kernels being present.

// AttnScoresF16 sets dst[p] to the dot product of q[:hd] with the key of
// position p < n, read from k laid out in tiles as above: element d of
// position p is k[(p/TileF32)*hd*TileF32 + d*TileF32 + p%TileF32]. hd must
// be even; k must hold ceil(n/TileF32) tiles and dst that many times
// TileF32 floats (the positions of a partial last tile past n are
// computed too and should be ignored). Safe for concurrent use.
func AttnScoresF16(dst, q []float32, k []uint16, n, hd int) {
	tiles := (n + TileF32 - 1) / TileF32
	if n <= 0 {
		return
	}
	if hd <= 0 || hd%2 != 0 || len(q) < hd || len(k) < tiles*TileF32*hd || len(dst) < tiles*TileF32 {
		panic(fmt.Sprintf("quant: AttnScoresF16 out of range: n %d, hd %d, q %d, k %d, dst %d", n, hd, len(q), len(k), len(dst)))
	}
	attnScoresImpl(dst, q, k, tiles, hd)
}

// AttnValuesF16 sets out[d] (d < hd) to the sum over positions p < n of
// w[p] times element d of value row p, v[p*hd+d]. hd must be positive;
// w must hold n weights, v n rows, out hd floats. Safe for concurrent use.
func AttnValuesF16(out, w []float32, v []uint16, n, hd int) {
	if hd <= 0 || n < 0 || len(out) < hd || len(w) < n || len(v) < n*hd {
		panic(fmt.Sprintf("quant: AttnValuesF16 out of range: n %d, hd %d, out %d, w %d, v %d", n, hd, len(out), len(w), len(v)))
	}
	if n == 0 {
		clear(out[:hd])
		return
	}
	if hd%8 != 0 { // the kernels take eight dimensions at a time
		attnValuesF16Generic(out[:hd], w, v, n, hd)
		return
	}
	attnValuesImpl(out[:hd], w, v, n, hd)
}

// attnScoresImpl and attnValuesImpl are the generic twins unless the
// architecture's useSIMD installs assembly kernels (attnValuesImpl is
// called with hd a multiple of 8).
var (
	attnScoresImpl = attnScoresF16Generic
	attnValuesImpl = attnValuesF16Generic
)

// attnScoresF16Generic is the portable twin of attnScoresF16AVX2 and
// defines the order: per position, even = fma(q[d], k[d], even) over even
// d in order, odd the same over odd d, then even + odd.
func attnScoresF16Generic(dst, q []float32, k []uint16, tiles, hd int) {
	for t := 0; t < tiles; t++ {
		tk := k[t*hd*TileF32:][:hd*TileF32]
		for l := 0; l < TileF32; l++ {
			var sum [2]float32
			for d := 0; d < hd; d++ {
				sum[d%2] = fma32(q[d], F16ToF32(tk[d*TileF32+l]), sum[d%2])
			}
			dst[t*TileF32+l] = sum[0] + sum[1]
		}
	}
}

// attnValuesF16Generic is the portable twin of attnValuesF16AVX2: per
// dimension, even = fma(w[p], v_p, even) over even p in order, odd the
// same over odd p, then even + odd.
func attnValuesF16Generic(out, w []float32, v []uint16, n, hd int) {
	for d := range out {
		var sum [2]float32
		for p := 0; p < n; p++ {
			sum[p%2] = fma32(w[p], F16ToF32(v[p*hd+d]), sum[p%2])
		}
		out[d] = sum[0] + sum[1]
	}
}

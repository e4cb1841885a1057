package quant

import "fmt"

// TileF32 is the tile width of DotF32Tiled: 32 floats, one step of the
// AVX2 DotF32 kernel's main loop (four accumulators of eight lanes), so a
// dot product that jumps from tile to tile keeps DotF32's accumulation
// order exactly.
const TileF32 = 32

// DotF32Tiled computes len(dst) dot products of a[:n], each with a vector
// read from b with strides: for r < len(dst), element i of vector r is
//
//	b[r*rowStride + (i/TileF32)*tileStride + i%TileF32]
//
// and dst[r] is, bit for bit, DotF32(a[:n], that vector) — for a tiled
// layout on arm64 with NEON excepted, where it follows the generic
// kernel's order (consistent, but not NEON's). tileStride = TileF32 reads contiguous vectors
// rowStride apart (rows of a matrix, e.g. attention keys); a tileStride
// larger than TileF32 reads vectors stored in tiles of TileF32 elements
// (e.g. a value cache with TileF32 positions per tile). The engine uses it
// for attention: one call per (row, head) instead of one DotF32 per key or
// per dimension. It panics, as an out-of-range slice would, when b or a is
// too short. Safe for concurrent use (it writes only dst).
func DotF32Tiled(dst, a, b []float32, n, rowStride, tileStride int) {
	if tiledArgs("DotF32Tiled", dst, n, len(a), len(b), rowStride, tileStride) {
		dotF32TiledImpl(dst, a, b, n, rowStride, tileStride)
	}
}

// tiledArgs checks the arguments of fn (DotF32Tiled) with a
// and b of lenA and lenB elements: it panics when they are out of range,
// clears dst when n <= 0, and reports whether there are products to
// compute.
func tiledArgs(fn string, dst []float32, n, lenA, lenB, rowStride, tileStride int) bool {
	if len(dst) == 0 {
		return false
	}
	if n <= 0 {
		clear(dst)
		return false
	}
	last := (len(dst)-1)*rowStride + ((n-1)/TileF32)*tileStride + (n-1)%TileF32
	if n > lenA || last >= lenB || rowStride < 0 || tileStride < TileF32 {
		panic(fmt.Sprintf("quant: %s out of range: n %d of %d, rows %d × %d, tile stride %d, last %d of %d",
			fn, n, lenA, len(dst), rowStride, tileStride, last, lenB))
	}
	return true
}

// dotF32TiledImpl is the generic kernel unless the architecture's
// useSIMD installs an assembly one.
var dotF32TiledImpl = dotF32TiledGeneric

// dotF32TiledGeneric computes contiguous vectors with dotF32Impl (the
// architecture's DotF32) and tiled ones with dotF32Generic's operations
// (four partial sums by i mod 4, the remainder into the first).
func dotF32TiledGeneric(dst, a, b []float32, n, rowStride, tileStride int) {
	if tileStride == TileF32 {
		for r := range dst {
			dst[r] = dotF32Impl(a[:n], b[r*rowStride:r*rowStride+n])
		}
		return
	}
	at := func(base, i int) float32 { return b[base+(i/TileF32)*tileStride+i%TileF32] }
	for r := range dst {
		base := r * rowStride
		var s0, s1, s2, s3 float32
		i := 0
		for ; i+4 <= n; i += 4 {
			s0 += a[i] * at(base, i)
			s1 += a[i+1] * at(base, i+1)
			s2 += a[i+2] * at(base, i+2)
			s3 += a[i+3] * at(base, i+3)
		}
		for ; i < n; i++ {
			s0 += a[i] * at(base, i)
		}
		dst[r] = (s0 + s1) + (s2 + s3)
	}
}

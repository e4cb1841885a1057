//go:build arm64 && !purego

package quant

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// armDotProd selects the quantised kernels that use the ARMv8.2 SDOT
// instruction (Apple M1+, Graviton2+, Cortex-A76+); without it their ARMv8.0
// twins (suffix 80, SMULL/SADALP) run. Set at init; tests flip it.
var armDotProd = cpu.ARM64.HasASIMDDP

//go:noescape
func dotF32NEON(n int, a, b *float32) float32

//go:noescape
func dotF16NEON(n int, a, b *byte) float32

//go:noescape
func dotQ8_0NEON(nb int, w, x *byte) float32

//go:noescape
func dotQ4_0NEON(nb int, w, x *byte) float32

//go:noescape
func subdotsQ4KNEON(nb int, w, x *byte, out *int32)

//go:noescape
func subdotsQ5KNEON(nb int, w, x *byte, out *int32)

//go:noescape
func subdotsQ2KNEON(nb int, w, x *byte, out *int32)

//go:noescape
func subdotsQ3KNEON(nb int, w, x *byte, out *int32)

//go:noescape
func subdotsQ6KNEON(nb int, w, x *byte, out *int32)

//go:noescape
func dotQ8_0NEON80(nb int, w, x *byte) float32

//go:noescape
func dotQ4_0NEON80(nb int, w, x *byte) float32

//go:noescape
func subdotsQ4KNEON80(nb int, w, x *byte, out *int32)

//go:noescape
func subdotsQ5KNEON80(nb int, w, x *byte, out *int32)

//go:noescape
func subdotsQ2KNEON80(nb int, w, x *byte, out *int32)

//go:noescape
func subdotsQ3KNEON80(nb int, w, x *byte, out *int32)

//go:noescape
func subdotsQ6KNEON80(nb int, w, x *byte, out *int32)

var dotF32Impl = dotF32Generic

func init() { useSIMD(true) }

// simdKernels are the arm64 replacements of the generic dot kernels.
func simdKernels() map[Type]dotFunc {
	m := map[Type]dotFunc{
		F16:  dotF16SIMD,
		Q8_0: blockKernel(dotQ8_0NEON80, QK, 34, 34),
		Q4_0: blockKernel(dotQ4_0NEON80, QK, 18, 34),
		Q4_K: dotQ4KSIMD,
		Q5_K: dotQ5KSIMD,
		Q6_K: dotQ6KSIMD,
		Q2_K: dotQ2KSIMD,
		Q3_K: dotQ3KSIMD,
	}
	if armDotProd {
		m[Q8_0] = blockKernel(dotQ8_0NEON, QK, 34, 34)
		m[Q4_0] = blockKernel(dotQ4_0NEON, QK, 18, 34)
	}
	return m
}

// useSIMD switches between the NEON and the generic kernels. It must not be
// called concurrently with MatMul.
func useSIMD(on bool) bool {
	for t, g := range genericKernels {
		dotKernels[t] = g
	}
	dotF32Impl = dotF32Generic
	if on {
		for t, k := range simdKernels() {
			dotKernels[t] = k
		}
		dotF32Impl = dotF32SIMD
	}
	return true
}

// hasSIMDKernel reports whether MatMul has an assembly kernel for t.
func hasSIMDKernel(t Type) bool {
	if t == F32 {
		return true
	}
	_, ok := simdKernels()[t]
	return ok
}

func dotF32SIMD(a, b []float32) float32 {
	n := min(len(a), len(b))
	n16 := n &^ 15
	var s float32
	if n16 > 0 {
		s = dotF32NEON(n16, &a[0], &b[0])
	}
	for i := n16; i < n; i++ {
		s += a[i] * b[i]
	}
	return s
}

func dotF16SIMD(cols int, w, x []byte) float32 {
	n8 := cols &^ 7
	_ = w[2*cols-1]
	_ = x[2*cols-1]
	var s float32
	if n8 > 0 {
		s = dotF16NEON(n8, &w[0], &x[0])
	}
	for i := n8; i < cols; i++ {
		s += F16ToF32(le16(w[2*i:])) * F16ToF32(le16(x[2*i:]))
	}
	return s
}

// subdotChunk is how many super-blocks one assembly call handles; their
// integer sub-block dots go to a stack buffer that Go then scales.
const subdotChunk = 32

func dotQ4KSIMD(cols int, w, x []byte) float32 {
	return dotK4SIMD(cols, w, x, 144)
}

func dotQ5KSIMD(cols int, w, x []byte) float32 {
	return dotK4SIMD(cols, w, x, 176)
}

// dotK4SIMD finishes Q4_K (144 bytes per block) and Q5_K (176): the assembly computes
// the 8 integer sub-block dots per block, Go applies the 6-bit scales and
// mins and the float scales.
// The assembly functions are called directly (not through a func value) so
// that buf stays on the stack.
func dotK4SIMD(cols int, w, x []byte, wbytes int) float32 {
	nb := checkBlocks(cols, QKK, w, wbytes, x, 292)
	var buf [8 * subdotChunk]int32
	var sum float32
	for b0 := 0; b0 < nb; b0 += subdotChunk {
		k := min(subdotChunk, nb-b0)
		wp, xp := unsafe.SliceData(w[b0*wbytes:]), unsafe.SliceData(x[b0*292:])
		switch {
		case wbytes == 144 && armDotProd:
			subdotsQ4KNEON(k, wp, xp, &buf[0])
		case wbytes == 144:
			subdotsQ4KNEON80(k, wp, xp, &buf[0])
		case armDotProd:
			subdotsQ5KNEON(k, wp, xp, &buf[0])
		default:
			subdotsQ5KNEON80(k, wp, xp, &buf[0])
		}
		for b := 0; b < k; b++ {
			wb := w[(b0+b)*wbytes : (b0+b+1)*wbytes]
			xb := x[(b0+b)*292 : (b0+b+1)*292]
			sc, mn := k4Scales(wb[4:16])
			var summ, isum int32
			for j := 0; j < 16; j++ {
				summ += q8kBsum(xb, j) * int32(mn[j/2])
			}
			for j := 0; j < 8; j++ {
				isum += int32(sc[j]) * buf[8*b+j]
			}
			yd := q8kD(xb)
			sum += f16at(wb)*yd*float32(isum) - f16at(wb[2:])*yd*float32(summ)
		}
	}
	return sum
}

func dotQ6KSIMD(cols int, w, x []byte) float32 {
	nb := checkBlocks(cols, QKK, w, 210, x, 292)
	var buf [16 * subdotChunk]int32
	var sum float32
	for b0 := 0; b0 < nb; b0 += subdotChunk {
		k := min(subdotChunk, nb-b0)
		if armDotProd {
			subdotsQ6KNEON(k, unsafe.SliceData(w[b0*210:]), unsafe.SliceData(x[b0*292:]), &buf[0])
		} else {
			subdotsQ6KNEON80(k, unsafe.SliceData(w[b0*210:]), unsafe.SliceData(x[b0*292:]), &buf[0])
		}
		for b := 0; b < k; b++ {
			wb := w[(b0+b)*210 : (b0+b+1)*210]
			xb := x[(b0+b)*292 : (b0+b+1)*292]
			var isum int32
			for j := 0; j < 16; j++ {
				isum += int32(int8(wb[192+j])) * buf[16*b+j]
			}
			sum += f16at(wb[208:]) * q8kD(xb) * float32(isum)
		}
	}
	return sum
}

func f16ToF32sImpl(dst []float32, src []uint16) {
	for i := range min(len(dst), len(src)) {
		dst[i] = F16ToF32(src[i])
	}
}

func f32ToF16sImpl(dst []uint16, src []float32) {
	for i := range min(len(dst), len(src)) {
		dst[i] = F32ToF16(src[i])
	}
}

func dotQ2KSIMD(cols int, w, x []byte) float32 {
	nb := checkBlocks(cols, QKK, w, 84, x, 292)
	var buf [16 * subdotChunk]int32
	var sum float32
	for b0 := 0; b0 < nb; b0 += subdotChunk {
		k := min(subdotChunk, nb-b0)
		if armDotProd {
			subdotsQ2KNEON(k, unsafe.SliceData(w[b0*84:]), unsafe.SliceData(x[b0*292:]), &buf[0])
		} else {
			subdotsQ2KNEON80(k, unsafe.SliceData(w[b0*84:]), unsafe.SliceData(x[b0*292:]), &buf[0])
		}
		for b := 0; b < k; b++ {
			wb := w[(b0+b)*84 : (b0+b+1)*84]
			xb := x[(b0+b)*292 : (b0+b+1)*292]
			var isum, summs int32
			for j := 0; j < 16; j++ {
				isum += int32(wb[j]&0xf) * buf[16*b+j]
				summs += q8kBsum(xb, j) * int32(wb[j]>>4)
			}
			yd := q8kD(xb)
			sum += yd*f16at(wb[80:])*float32(isum) - yd*f16at(wb[82:])*float32(summs)
		}
	}
	return sum
}

func dotQ3KSIMD(cols int, w, x []byte) float32 {
	nb := checkBlocks(cols, QKK, w, 110, x, 292)
	var buf [16 * subdotChunk]int32
	var scales [16]int8
	var sum float32
	for b0 := 0; b0 < nb; b0 += subdotChunk {
		k := min(subdotChunk, nb-b0)
		if armDotProd {
			subdotsQ3KNEON(k, unsafe.SliceData(w[b0*110:]), unsafe.SliceData(x[b0*292:]), &buf[0])
		} else {
			subdotsQ3KNEON80(k, unsafe.SliceData(w[b0*110:]), unsafe.SliceData(x[b0*292:]), &buf[0])
		}
		for b := 0; b < k; b++ {
			wb := w[(b0+b)*110 : (b0+b+1)*110]
			xb := x[(b0+b)*292 : (b0+b+1)*292]
			q3kScales(wb[96:108], &scales)
			var isum int32
			for j := 0; j < 16; j++ {
				isum += (int32(scales[j]) - 32) * buf[16*b+j]
			}
			sum += f16at(wb[108:]) * q8kD(xb) * float32(isum)
		}
	}
	return sum
}

//go:build amd64 && !purego

package quant

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// hasAVX2 reports whether the AVX2 kernels can run: they also use FMA and
// F16C (VCVTPH2PS), present on every AVX2 CPU in practice but checked anyway.
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

//go:noescape
func dotF32AVX2(a, b *float32, n int) float32

//go:noescape
func dotF16AVX2(a, b *byte, n int) float32

//go:noescape
func dotQ8_0AVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ4_0AVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ4KAVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ6KAVX2(nb int, w, x *byte) float32

//go:noescape
func dotIQ4NLAVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ5_0AVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ4_1AVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ5_1AVX2(nb int, w, x *byte) float32

//go:noescape
func dotBF16AVX2(a, b *byte, n int) float32

//go:noescape
func dotQ5KAVX2(nb int, w, x *byte) float32

//go:noescape
func dotIQ4XSAVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ2KAVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ3KAVX2(nb int, w, x *byte) float32

//go:noescape
func dotQ8_0x4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func dotQ4_0x4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func dotQ6Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func dotQ5Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func dotIQ4NLx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func dotQ5_0x4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func cvtF16ToF32AVX2(dst *float32, src *uint16, n int)

//go:noescape
func cvtF32ToF16AVX2(dst *uint16, src *float32, n int)

//go:noescape
func dotQ2Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func dotQ3Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func dotIQ4XSx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

//go:noescape
func dotQ4Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)

var dotF32Impl = dotF32Generic

func init() {
	if hasAVX2 {
		useSIMD(true)
	}
}

// simdKernels are the amd64 replacements of the generic dot kernels.
var simdKernels = map[Type]dotFunc{
	F16:    dotF16SIMD,
	Q8_0:   dotQ8_0SIMD,
	Q4_0:   dotQ4_0SIMD,
	Q4_K:   dotQ4KSIMD,
	Q6_K:   dotQ6KSIMD,
	Q5_K:   dotQ5KSIMD,
	IQ4_NL: dotIQ4NLSIMD,
	IQ4_XS: dotIQ4XSSIMD,
	Q5_0:   dotQ5_0SIMD,
	Q4_1:   dotQ4_1SIMD,
	Q5_1:   dotQ5_1SIMD,
	BF16:   dotBF16SIMD,
	Q2_K:   dotQ2KSIMD,
	Q3_K:   dotQ3KSIMD,
}

// useSIMD switches between the assembly and the generic kernels (tests and
// benchmarks compare the two). It must not be called concurrently with MatMul.
func useSIMD(on bool) bool {
	if on && !hasAVX2 {
		return false
	}
	for t, g := range genericKernels {
		dotKernels[t] = g
	}
	dotF32Impl = dotF32Generic
	clear(dot4Kernels)
	if on {
		for t, k := range simdKernels {
			dotKernels[t] = k
		}
		for t, k := range simd4Kernels {
			dot4Kernels[t] = k
		}
		dotF32Impl = dotF32SIMD
	}
	return true
}

func dotF32SIMD(a, b []float32) float32 {
	n := min(len(a), len(b))
	n8 := n &^ 7
	var s float32
	if n8 > 0 {
		s = dotF32AVX2(&a[0], &b[0], n8)
	}
	for i := n8; i < n; i++ {
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
		s = dotF16AVX2(&w[0], &x[0], n8)
	}
	for i := n8; i < cols; i++ {
		s += F16ToF32(le16(w[2*i:])) * F16ToF32(le16(x[2*i:]))
	}
	return s
}

func dotQ8_0SIMD(cols int, w, x []byte) float32 {
	if nb := checkBlocks(cols, QK, w, 34, x, 34); nb > 0 {
		return dotQ8_0AVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x))
	}
	return 0
}

func dotQ4_0SIMD(cols int, w, x []byte) float32 {
	if nb := checkBlocks(cols, QK, w, 18, x, 34); nb > 0 {
		return dotQ4_0AVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x))
	}
	return 0
}

func dotQ4KSIMD(cols int, w, x []byte) float32 {
	if nb := checkBlocks(cols, QKK, w, 144, x, 292); nb > 0 {
		return dotQ4KAVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x))
	}
	return 0
}

func dotQ6KSIMD(cols int, w, x []byte) float32 {
	if nb := checkBlocks(cols, QKK, w, 210, x, 292); nb > 0 {
		return dotQ6KAVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x))
	}
	return 0
}

// hasSIMDKernel reports whether MatMul has an assembly kernel for t.
func hasSIMDKernel(t Type) bool {
	if t == F32 {
		return hasAVX2
	}
	_, ok := simdKernels[t]
	return ok && hasAVX2
}

var (
	dotQ2KSIMD   = blockKernel(dotQ2KAVX2, QKK, 84, 292)
	dotQ3KSIMD   = blockKernel(dotQ3KAVX2, QKK, 110, 292)
	dotQ5KSIMD   = blockKernel(dotQ5KAVX2, QKK, 176, 292)
	dotIQ4XSSIMD = blockKernel(dotIQ4XSAVX2, QKK, 136, 292)
	dotIQ4NLSIMD = blockKernel(dotIQ4NLAVX2, QK, 18, 34)
	dotQ5_0SIMD  = blockKernel(dotQ5_0AVX2, QK, 22, 34)
	dotQ4_1SIMD  = blockKernel(dotQ4_1AVX2, QK, 20, 36)
	dotQ5_1SIMD  = blockKernel(dotQ5_1AVX2, QK, 24, 36)
)

func dotBF16SIMD(cols int, w, x []byte) float32 {
	n8 := cols &^ 7
	_ = w[2*cols-1]
	_ = x[2*cols-1]
	var s float32
	if n8 > 0 {
		s = dotBF16AVX2(&w[0], &x[0], n8)
	}
	for i := n8; i < cols; i++ {
		s += BF16ToF32(le16(w[2*i:])) * BF16ToF32(le16(x[2*i:]))
	}
	return s
}

// simd4Kernels are the four-vector kernels (see dot4Func).
var simd4Kernels = map[Type]dot4Func{
	Q4_K:   dotQ4Kx4SIMD,
	Q8_0:   dotQ8_0x4SIMD,
	Q4_0:   dotQ4_0x4SIMD,
	Q6_K:   dotQ6Kx4SIMD,
	Q5_K:   dotQ5Kx4SIMD,
	IQ4_NL: blockKernel4(dotIQ4NLx4AVX2, QK, 18, 34),
	Q5_0:   blockKernel4(dotQ5_0x4AVX2, QK, 22, 34),
	Q2_K:   blockKernel4(dotQ2Kx4AVX2, QKK, 84, 292),
	Q3_K:   blockKernel4(dotQ3Kx4AVX2, QKK, 110, 292),
	IQ4_XS: blockKernel4(dotIQ4XSx4AVX2, QKK, 136, 292),
}

// blockKernel4 adapts a four-vector assembly kernel over whole blocks to a
// dot4Func, bounds-checking the slices first.
func blockKernel4(k func(nb int, w, x *byte, xstride int, out *[4]float32), bs, wb, xb int) dot4Func {
	return func(cols int, w, x []byte, xB int, out *[4]float32) {
		nb := cols / bs
		if nb == 0 {
			*out = [4]float32{}
			return
		}
		_ = w[nb*wb-1]
		_ = x[3*xB+nb*xb-1]
		k(nb, unsafe.SliceData(w), unsafe.SliceData(x), xB, out)
	}
}

func dotQ5Kx4SIMD(cols int, w, x []byte, xB int, out *[4]float32) {
	nb := cols / QKK
	if nb == 0 {
		*out = [4]float32{}
		return
	}
	_ = w[nb*176-1]
	_ = x[3*xB+nb*292-1]
	dotQ5Kx4AVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x), xB, out)
}

func dotQ6Kx4SIMD(cols int, w, x []byte, xB int, out *[4]float32) {
	nb := cols / QKK
	if nb == 0 {
		*out = [4]float32{}
		return
	}
	_ = w[nb*210-1]
	_ = x[3*xB+nb*292-1]
	dotQ6Kx4AVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x), xB, out)
}

func dotQ8_0x4SIMD(cols int, w, x []byte, xB int, out *[4]float32) {
	nb := cols / QK
	if nb == 0 {
		*out = [4]float32{}
		return
	}
	_ = w[nb*34-1]
	_ = x[3*xB+nb*34-1]
	dotQ8_0x4AVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x), xB, out)
}

func dotQ4_0x4SIMD(cols int, w, x []byte, xB int, out *[4]float32) {
	nb := cols / QK
	if nb == 0 {
		*out = [4]float32{}
		return
	}
	_ = w[nb*18-1]
	_ = x[3*xB+nb*34-1]
	dotQ4_0x4AVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x), xB, out)
}

func dotQ4Kx4SIMD(cols int, w, x []byte, xB int, out *[4]float32) {
	nb := cols / QKK
	if nb == 0 {
		*out = [4]float32{}
		return
	}
	_ = w[nb*144-1]
	_ = x[3*xB+nb*292-1]
	dotQ4Kx4AVX2(nb, unsafe.SliceData(w), unsafe.SliceData(x), xB, out)
}

func f16ToF32sImpl(dst []float32, src []uint16) {
	n := min(len(dst), len(src))
	n8 := n &^ 7
	if hasAVX2 && n8 > 0 {
		cvtF16ToF32AVX2(&dst[0], &src[0], n8)
	} else {
		n8 = 0
	}
	for i := n8; i < n; i++ {
		dst[i] = F16ToF32(src[i])
	}
}

func f32ToF16sImpl(dst []uint16, src []float32) {
	n := min(len(dst), len(src))
	n8 := n &^ 7
	if hasAVX2 && n8 > 0 {
		cvtF32ToF16AVX2(&dst[0], &src[0], n8)
	} else {
		n8 = 0
	}
	for i := n8; i < n; i++ {
		dst[i] = F32ToF16(src[i])
	}
}

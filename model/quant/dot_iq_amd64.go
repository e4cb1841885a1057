//go:build amd64 && !purego

package quant

import "unsafe"

// The AVX2 kernels of the 2- and 3-bit i-quants (internal/asm's iq.go,
// dot_iq_amd64.s) take the type's codebook as an argument; iqDot and
// iqDot4 bind it and bounds-check the slices (blockKernel, blockKernelN).
// For every vector a kernel performs the float operations of the type's
// generic twin (dot_iq.go), so results are the twin's bit for bit.

// iqDot adapts a single-vector i-quant kernel (wb weight bytes a block,
// codebook grid) to a dotFunc.
func iqDot(k func(nb int, w, x, grid *byte) float32, wb int, grid unsafe.Pointer) dotFunc {
	return blockKernel(func(nb int, w, x *byte) float32 { return k(nb, w, x, (*byte)(grid)) }, QKK, wb, 292)
}

// iqDot4 adapts a four-vector i-quant kernel to a dot4Func.
func iqDot4(k func(nb int, w, x *byte, xstride int, grid *byte, out *[4]float32), wb int, grid unsafe.Pointer) dot4Func {
	return blockKernel4(func(nb int, w, x *byte, xstride int, out *[4]float32) {
		k(nb, w, x, xstride, (*byte)(grid), out)
	}, QKK, wb, 292)
}

// The i-quant kernels, registered in simdKernels and simd4Kernels.
var (
	dotIQ2XXSSIMD = iqDot(dotIQ2XXSAVX2, 66, unsafe.Pointer(&iq2xxsGrid))
	dotIQ2XSSIMD  = iqDot(dotIQ2XSAVX2, 74, unsafe.Pointer(&iq2xsGrid))
	dotIQ2SSIMD   = iqDot(dotIQ2SAVX2, 82, unsafe.Pointer(&iq2sGrid))
	dotIQ3XXSSIMD = iqDot(dotIQ3XXSAVX2, 98, unsafe.Pointer(&iq3xxsGrid))
	dotIQ3SSIMD   = iqDot(dotIQ3SAVX2, 110, unsafe.Pointer(&iq3sGrid))

	dotIQ2XXSx4SIMD = iqDot4(dotIQ2XXSx4AVX2, 66, unsafe.Pointer(&iq2xxsGrid))
	dotIQ2XSx4SIMD  = iqDot4(dotIQ2XSx4AVX2, 74, unsafe.Pointer(&iq2xsGrid))
	dotIQ2Sx4SIMD   = iqDot4(dotIQ2Sx4AVX2, 82, unsafe.Pointer(&iq2sGrid))
	dotIQ3XXSx4SIMD = iqDot4(dotIQ3XXSx4AVX2, 98, unsafe.Pointer(&iq3xxsGrid))
	dotIQ3Sx4SIMD   = iqDot4(dotIQ3Sx4AVX2, 110, unsafe.Pointer(&iq3sGrid))
)

//go:build !(amd64 || arm64) || purego

package quant

var dotF32Impl = dotF32Generic

// useSIMD reports false: there are no assembly kernels for this build.
func useSIMD(on bool) bool { return !on }

func hasSIMDKernel(Type) bool { return false }

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

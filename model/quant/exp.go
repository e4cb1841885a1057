package quant

import "math"

// ExpF32s sets dst[i] = float32(math.Exp(float64(src[i]))) for i <
// len(src), bit for bit: the engine's softmax and SwiGLU evaluate e^x in
// float64 this way, and the vector kernel (amd64 with AVX2: four lanes of
// the exact operations of Go's own math.Exp on that CPU) must not change a
// logit. dst must be at least as long as src; dst and src may be the same
// slice, but must not overlap otherwise. Safe for concurrent use on
// distinct dst.
func ExpF32s(dst, src []float32) {
	dst = dst[:len(src)]
	// Static calls, not a function variable, so that slices on the
	// caller's stack stay there.
	if expVector {
		expF32sSIMD(dst, src)
		return
	}
	expF32sGeneric(dst, src)
}

func expF32sGeneric(dst, src []float32) {
	for i, v := range src {
		dst[i] = float32(math.Exp(float64(v)))
	}
}

package quant

import "math"

// Softmax sets w[i] to e^(w[i]·scale − m) / Σ_j e^(w[j]·scale − m), m the
// largest w[i]·scale: attention's weights from its raw scores. Every step
// is the engine's own, in its order, so the result is the same bits on
// every path: the scaling and the subtraction of m in float32 (a NaN is
// never m), e^x by ExpF32s, the sum in float64 from first to last, and its
// reciprocal rounded to float32 multiplied in. On amd64 with AVX-512 the
// elementwise steps run sixteen lanes at a time. Safe for concurrent use
// on distinct w.
func Softmax(w []float32, scale float32) {
	if len(w) == 0 {
		return
	}
	mx := mulMaxF32(w, scale)
	addF32(w, -mx) // x - m is x + (-m), exactly
	ExpF32s(w, w)
	var sum float64
	for _, e := range w {
		sum += float64(e)
	}
	mulF32(w, float32(1/sum))
}

// SoftmaxSink is Softmax with one more score, sink (already scaled), that
// joins the maximum and the sum but has no weight of its own: attention
// sinks (gpt-oss), as ggml's soft_max adds them: m the larger of the
// largest w[i]·scale and sink, e^(sink − m) added to the float64 sum
// after the others.
func SoftmaxSink(w []float32, scale, sink float32) {
	if len(w) == 0 {
		return
	}
	mx := max(mulMaxF32(w, scale), sink)
	addF32(w, -mx)
	ExpF32s(w, w)
	var sum float64
	for _, e := range w {
		sum += float64(e)
	}
	var s [1]float32
	s[0] = sink - mx
	ExpF32s(s[:], s[:])
	sum += float64(s[0])
	mulF32(w, float32(1/sum))
}

// mulMaxF32 sets x[i] *= s and returns the largest x[i] (-Inf when none).
func mulMaxF32(x []float32, s float32) float32 {
	mx, i := mulMaxSIMD(x, s)
	for ; i < len(x); i++ {
		d := x[i] * s
		x[i] = d
		if d > mx {
			mx = d
		}
	}
	return mx
}

// addF32 sets x[i] += c.
func addF32(x []float32, c float32) {
	for i := addSIMD(x, c); i < len(x); i++ {
		x[i] += c
	}
}

// mulF32 sets x[i] *= c.
func mulF32(x []float32, c float32) {
	for i := mulSIMD(x, c); i < len(x); i++ {
		x[i] *= c
	}
}

// negInf32 is where mulMaxF32 starts.
var negInf32 = float32(math.Inf(-1))

//go:build amd64 && !purego

package quant

import "math"

// expVector selects expF32sSIMD (useSIMD switches it).
var expVector = false

// expF32x4AVX2 computes dst[i] = float32(exp(float64(src[i]))) four
// elements at a time for i < n (n a multiple of 4) with the operations of
// math.Exp's FMA path (math/exp_amd64.s, which math.Exp takes on every CPU
// with AVX2 and FMA): SLEEF's reduction by ln 2 in two parts, a degree-8
// Taylor polynomial at x/16 and four squarings. It stops at the first group
// of four with an element outside [-expRange, expRange] (or NaN), where
// math.Exp needs its overflow, underflow or denormal branches, and returns
// how many elements it wrote.
//
//go:noescape
func expF32x4AVX2(dst, src *float32, n int) int

// expRange bounds the inputs of the vector kernel: |x| ≤ 700 keeps the
// result's binary exponent (x·log2 e rounded, at most ±1010) inside the
// normal range, so the kernel can build 2^k directly from k + 1023.
const expRange = 700

func expF32sSIMD(dst, src []float32) {
	i := 0
	for i+4 <= len(src) {
		i += expF32x4AVX2(&dst[i], &src[i], (len(src)-i)&^3)
		if i+4 > len(src) {
			break
		}
		// The group at i has an element the kernel leaves to math.Exp.
		for _, v := range src[i : i+4] {
			dst[i] = float32(math.Exp(float64(v)))
			i++
		}
	}
	expF32sGeneric(dst[i:], src[i:])
}

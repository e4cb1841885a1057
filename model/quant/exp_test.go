package quant

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExpF32sMatchesMathExp compares ExpF32s, on the generic and (where
// the CPU has it) the assembly path, with float32(math.Exp(float64(x)))
// bit for bit: float32 values spread over every exponent (one bit pattern
// in 40009), the special values and the kernels' range edges, at every
// offset from a group of eight (an element the kernels leave to math.Exp
// falls anywhere in a group), in place and into another slice; the SIMD
// path with the eight-lane kernel where the CPU has it and with the
// four-lane one alone.
func TestExpF32sMatchesMathExp(t *testing.T) {
	defer useSIMD(true)
	var xs []float32
	for b := uint64(0); b < 1<<32; b += 40009 {
		xs = append(xs, math.Float32frombits(uint32(b)))
	}
	xs = append(xs, 0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		700, -700, math.Nextafter32(700, 800), math.Nextafter32(-700, -800), 708, -708, 709.7, 709.8, -745, -746, 88.7, 88.8, -103, -104,
		math.SmallestNonzeroFloat32, 1e-30, -1e-30, 1, -1, 0.5, 10, -10)
	type path struct{ simd, wide bool }
	for _, p := range []path{{false, false}, {true, false}, {true, true}} {
		if !useSIMD(p.simd) || !setExpWide(p.wide) {
			continue
		}
		simd := p
		for off := range 9 {
			src := xs[off:]
			got := make([]float32, len(src))
			ExpF32s(got, src)
			inPlace := append([]float32(nil), src...)
			ExpF32s(inPlace, inPlace)
			for i, x := range src {
				want := float32(math.Exp(float64(x)))
				require.Equal(t, math.Float32bits(want), math.Float32bits(got[i]), "simd=%v exp(%g) = %g, want %g", simd, x, got[i], want)
				require.Equal(t, math.Float32bits(want), math.Float32bits(inPlace[i]), "simd=%v in place exp(%g)", simd, x)
			}
		}
	}
}

// BenchmarkExpF32s times ExpF32s against the scalar loop over 256 values
// of an attention row's range (one thread).
func BenchmarkExpF32s(b *testing.B) {
	src := make([]float32, 256)
	for i := range src {
		src[i] = -float32(i) / 16
	}
	dst := make([]float32, len(src))
	b.Run("math.Exp", func(b *testing.B) {
		for b.Loop() {
			expF32sGeneric(dst, src)
		}
	})
	b.Run("ExpF32s", func(b *testing.B) {
		for b.Loop() {
			ExpF32s(dst, src)
		}
	})
	if expVector && setExpWide(true) {
		b.Run("ExpF32s-4-lanes", func(b *testing.B) {
			defer setExpWide(true)
			setExpWide(false)
			for b.Loop() {
				ExpF32s(dst, src)
			}
		})
	}
}

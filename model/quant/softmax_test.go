package quant

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// softmaxReference is the attention softmax as the engine computed it
// before Softmax: one scalar loop per step.
func softmaxReference(w []float32, scale float32) {
	mx := float32(math.Inf(-1))
	for j := range w {
		d := w[j] * scale
		w[j] = d
		if d > mx {
			mx = d
		}
	}
	for j := range w {
		w[j] -= mx
	}
	for j, v := range w {
		w[j] = float32(math.Exp(float64(v)))
	}
	var sum float64
	for _, e := range w {
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for j := range w {
		w[j] *= inv
	}
}

// TestSoftmaxMatchesReference: Softmax gives the reference's bits on the
// generic and the SIMD path, for every length up to past three vectors of
// sixteen (every tail), scores of attention's range and wider, ties.
func TestSoftmaxMatchesReference(t *testing.T) {
	defer useSIMD(true)
	r := rand.New(rand.NewPCG(3, 4))
	for _, simd := range []bool{false, true} {
		if !useSIMD(simd) {
			continue
		}
		for n := 0; n <= 70; n++ {
			for _, spread := range []float32{1, 30, 300} {
				src := make([]float32, n)
				for i := range src {
					src[i] = (r.Float32()*2 - 1) * spread
				}
				if n > 5 {
					src[n/2] = src[1] // a tie for the largest, maybe
				}
				want := append([]float32(nil), src...)
				softmaxReference(want, 0.125)
				got := append([]float32(nil), src...)
				Softmax(got, 0.125)
				for i := range want {
					require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "simd=%v n=%d spread=%v at %d", simd, n, spread, i)
				}
			}
		}
	}
}

// TestSoftmaxSteps: the elementwise steps on their own, vector and tail,
// a NaN never the largest.
func TestSoftmaxSteps(t *testing.T) {
	defer useSIMD(true)
	for _, simd := range []bool{false, true} {
		if !useSIMD(simd) {
			continue
		}
		x := make([]float32, 37)
		for i := range x {
			x[i] = float32(i) - 20
		}
		x[3] = float32(math.NaN())
		x[20] = float32(math.NaN())
		require.Equal(t, float32(16*2), mulMaxF32(x, 2), "simd=%v", simd)
		require.Equal(t, float32(-40), x[0])
		require.True(t, math.IsNaN(float64(x[3])))
		addF32(x, 1)
		require.Equal(t, float32(-39), x[0])
		require.Equal(t, float32(33), x[36])
		mulF32(x, 0.5)
		require.Equal(t, float32(16.5), x[36])
		require.Equal(t, negInf32, mulMaxF32(nil, 2))
	}
}

// TestSoftmaxSinkMatchesReference: SoftmaxSink gives the bits of ggml's
// steps written as scalar loops (the sink joins the maximum, and its
// e^(sink−m) the sum after the scores), on the generic and the SIMD path;
// a sink of -Inf is Softmax; the weights and the sink's share sum to 1.
func TestSoftmaxSinkMatchesReference(t *testing.T) {
	defer useSIMD(true)
	r := rand.New(rand.NewPCG(5, 6))
	for _, simd := range []bool{false, true} {
		if !useSIMD(simd) {
			continue
		}
		for n := 1; n <= 40; n++ {
			for _, sink := range []float32{-3, 0, 2.5, 40, float32(math.Inf(-1))} {
				src := make([]float32, n)
				for i := range src {
					src[i] = (r.Float32()*2 - 1) * 30
				}
				want := append([]float32(nil), src...)
				mx := sink
				for j := range want {
					want[j] *= 0.125
					mx = max(mx, want[j])
				}
				var sum float64
				for j := range want {
					want[j] = float32(math.Exp(float64(want[j] - mx)))
					sum += float64(want[j])
				}
				own := float32(math.Exp(float64(sink - mx)))
				sum += float64(own)
				for j := range want {
					want[j] *= float32(1 / sum)
				}
				got := append([]float32(nil), src...)
				SoftmaxSink(got, 0.125, sink)
				var total float64
				for i := range want {
					require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "simd=%v n=%d sink=%v at %d", simd, n, sink, i)
					total += float64(got[i])
				}
				require.InDelta(t, 1, total+float64(own)/sum, 1e-5)
				if math.IsInf(float64(sink), -1) {
					plain := append([]float32(nil), src...)
					Softmax(plain, 0.125)
					require.Equal(t, plain, got, "a sink of -Inf is no sink")
				}
			}
		}
	}
}

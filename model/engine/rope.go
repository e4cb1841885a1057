package engine

import (
	"math"
)

// ropeMode is how rotary embeddings pair the dimensions of a head.
type ropeMode int

const (
	// ropeNorm rotates adjacent pairs (x[2i], x[2i+1]): llama.cpp's
	// LLAMA_ROPE_TYPE_NORM, used by llama on GGUF-permuted Q/K weights.
	ropeNorm ropeMode = iota
	// ropeNeox rotates (x[i], x[i+n/2]): LLAMA_ROPE_TYPE_NEOX, used by qwen2.
	ropeNeox
)

// YaRN constants, llama.cpp's defaults (llama-cparams / ggml rope).
const (
	yarnBetaFast = 32
	yarnBetaSlow = 1
)

type ropeParams struct {
	mode       ropeMode
	nRot       int       // rotated dimensions per head (even, ≤ head_dim)
	freqBase   float32   // θ base
	freqScale  float32   // 1/scaling factor (linear, yarn); 1 = none
	extFactor  float32   // yarn ramp mix; 0 = none
	attnFactor float32   // magnitude scale (yarn); 1 = none
	origCtx    int       // yarn: original training context
	freqFactor []float32 // llama3 rope_freqs.weight: θ_i /= freqFactor[i]; nil = none
}

// ropeTable holds cos/sin for every position of the context: table[pos*nRot+2i]
// = cos θ_i(pos), [+1] = sin. Computed once per Model, shared read-only.
type ropeTable struct {
	ropeParams
	table []float32
}

func yarnCorrDim(nDims, nCtxOrig int, nRot, base float64) float64 {
	return float64(nDims) * math.Log(float64(nCtxOrig)/(nRot*2*math.Pi)) / (2 * math.Log(base))
}

// newRopeTable follows ggml's rope_cache_init: θ starts at pos and is
// multiplied by base^(-2/nRot) per pair in float32, as ggml does, so that the
// angles agree with llama.cpp to the last bit where possible.
func newRopeTable(p ropeParams, nCtx int) ropeTable {
	t := ropeTable{ropeParams: p, table: make([]float32, nCtx*p.nRot)}
	thetaScale := float32(math.Pow(float64(p.freqBase), -2.0/float64(p.nRot)))
	var corr0, corr1 float64
	if p.extFactor != 0 {
		start := math.Floor(yarnCorrDim(p.nRot, p.origCtx, yarnBetaFast, float64(p.freqBase)))
		end := math.Ceil(yarnCorrDim(p.nRot, p.origCtx, yarnBetaSlow, float64(p.freqBase)))
		corr0 = math.Max(0, start)
		corr1 = math.Min(float64(p.nRot-1), end)
	}
	for pos := 0; pos < nCtx; pos++ {
		theta := float32(pos)
		row := t.table[pos*p.nRot : (pos+1)*p.nRot]
		for i0 := 0; i0 < p.nRot; i0 += 2 {
			ff := float32(1)
			if p.freqFactor != nil {
				ff = p.freqFactor[i0/2]
			}
			thExtrap := theta / ff
			thInterp := p.freqScale * thExtrap
			th := thInterp
			mscale := p.attnFactor
			if p.extFactor != 0 {
				y := (float64(i0/2) - corr0) / math.Max(0.001, corr1-corr0)
				ramp := float32(1-math.Min(1, math.Max(0, y))) * p.extFactor
				th = thInterp*(1-ramp) + thExtrap*ramp
				mscale *= 1 + 0.1*float32(math.Log(1/float64(p.freqScale)))
			}
			row[i0] = float32(math.Cos(float64(th))) * mscale
			row[i0+1] = float32(math.Sin(float64(th))) * mscale
			theta *= thetaScale
		}
	}
	return t
}

// apply rotates one head vector x (head_dim long) in place for position pos.
// Dimensions beyond nRot pass through unchanged.
func (t *ropeTable) apply(x []float32, pos int) {
	cs := t.table[pos*t.nRot : (pos+1)*t.nRot]
	if t.mode == ropeNorm {
		for i := 0; i < t.nRot; i += 2 {
			c, s := cs[i], cs[i+1]
			x0, x1 := x[i], x[i+1]
			x[i] = x0*c - x1*s
			x[i+1] = x0*s + x1*c
		}
		return
	}
	half := t.nRot / 2
	for i := 0; i < t.nRot; i += 2 {
		c, s := cs[i], cs[i+1]
		j := i / 2
		x0, x1 := x[j], x[j+half]
		x[j] = x0*c - x1*s
		x[j+half] = x0*s + x1*c
	}
}

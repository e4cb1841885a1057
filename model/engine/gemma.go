package engine

import (
	"fmt"
	"math"
	"sync"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
)

// Gemma-family specifics (gemma, gemma2, gemma3), as llama.cpp's graphs
// build them: embeddings scaled by √dim, a GELU-gated FFN, q scaled
// after RoPE instead of the scores, norms after attention and after the
// FFN (gemma2, gemma3), soft-capped attention scores and logits (gemma2;
// logits optionally gemma3), sliding-window attention on most layers
// (gemma2: every other one; gemma3: five of six, with their own RoPE
// base), per-head q/k norms (gemma3).

// gemmaSWAPattern is llama.cpp's set_swa_pattern: in every run of n
// layers the first n-1 are sliding-window layers.
func gemmaSWAPattern(layer, n int) bool { return layer%n < n-1 }

// gemma27B reports whether a model is a 27B one (by its block count, as
// llama.cpp tells them), whose queries Google's reference scales by
// 1/√(dim/heads) instead of 1/√head_dim.
func gemma27B(arch string, layers int) bool {
	return (arch == "gemma2" && layers == 46) || (arch == "gemma3" && layers == 62)
}

// readGemma sets the gemma hyperparameters on m.hp (arch, dim, heads,
// head size and layers already read).
func (m *Model) readGemma() error {
	hp := &m.hp
	hp.embScale = float32(math.Sqrt(float64(float32(hp.dim))))
	hp.gelu = true
	d := hp.headDim
	if gemma27B(hp.arch, hp.nLayer) {
		d = hp.dim / hp.nHead
	}
	hp.qScale = 1 / float32(math.Sqrt(float64(float32(d))))
	switch hp.arch {
	case "gemma2":
		hp.attnCap, hp.finalCap = 50, 30
		hp.swaWindow, hp.swaPattern = 4096, 2
	case "gemma3":
		hp.swaPattern = 6
	}
	for _, c := range []struct {
		key string
		dst *float32
	}{{"attn_logit_softcapping", &hp.attnCap}, {"final_logit_softcapping", &hp.finalCap}} {
		if hp.arch == "gemma" || (hp.arch == "gemma3" && c.dst == &hp.attnCap) {
			// llama.cpp caps attention scores for gemma2 only
			// (hparams.attn_soft_cap); gemma3 ignores the key.
			continue
		}
		v, ok, err := m.optFloat(c.key)
		if err != nil {
			return err
		}
		if ok {
			if v < 0 || v > 1e6 {
				return fmt.Errorf("%w: %s = %v", ErrBadModel, m.key(c.key), v)
			}
			*c.dst = float32(v)
		}
	}
	if hp.arch != "gemma" {
		var err error
		// llama.cpp reads a sliding_window of 0 as no window at all.
		if v, ok := m.file.Uint(m.key("attention.sliding_window")); ok && v == 0 {
			hp.swaWindow = 0
		} else if hp.swaWindow, err = m.optUint("attention.sliding_window", hp.swaWindow); err != nil {
			return err
		}
		if hp.swaWindow == 0 {
			hp.swaPattern = 0 // gemma3 without a window attends globally everywhere
		}
	}
	return nil
}

// swaLayer reports whether global layer il attends through the window.
func (hp *hparams) swaLayer(il int) bool {
	return hp.swaPattern > 0 && hp.swaWindow > 0 && gemmaSWAPattern(il, hp.swaPattern)
}

// geluTable is ggml's ggml_table_gelu_f16: GELU (tanh form) of every f16
// value, rounded to f16, which ggml's CPU backend looks its GELU up in.
// Built once on first use, read-only after.
var geluTable = sync.OnceValue(func() *[1 << 16]uint16 {
	var t [1 << 16]uint16
	for i := range t {
		t[i] = quant.F32ToF16(geluF32(quant.F16ToF32(uint16(i))))
	}
	return &t
})

// geluF32 is ggml_gelu_f32, each step in float32.
func geluF32(x float32) float32 {
	const coefA, sqrt2OverPi = float32(0.044715), float32(0.79788456080286535587989211986876)
	inner := sqrt2OverPi * x * (1 + coefA*x*x)
	return 0.5 * x * (1 + float32(math.Tanh(float64(inner))))
}

// geglu sets g = gelu(g)·u as ggml_vec_geglu_f32 does: through the f16
// table, 0 below -10 and the identity above 10.
func geglu(g, u []float32) {
	t := geluTable()
	u = u[:len(g)]
	for i, x := range g {
		switch {
		case x <= -10:
			g[i] = 0
		case x >= 10:
			g[i] = x * u[i]
		default:
			g[i] = quant.F16ToF32(t[quant.F32ToF16(x)]) * u[i]
		}
	}
}

// softCap sets each x to cap·tanh(x/cap), ggml's scale, tanh, scale.
func softCap(xs []float32, c float32) {
	inv := 1 / c
	for i, x := range xs {
		xs[i] = float32(math.Tanh(float64(x*inv))) * c
	}
}

// scaleBy multiplies every x by s.
func scaleBy(xs []float32, s float32) {
	for i := range xs {
		xs[i] *= s
	}
}

// postNorm RMS-normalises every dim-long row of x in place with weight w
// (a no-op for nil w).
func postNorm(x, w []float32, dim int, eps float32) {
	if w == nil {
		return
	}
	for i := 0; i+dim <= len(x); i += dim {
		rmsNorm(x[i:i+dim], x[i:i+dim], w, eps)
	}
}

// hasSWA reports whether the model has sliding-window layers (in any
// stage: every stage of a pipeline and every shard keeps the same base,
// see Session.ensureKV).
func (m *Model) hasSWA() bool { return m.hp.swaPattern > 0 && m.hp.swaWindow > 0 && !m.fullKV }

// swaSpan is the rows a windowed layer's cache grows to before it drops
// the positions no query sees any more: the window, a prompt chunk after
// it, and a tile of slack for the tile-aligned front. Beyond a chunk the
// rows grow to what a pass needs.
func (m *Model) swaSpan() int { return m.hp.swaSpan() }

func (hp *hparams) swaSpan() int {
	w := min(hp.swaWindow, math.MaxInt32) // a file's window, however large, cannot overflow the sum
	return vTiles(w-1+promptBatch)*quant.TileF32 + quant.TileF32
}

// swaLayers is how many of the first n layers are windowed, counted
// without a loop over them (n comes from the file).
func (hp *hparams) swaLayers(n int) int {
	if hp.swaPattern <= 0 || hp.swaWindow <= 0 || n <= 0 {
		return 0
	}
	p := hp.swaPattern
	return n/p*(p-1) + min(n%p, p-1)
}

// SlidingWindow says how a model file's layers attend, as the engine
// runs it (and llama.cpp does): windowed of its layers attend through a
// sliding window of window positions, the others to every position; 0, 0
// for a model without windowed layers (gemma2, gemma3 and gpt-oss have
// them). A node estimating a worker's KV
// cache counts a windowed layer's positions at most about the window.
func SlidingWindow(f *gguf.File) (windowed, window int, err error) {
	arch, _ := f.String("general.architecture")
	var read func(*Model) error
	switch arch {
	case "gemma2", "gemma3":
		read = (*Model).readGemma
	case "gpt-oss":
		read = (*Model).readGPTOSSWindow
	default:
		return 0, 0, nil
	}
	m := &Model{file: f, hp: hparams{arch: arch}}
	if m.hp.nLayer, err = m.needUint("block_count"); err != nil {
		return 0, 0, err
	}
	if err := read(m); err != nil {
		return 0, 0, err
	}
	return m.hp.swaLayers(m.hp.nLayer), m.hp.swaWindow, nil
}

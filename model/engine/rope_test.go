package engine

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

func baseRope(mode ropeMode) ropeParams {
	return ropeParams{mode: mode, nRot: 8, freqBase: 10000, freqScale: 1, attnFactor: 1, origCtx: 64}
}

// TestRopeRotation checks both pairings against the textbook formula
// θ_i = pos·base^(−2i/n_rot).
func TestRopeRotation(t *testing.T) {
	for _, mode := range []ropeMode{ropeNorm, ropeNeox} {
		tab := newRopeTable(baseRope(mode), 16)
		x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10} // head dim 10, n_rot 8
		orig := append([]float32(nil), x...)
		const pos = 5
		tab.apply(x, pos)
		for i := 0; i < 4; i++ {
			th := pos * math.Pow(10000, -2*float64(i)/8)
			a, b := 2*i, 2*i+1 // NORM: adjacent pairs
			if mode == ropeNeox {
				a, b = i, i+4
			}
			wantA := float64(orig[a])*math.Cos(th) - float64(orig[b])*math.Sin(th)
			wantB := float64(orig[a])*math.Sin(th) + float64(orig[b])*math.Cos(th)
			require.InDelta(t, wantA, x[a], 1e-4, "mode %d pair %d", mode, i)
			require.InDelta(t, wantB, x[b], 1e-4, "mode %d pair %d", mode, i)
		}
		require.Equal(t, orig[8:], x[8:], "dimensions past n_rot pass through")
		// Position 0 is the identity.
		y := append([]float32(nil), orig...)
		tab.apply(y, 0)
		require.Equal(t, orig, y)
	}
}

func TestRopeScaling(t *testing.T) {
	plain := newRopeTable(baseRope(ropeNorm), 32)
	// Linear scaling by 2: position 2p rotates like position p.
	lin := baseRope(ropeNorm)
	lin.freqScale = 0.5
	linear := newRopeTable(lin, 32)
	for p := 0; p < 16; p++ {
		for i := 0; i < 8; i++ {
			require.InDelta(t, plain.table[p*8+i], linear.table[2*p*8+i], 2e-5)
		}
	}
	// Frequency factors (llama3 rope_freqs) divide θ_i.
	ff := baseRope(ropeNorm)
	ff.freqFactor = []float32{1, 2, 4, 8}
	withFF := newRopeTable(ff, 32)
	for i := 0; i < 4; i++ {
		th := 12 * math.Pow(10000, -2*float64(i)/8) / float64(ff.freqFactor[i])
		require.InDelta(t, math.Cos(th), withFF.table[12*8+2*i], 1e-5)
		require.InDelta(t, math.Sin(th), withFF.table[12*8+2*i+1], 1e-5)
	}
	// YaRN: high-frequency pairs (inside the ramp's low end) keep the
	// unscaled angle, low-frequency pairs get the interpolated one, and
	// every value is scaled by 1 + 0.1·ln(factor).
	y := baseRope(ropeNorm)
	y.nRot, y.freqScale, y.extFactor, y.origCtx = 64, 0.25, 1, 64
	yarn := newRopeTable(y, 32)
	m := 1 + 0.1*math.Log(4)
	const p = 7
	th0 := float64(p) // pair 0: θ = pos
	require.InDelta(t, math.Cos(th0)*m, yarn.table[p*64], 1e-5)
	th31 := p * math.Pow(10000, -62.0/64) * 0.25 // last pair: fully interpolated
	require.InDelta(t, math.Cos(th31)*m, yarn.table[p*64+62], 1e-5)
}

// TestRopeMetadata: Load reads the scaling keys and rope_freqs.weight.
func TestRopeMetadata(t *testing.T) {
	cases := []struct {
		name    string
		kvs     map[string]any
		freqs   bool
		check   func(t *testing.T, r ropeParams)
		wantErr error
	}{
		{"none", nil, false, func(t *testing.T, r ropeParams) {
			require.Equal(t, float32(1), r.freqScale)
			require.Equal(t, ropeNorm, r.mode)
		}, nil},
		{"linear", map[string]any{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": float32(4)}, false,
			func(t *testing.T, r ropeParams) { require.Equal(t, float32(0.25), r.freqScale) }, nil},
		{"yarn", map[string]any{"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": float32(2),
			"llama.rope.scaling.original_context_length": uint32(256)}, false,
			func(t *testing.T, r ropeParams) {
				require.Equal(t, float32(0.5), r.freqScale)
				require.Equal(t, float32(1), r.extFactor)
				require.Equal(t, 256, r.origCtx)
			}, nil},
		{"freqs", nil, true, func(t *testing.T, r ropeParams) { require.Len(t, r.freqFactor, 8) }, nil},
		{"unknown", map[string]any{"llama.rope.scaling.type": "dynamic", "llama.rope.scaling.factor": float32(2)}, false, nil, ErrUnsupportedModel},
		{"longrope without its factors", map[string]any{"llama.rope.scaling.type": "longrope"}, false, nil, ErrUnsupportedModel},
		{"no factor", map[string]any{"llama.rope.scaling.type": "linear"}, false, nil, ErrBadModel},
		// A key of the wrong type or a value that is not finite is refused,
		// not silently the default.
		{"factor string", map[string]any{"llama.rope.scaling.factor": "4"}, false, nil, ErrBadModel},
		{"factor NaN", map[string]any{"llama.rope.scaling.factor": float32(math.NaN())}, false, nil, ErrBadModel},
		{"factor Inf", map[string]any{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": math.Inf(1)}, false, nil, ErrBadModel},
		{"scale_linear array", map[string]any{"llama.rope.scale_linear": []float32{2}}, false, nil, ErrBadModel},
		{"type not a string", map[string]any{"llama.rope.scaling.type": uint32(1), "llama.rope.scaling.factor": float32(2)}, false, nil, ErrBadModel},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := synth.DefaultConfig() // dim 64, 4 heads: head dim 16
			w, err := synth.Build(cfg)
			require.NoError(t, err)
			for k, v := range c.kvs {
				require.NoError(t, w.AddKV(k, v))
			}
			if c.freqs {
				data := make([]byte, 8*4)
				for i := 0; i < 8; i++ {
					putF32(data[4*i:], float32(i+1))
				}
				require.NoError(t, w.AddTensor("rope_freqs.weight", quant.F32, []uint64{8}, data))
			}
			path := filepath.Join(t.TempDir(), "m.gguf")
			require.NoError(t, w.WriteFile(path))
			m, err := Load(path, Options{Threads: 1})
			if c.wantErr != nil {
				require.ErrorIs(t, err, c.wantErr)
				return
			}
			require.NoError(t, err)
			defer m.Close()
			c.check(t, m.rope.ropeParams)
		})
	}
}

func putF32(b []byte, f float32) {
	u := math.Float32bits(f)
	b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
}

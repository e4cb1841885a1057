package placement

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/node/hw"
)

const gb = 1 << 30

func TestEstimateMemory(t *testing.T) {
	// stories260K: 5 layers, 4 KV heads of 8, trained on 2048 tokens.
	d, err := readDims("../../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	assert.Equal(t, ggufDims{Layers: 5, HeadsKV: 4, KeyLen: 8, ValLen: 8, TrainCtx: 2048}, d)
	tests := []struct {
		name    string
		weights uint64
		d       ggufDims
		ctx     int
		kv      uint64
		ctxUsed int
	}{
		{"default context, capped at the trained one", 1 << 20, d, 0, 2 * 5 * 4 * 16 * 2048, 2048},
		{"named context", 1 << 20, d, 8192, 2 * 5 * 4 * 16 * 8192, 8192},
		// A Llama-3-8B-like model: 32 layers, 8 KV heads of 128, at 8192.
		{"8B at 8k", 4920 << 20, ggufDims{Layers: 32, HeadsKV: 8, KeyLen: 128, ValLen: 128, TrainCtx: 8192}, 8192, 1 << 30, 8192},
		// A Gemma-3-27B-like model at 32k: 10 global layers hold every
		// position, 52 windowed ones a window of 1024 and the slack.
		{"windowed layers", 16e9, ggufDims{Layers: 62, HeadsKV: 16, KeyLen: 128, ValLen: 128, TrainCtx: 131072, Windowed: 52, Window: 1016}, 32768,
			2 * 16 * 256 * (10*32768 + 52*(1016+windowSlack)), 32768},
		// A window longer than the context: every position, as a global layer.
		{"window beyond the context", 1 << 20, ggufDims{Layers: 4, HeadsKV: 2, KeyLen: 8, ValLen: 8, Windowed: 2, Window: 4096}, 1024, 2 * 4 * 2 * 16 * 1024, 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := estimateMemory(tt.weights, tt.d, tt.ctx)
			assert.Equal(t, tt.kv, e.KV)
			assert.Equal(t, tt.ctxUsed, e.Ctx)
			assert.Equal(t, uint64(marginFixed)+(tt.weights+tt.kv)/10, e.Margin)
			// An f32 KV cache: twice the cache, its margin with it.
			f := e.WithF32KV()
			assert.Equal(t, 2*tt.kv, f.KV)
			assert.Equal(t, uint64(marginFixed)+(tt.weights+2*tt.kv)/10, f.Margin)
			assert.Equal(t, tt.weights+tt.kv+e.Margin, e.Total())
			// Four slots: four caches, their margin with them.
			s4 := e.WithSlots(4)
			assert.Equal(t, 4*tt.kv, s4.KV)
			assert.Equal(t, uint64(marginFixed)+(tt.weights+4*tt.kv)/10, s4.Margin)
			assert.Equal(t, e, e.WithSlots(1))
			assert.Equal(t, e, e.WithSlots(0))
		})
	}
	// The windowed layers are read as the engine runs the file.
	for _, tc := range []struct {
		arch                     string
		layers, window           int
		wantWindowed, wantWindow uint64
		what                     string
	}{
		{"gemma3", 12, 512, 10, 512, "five of every six layers"},
		{"gpt-oss", 7, 128, 4, 128, "every other layer from the first"},
		{"llama", 4, 0, 0, 0, "none"},
	} {
		cfg := synth.DefaultConfig()
		cfg.Arch, cfg.Layers, cfg.SlidingWindow = tc.arch, tc.layers, tc.window
		if tc.arch == "gpt-oss" {
			cfg.Experts, cfg.ExpertsUsed = 4, 2
		}
		path := filepath.Join(t.TempDir(), tc.arch+".gguf")
		require.NoError(t, synth.Write(path, cfg))
		gd, err := readDims(path)
		require.NoError(t, err)
		assert.Equal(t, tc.wantWindowed, gd.Windowed, "%s: %s", tc.arch, tc.what)
		assert.Equal(t, tc.wantWindow, gd.Window, tc.arch)
	}

	// A hostile header's dimensions saturate the estimate, never wrap
	// around to something that fits (2^32 layers times 2^32 KV heads was 0).
	for _, hd := range []ggufDims{
		{Layers: 1 << 32, HeadsKV: 1 << 32, KeyLen: 8, ValLen: 8},
		{Layers: 1, HeadsKV: 1, KeyLen: math.MaxUint64, ValLen: 1},
		{Layers: math.MaxUint64, HeadsKV: math.MaxUint64, KeyLen: math.MaxUint64, ValLen: math.MaxUint64},
		{Layers: 1 << 20, HeadsKV: 1 << 20, KeyLen: 1 << 20, ValLen: 1 << 20},
	} {
		e := estimateMemory(1<<30, hd, 1<<20)
		assert.GreaterOrEqual(t, e.KV, uint64(1)<<50, "%+v", hd)
		for _, x := range []MemEstimate{e, e.WithF32KV(), e.WithSlots(255), e.WithF32KV().WithSlots(255)} {
			assert.GreaterOrEqual(t, x.Total(), x.KV, "%+v", hd)
			assert.GreaterOrEqual(t, x.Total(), uint64(1)<<50, "%+v", hd)
		}
	}
	// A hostile header's cache times many slots saturates, never wraps
	// around to something that fits.
	huge := MemEstimate{KV: math.MaxUint64 / 8, Exact: true}.WithSlots(255)
	assert.GreaterOrEqual(t, huge.KV, uint64(math.MaxUint64/8))
	assert.GreaterOrEqual(t, huge.Total(), huge.KV)
}

// gpusFrom parses a recorded nvidia-smi or rocm-smi output.
func gpusFrom(t *testing.T, file string) []fsm.GPU {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "hw", "testdata", file))
	require.NoError(t, err)
	parse := hw.ParseNvidiaSMI
	if filepath.Ext(file) == ".json" {
		parse = hw.ParseROCmSMI
	}
	gs, err := parse(b)
	require.NoError(t, err)
	var out []fsm.GPU
	for _, g := range gs {
		out = append(out, fsm.GPU{Vendor: g.Vendor, Name: g.Name, Index: g.Index, VRAMTotal: g.VRAMTotal, VRAMFree: g.VRAMFree})
	}
	return out
}

func TestPlaceGPU(t *testing.T) {
	box := hiveGPUs{NodeID: "id-box", Name: "gpu-box", GPUs: gpusFrom(t, "nvidia-smi-busy.csv")} // 7.8 GiB free on 0, 312 MiB on 1
	big := hiveGPUs{NodeID: "id-big", Name: "big", GPUs: gpusFrom(t, "nvidia-smi.csv")}          // 23.7 and 11.6 GiB free
	amd := hiveGPUs{NodeID: "id-amd", Name: "amd", GPUs: gpusFrom(t, "rocm-smi-busy.json")}      // 287 MiB on 0, 15.8 GiB on 1
	tests := []struct {
		name  string
		need  uint64
		hives []hiveGPUs
		want  Placement
		err   string
	}{
		{"fits the free GPU, not the full one", 2 * gb, []hiveGPUs{box}, Placement{NodeID: "id-box", Name: "gpu-box", GPUs: []int{0}, Free: 7987 << 20}, ""},
		{"most free GPU in the cluster", 2 * gb, []hiveGPUs{box, big}, Placement{NodeID: "id-big", Name: "big", GPUs: []int{0}, Free: 24245 << 20}, ""},
		{"the AMD card with room", 10 * gb, []hiveGPUs{box, amd}, Placement{NodeID: "id-amd", Name: "amd", GPUs: []int{1}, Free: 17000000000}, ""},
		{"split over a hive's GPUs", 30 * gb, []hiveGPUs{big}, Placement{NodeID: "id-big", Name: "big", GPUs: []int{0, 1}, Free: (24245 + 11918) << 20}, ""},
		{"too big", 91 * gb / 10, []hiveGPUs{box}, Placement{}, "needs 9.1 GiB VRAM, largest free is 7.8 GiB on gpu-box:0"},
		{"no GPU anywhere", gb, nil, Placement{}, "no hive reports a GPU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := placeGPU(tt.need, tt.hives)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, p)
		})
	}
	require.NoError(t, checkGPUs(7*gb, box, []int{0}))
	require.ErrorContains(t, checkGPUs(gb, box, []int{1}), "needs 1.0 GiB VRAM, GPU 1 on gpu-box has 312 MiB free")
	require.ErrorContains(t, checkGPUs(gb, box, []int{3}), "gpu-box has no GPU 3")
}

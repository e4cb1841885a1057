package placement

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/synth"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		units   int
		weights []uint64
		want    [][2]int
	}{
		{"even", 8, []uint64{0, 0}, [][2]int{{0, 4}, {4, 8}}},
		{"odd", 5, []uint64{1, 1}, [][2]int{{0, 3}, {3, 5}}},
		{"by free RAM", 16, []uint64{3 << 30, 1 << 30}, [][2]int{{0, 12}, {12, 16}}},
		{"each at least one", 4, []uint64{100, 1, 1}, [][2]int{{0, 2}, {2, 3}, {3, 4}}},
		{"one per unit", 3, []uint64{1, 1, 1}, [][2]int{{0, 1}, {1, 2}, {2, 3}}},
		// Rounding each share on its own left the last part (the hive
		// with the least free RAM) what the others did not take: 3, 3, 4
		// here, and 3, 3, 3, 1 below.
		{"least free gets no more", 10, []uint64{10, 10, 9}, [][2]int{{0, 4}, {4, 7}, {7, 10}}},
		{"even over four", 10, []uint64{1, 1, 1, 1}, [][2]int{{0, 3}, {3, 6}, {6, 8}, {8, 10}}},
		{"many small shares", 10, []uint64{1, 1, 1, 1, 1, 1, 1}, [][2]int{{0, 2}, {2, 4}, {4, 6}, {6, 7}, {7, 8}, {8, 9}, {9, 10}}},
		{"raised to one", 10, []uint64{1000, 1000, 1, 1}, [][2]int{{0, 4}, {4, 8}, {8, 9}, {9, 10}}},
	} {
		got, err := Split(tc.units, tc.weights)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, got, tc.name)
	}
	_, err := Split(2, []uint64{1, 1, 1})
	require.Error(t, err, "more parts than units")
	_, err = Split(8, []uint64{1})
	require.Error(t, err, "one part is no split")
}

func TestPlanSplit(t *testing.T) {
	const gb = 1 << 30
	est := MemEstimate{Weights: 7 * gb, KV: 1 * gb, Margin: marginFixed + 8*gb/10, Exact: true} // 9.3 GiB
	nodes := []fsm.Node{
		{ID: "a", Name: "a", Capabilities: &fsm.Capabilities{RAMFree: 5 * gb}},
		{ID: "b", Name: "b", Capabilities: &fsm.Capabilities{RAMFree: 4 * gb}},
		{ID: "c", Name: "c", Capabilities: &fsm.Capabilities{RAMFree: 3 * gb}},
		{ID: "d", Name: "d", Capabilities: &fsm.Capabilities{RAMFree: 64 * gb}},
	}
	alive := map[string]bool{"a": true, "b": true, "c": true}
	hives := HivesByRAM(nodes, alive)
	require.Equal(t, []string{"a", "b", "c"}, []string{hives[0].Name, hives[1].Name, hives[2].Name}, "alive only, most free first")

	// No single hive holds 9.3 GiB; a and b (9 GiB) do not with a margin
	// each; a, b and c do.
	got, err := PlanSplit(est, hives, 8, 32)
	require.NoError(t, err)
	require.Len(t, got, 3)

	// A hive that holds it alone: no split.
	alive["d"] = true
	got, err = PlanSplit(est, HivesByRAM(nodes, alive), 8, 32)
	require.NoError(t, err)
	require.Nil(t, got)

	// Too little RAM anywhere, or a shard limit: refused, saying why.
	_, err = PlanSplit(est, hives[:2], 8, 32)
	require.ErrorIs(t, err, ErrNoFit)
	_, err = PlanSplit(est, hives, 2, 32)
	require.ErrorIs(t, err, ErrNoFit)

	// No hive reports its RAM: left to the spawn.
	got, err = PlanSplit(est, []HiveRAM{{NodeID: "x"}, {NodeID: "y"}}, 8, 32)
	require.NoError(t, err)
	require.Nil(t, got)

	// Whole layers: a hive's part is the layers Split gives it, which
	// may be more than its proportion of the free RAM, and there is at
	// most one hive per layer.
	for _, tc := range []struct {
		name   string
		free   []uint64
		layers int
		want   int // hives; 0: ErrNoFit
	}{
		{"proportions fit", []uint64{6 * gb, 5 * gb, 3 * gb}, 32, 2},
		{"a layer more than its share", []uint64{6 * gb, 5 * gb, 3 * gb}, 3, 0},
		{"more hives than layers", []uint64{4 * gb, 4 * gb, 4 * gb, 4 * gb}, 2, 0},
		{"one hive per layer", []uint64{4 * gb, 4 * gb, 4 * gb, 4 * gb}, 3, 3},
	} {
		var hives []HiveRAM
		for i, f := range tc.free {
			hives = append(hives, HiveRAM{NodeID: string(rune('a' + i)), Name: string(rune('a' + i)), Free: f})
		}
		got, err := PlanSplit(est, hives, 8, tc.layers)
		if tc.want == 0 {
			require.ErrorIs(t, err, ErrNoFit, tc.name)
			continue
		}
		require.NoError(t, err, tc.name)
		require.Len(t, got, tc.want, tc.name)
	}
}

// TestModelDimsExperts: a group's units come from the GGUF, and a mixture
// of experts says so (it splits by layers only).
func TestModelDimsExperts(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		arch    string
		experts int
	}{{"llama", 0}, {"qwen3moe", 8}, {"llama", 4}} {
		cfg := synth.DefaultConfig()
		cfg.Arch, cfg.Layers, cfg.KVHeads, cfg.Experts = tc.arch, 3, 2, tc.experts
		if tc.experts > 0 {
			cfg.ExpertsUsed = 2
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%d.gguf", tc.arch, tc.experts))
		require.NoError(t, synth.Write(path, cfg))
		d, err := ModelDims(catalog.Entry{ID: "m", Path: path})
		require.NoError(t, err)
		require.Equal(t, Dims{Layers: 3, KVHeads: 2, Experts: tc.experts}, d)
	}
}

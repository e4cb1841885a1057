package placement

import (
	"errors"
	"fmt"
	"sort"

	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
)

// Sharded groups: one model split over several hives, by layers
// (pipeline) or by KV heads (tensor). The parts are sized to each hive's
// free RAM; a spawn without hives is split only when no single hive holds
// the whole model.

// ErrNoFit: no set of alive hives holds the model, split or not.
var ErrNoFit = errors.New("placement: no hives hold the model")

// Dims are the model dimensions a split needs.
type Dims struct {
	Layers, KVHeads int
	// Experts is the model's expert count (0: dense). A mixture of
	// experts splits by layers only.
	Experts int
}

// ModelDims reads the layers and KV heads of a model in this hive's
// catalog.
func ModelDims(e modelcat.Entry) (Dims, error) {
	d, err := readDims(e.Path)
	if err != nil {
		return Dims{}, err
	}
	if d.Layers == 0 || d.HeadsKV == 0 {
		return Dims{}, fmt.Errorf("%s: no block_count or head_count_kv in its GGUF", e.ID)
	}
	return Dims{Layers: int(d.Layers), KVHeads: int(d.HeadsKV), Experts: int(min(d.Experts, 1<<20))}, nil
}

// Split divides units (layers or KV heads) into len(weights) parts, each
// at least 1, in proportion to the weights (the hives' free RAM); all
// weights 0 (unknown) split evenly. It returns the parts' [lo, hi)
// bounds in order.
func Split(units int, weights []uint64) ([][2]int, error) {
	n := len(weights)
	if n < 2 || n > units {
		return nil, fmt.Errorf("cannot split %d into %d parts (at most one part per unit)", units, n)
	}
	var total float64
	for _, w := range weights {
		total += float64(w)
	}
	// Each part gets its quota rounded down (at least 1); the units left
	// go one each to the parts with the largest remainders, and a surplus
	// (from parts raised to 1) comes off those furthest above their quota:
	// no part ends more than a unit from its quota, whatever its place.
	quota := make([]float64, n)
	counts := make([]int, n)
	sum := 0
	for i := range counts {
		quota[i] = float64(units) / float64(n)
		if total > 0 {
			quota[i] = float64(units) * float64(weights[i]) / total
		}
		counts[i] = max(1, int(quota[i]))
		sum += counts[i]
	}
	for ; sum < units; sum++ {
		best := 0
		for i := range counts {
			if quota[i]-float64(counts[i]) > quota[best]-float64(counts[best]) {
				best = i
			}
		}
		counts[best]++
	}
	for ; sum > units; sum-- {
		best := -1
		for i := range counts {
			if counts[i] > 1 && (best < 0 || quota[i]-float64(counts[i]) < quota[best]-float64(counts[best])) {
				best = i
			}
		}
		counts[best]--
	}
	out := make([][2]int, n)
	lo := 0
	for i, c := range counts {
		out[i] = [2]int{lo, lo + c}
		lo += c
	}
	return out, nil
}

// HiveRAM is an alive hive and the RAM it reported free (0: unknown).
type HiveRAM struct {
	NodeID, Name string
	Free         uint64
}

// HivesByRAM lists alive hives (ids in alive) with their free RAM, most
// free first, ties by name.
func HivesByRAM(nodes []fsm.Node, alive map[string]bool) []HiveRAM {
	var out []HiveRAM
	for _, n := range nodes {
		if !alive[n.ID] {
			continue
		}
		h := HiveRAM{NodeID: n.ID, Name: n.Name}
		if n.Capabilities != nil {
			h.Free = n.Capabilities.RAMFree
		}
		out = append(out, h)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Free != out[j].Free {
			return out[i].Free > out[j].Free
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Part is what one part of a split model needs on its hive: k of the
// model's units (layers or KV heads) of the weights and KV cache, with the
// margin on them, plus the fixed margin every worker process needs whole.
func (m MemEstimate) Part(k, units int) uint64 {
	if units <= 0 || k >= units {
		return m.Total()
	}
	body := float64(m.Weights+m.KV) * (100 + marginPercent) / 100
	return uint64(body*float64(k)/float64(units)) + marginFixed
}

// PlanSplit decides whether a cpu worker of estimate est must be split and
// over which hives (sorted as HivesByRAM sorts them). It returns nil when
// one hive holds it (or when no hive reports its RAM: the spawn then
// stays unsplit, as before), else the fewest hives whose free RAM holds
// each its part of the weights and KV cache (the units Split gives it of
// the model's units: its layers for a pipeline, its KV heads for a tensor
// group), with the fixed margin on every one of them; at most maxShards of
// them and one per unit. ErrNoFit says what was missing.
func PlanSplit(est MemEstimate, hives []HiveRAM, maxShards, units int) ([]HiveRAM, error) {
	if len(hives) == 0 || hives[0].Free == 0 || est.Total() <= hives[0].Free {
		return nil, nil
	}
	most := min(len(hives), maxShards, units)
	for n := 2; n <= most; n++ {
		pick := hives[:n]
		// Each hive's share is the whole units Split gives it, not its
		// proportion of the free RAM: a hive may get a unit more.
		weights := make([]uint64, n)
		for i, h := range pick {
			weights[i] = h.Free
		}
		parts, err := Split(units, weights)
		if err != nil {
			return nil, err
		}
		fits := true
		for i, h := range pick {
			if h.Free == 0 || est.Part(parts[i][1]-parts[i][0], units) > h.Free {
				fits = false
				break
			}
		}
		if fits {
			return append([]HiveRAM(nil), pick...), nil
		}
	}
	var free uint64
	for _, h := range hives[:max(0, most)] {
		free += h.Free
	}
	return nil, fmt.Errorf("%w: needs %s RAM (estimate: %s) in %d parts (layers or KV heads), the %d largest hives have %s free together",
		ErrNoFit, gib(est.Total()), est, units, max(0, most), gib(free))
}

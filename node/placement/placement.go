// Package placement sizes engine spawns and picks where they go: a
// worker's memory is estimated from the model's GGUF (weights + KV cache
// for the context + a margin) and compared with the free VRAM (or RAM) the
// hives reported in their capabilities. See node/DESIGN.md, "GPU
// placement".
package placement

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strings"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/node/jobs"
)

// GPU-aware placement of engine workers: a spawn's memory is estimated
// from the model's GGUF (weights + KV cache for the context + a margin)
// and compared with the free VRAM the hives reported (capabilities). A
// spawn without a hive picks the hive and GPU(s) that fit; a spawn on a
// named hive checks (or picks) its GPUs. Free VRAM is what the hive last
// detected: it is detected again after every GPU spawn.

const (
	// engineDefaultCtx is the context an engine gets when the spawn names
	// none (llama-server's default -c), for the estimate.
	engineDefaultCtx = 4096
	// kvBytesPerValue: engines keep the KV cache in f16 by default.
	kvBytesPerValue = 2
	// marginFixed covers what every GPU process holds besides weights and
	// KV cache: the CUDA/ROCm context and the compute buffers (a few
	// hundred MiB on llama.cpp for common models).
	marginFixed = 512 << 20
	// marginPercent of weights + KV covers per-layer buffers and
	// fragmentation.
	marginPercent = 10
)

// MemEstimate is what a worker is expected to need in (V)RAM.
type MemEstimate struct {
	Weights uint64 `json:"weights"`
	KV      uint64 `json:"kv_cache"`
	Margin  uint64 `json:"margin"`
	Ctx     int    `json:"ctx"`
	// Exact is false when only the model's size was known (the KV cache
	// is then not counted).
	Exact bool `json:"exact"`
}

// Total is the whole estimate.
func (m MemEstimate) Total() uint64 { return m.Weights + m.KV + m.Margin }

// WithF32KV is m for a worker that keeps its KV cache in f32 (the cpu
// worker's --kv-cache f32): twice the cache, and the margin on it.
func (m MemEstimate) WithF32KV() MemEstimate {
	m.Margin += m.KV * marginPercent / 100
	m.KV *= 2
	return m
}

// WithSlots is m for a worker with slots concurrent generations, each
// with its own KV cache at the context (0 or 1: m).
func (m MemEstimate) WithSlots(slots int) MemEstimate {
	if slots <= 1 {
		return m
	}
	n := uint64(slots - 1)
	if m.KV > math.MaxUint64/4/n {
		// A hostile header's cache: saturate rather than wrap around.
		m.KV, m.Margin = math.MaxUint64/4, math.MaxUint64/4
		return m
	}
	extra := m.KV * n
	m.KV += extra
	m.Margin += extra * marginPercent / 100
	return m
}

func (m MemEstimate) String() string {
	if !m.Exact {
		return fmt.Sprintf("%s (weights %s + margin %s; KV cache not counted: the model's GGUF is not on this node)",
			gib(m.Total()), gib(m.Weights), gib(m.Margin))
	}
	return fmt.Sprintf("%s (weights %s + KV cache %s for %d tokens + margin %s)", gib(m.Total()), gib(m.Weights), gib(m.KV), m.Ctx, gib(m.Margin))
}

// gib formats bytes as GiB with one decimal ("9.1 GiB"), MiB below 1 GiB.
func gib(b uint64) string {
	if b < 1<<30 {
		return fmt.Sprintf("%d MiB", (b+(1<<20)-1)>>20)
	}
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

// ggufDims are the model dimensions the KV cache depends on.
type ggufDims struct {
	Layers, HeadsKV, KeyLen, ValLen, TrainCtx uint64
	Experts                                   uint64 // expert_count: 0 for a dense model
	// Windowed of the layers attend through a sliding window of Window
	// positions (gemma2, gemma3, gpt-oss; engine.SlidingWindow): their caches hold
	// at most about the window.
	Windowed, Window uint64
}

// windowSlack is what a windowed layer's cache holds beyond its window:
// llama.cpp keeps n_swa + n_ubatch (512 by default) positions, rbee's
// engine the window, a prompt chunk (128) and a tile (32).
const windowSlack = 512 + 32

// readDims reads the KV-relevant dimensions of a GGUF model.
func readDims(path string) (ggufDims, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return ggufDims{}, err
	}
	defer f.Close()
	arch, ok := f.String("general.architecture")
	if !ok {
		return ggufDims{}, fmt.Errorf("%s: no general.architecture", path)
	}
	u := func(k string) uint64 { v, _ := f.Uint(arch + "." + k); return v }
	d := ggufDims{Layers: u("block_count"), HeadsKV: u("attention.head_count_kv"), KeyLen: u("attention.key_length"),
		ValLen: u("attention.value_length"), TrainCtx: u("context_length"), Experts: u("expert_count")}
	heads, embd := u("attention.head_count"), u("embedding_length")
	if d.HeadsKV == 0 {
		d.HeadsKV = heads
	}
	if d.KeyLen == 0 && heads > 0 {
		d.KeyLen = embd / heads
	}
	if d.ValLen == 0 {
		d.ValLen = d.KeyLen
	}
	windowed, window, err := engine.SlidingWindow(f)
	if err == nil && windowed > 0 && uint64(windowed) <= d.Layers {
		d.Windowed, d.Window = uint64(windowed), uint64(window)
	}
	return d, nil
}

// estimateMemory estimates a worker of a model of weights bytes with dims
// for ctx tokens (0: the engine's default, at most the trained context).
func estimateMemory(weights uint64, d ggufDims, ctx int) MemEstimate {
	if ctx <= 0 {
		ctx = engineDefaultCtx
		if d.TrainCtx > 0 && d.TrainCtx < uint64(ctx) {
			ctx = int(d.TrainCtx)
		}
	}
	// A hostile header's dimensions (any uint64) saturate the product
	// rather than wrap around to something that fits.
	kv := uint64(kvBytesPerValue)
	positions := mulSat(d.Layers-min(d.Windowed, d.Layers), uint64(ctx))
	positions = min(positions+mulSat(d.Windowed, min(uint64(ctx), d.Window+windowSlack)), satBytes)
	for _, f := range []uint64{d.HeadsKV, min(d.KeyLen, satBytes) + min(d.ValLen, satBytes), positions} {
		kv = mulSat(kv, f)
	}
	margin := uint64(satBytes)
	if kv < satBytes && weights < satBytes {
		margin = marginFixed + (weights+kv)*marginPercent/100
	}
	return MemEstimate{Weights: weights, KV: kv, Margin: margin, Ctx: ctx, Exact: true}
}

// satBytes is where estimates saturate: far beyond any machine, and low
// enough that sums and the f32 and slot multiples of it do not wrap.
const satBytes = math.MaxUint64 / 1024

// mulSat is a*b, or satBytes when that is more.
func mulSat(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 || lo > satBytes {
		return satBytes
	}
	return lo
}

// sizeOnlyEstimate is the estimate when only a model's size is known.
func sizeOnlyEstimate(size uint64) MemEstimate {
	return MemEstimate{Weights: size, Margin: marginFixed + size*marginPercent/100}
}

// Estimate estimates a worker of a model in this node's catalog for ctx
// tokens (0: the engine's default).
func Estimate(e modelcat.Entry, ctx int) MemEstimate {
	d, err := readDims(e.Path)
	if err != nil {
		return sizeOnlyEstimate(uint64(e.Size))
	}
	return estimateMemory(uint64(e.Size), d, ctx)
}

// hiveGPUs is one hive's GPUs as the registry has them.
type hiveGPUs struct {
	NodeID, Name string
	GPUs         []fsm.GPU
}

// Placement is where a worker goes: a hive and its GPUs, with the free
// VRAM they reported.
type Placement struct {
	NodeID, Name string
	GPUs         []int
	Free         uint64
}

// placeGPU picks, among hives, the GPU with the most free VRAM that holds
// need; when none does alone, the hive whose GPUs together hold it (the
// engine splits the layers), most free first. The refusal names the
// largest free VRAM it saw.
func placeGPU(need uint64, hives []hiveGPUs) (Placement, error) {
	var best, bestAll Placement
	var largest Placement
	for _, h := range hives {
		var sum uint64
		var all []int
		for _, g := range h.GPUs {
			sum += g.VRAMFree
			all = append(all, g.Index)
			if g.VRAMFree > largest.Free || largest.Name == "" {
				largest = Placement{NodeID: h.NodeID, Name: h.Name, GPUs: []int{g.Index}, Free: g.VRAMFree}
			}
			if g.VRAMFree >= need && g.VRAMFree > best.Free {
				best = Placement{NodeID: h.NodeID, Name: h.Name, GPUs: []int{g.Index}, Free: g.VRAMFree}
			}
		}
		if len(all) > 1 && sum >= need && sum > bestAll.Free {
			bestAll = Placement{NodeID: h.NodeID, Name: h.Name, GPUs: all, Free: sum}
		}
	}
	switch {
	case best.Name != "":
		return best, nil
	case bestAll.Name != "":
		return bestAll, nil
	case largest.Name == "":
		return Placement{}, fmt.Errorf("needs %s VRAM, and no hive reports a GPU (`rbee hive refresh-capabilities NAME` detects them again)", gib(need))
	}
	return Placement{}, fmt.Errorf("needs %s VRAM, largest free is %s on %s:%d", gib(need), gib(largest.Free), largest.Name, largest.GPUs[0])
}

// checkGPUs checks that the named GPUs of one hive hold need together.
func checkGPUs(need uint64, h hiveGPUs, want []int) error {
	var free uint64
	for _, i := range want {
		found := false
		for _, g := range h.GPUs {
			if g.Index == i {
				free += g.VRAMFree
				found = true
			}
		}
		if !found {
			have := make([]string, 0, len(h.GPUs))
			for _, g := range h.GPUs {
				have = append(have, fmt.Sprintf("%d (%s, %s free)", g.Index, g.Name, gib(g.VRAMFree)))
			}
			return fmt.Errorf("%s has no GPU %d (it reports %s)", h.Name, i, orNoneList(have))
		}
	}
	if free < need {
		return fmt.Errorf("needs %s VRAM, GPU %s on %s has %s free", gib(need), joinInts(want), h.Name, gib(free))
	}
	return nil
}

func orNoneList(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

// Cluster is what placement reads of the registry.
type Cluster interface {
	Node(id string) (fsm.Node, bool)
	Nodes() []fsm.Node
	Models() []fsm.ModelHolding
	Binaries() []fsm.BinaryHolding
}

// Models is this hive's model catalog as placement reads it.
type Models interface {
	// Get finds a model in the catalog by id or reference.
	Get(ref string) (modelcat.Entry, error)
	// ResolveModel brings a model into the catalog (the bundled one is
	// always at hand).
	ResolveModel(ctx context.Context, em jobs.Emitter, ref string) (modelcat.Entry, error)
}

// Config configures a Placer.
type Config struct {
	// LocalID and LocalName are this node's.
	LocalID, LocalName string
	Cluster            Cluster
	Models             Models
}

// Placer places engine spawns. It holds no state of its own: free memory
// is what the registry last recorded. Safe for concurrent use.
type Placer struct{ cfg Config }

// New returns a placer.
func New(cfg Config) *Placer { return &Placer{cfg: cfg} }

// gpuHives lists the alive hives that report GPUs and can run typ (hold a
// binary of it), sorted by name.
func (p *Placer) gpuHives(typ string) []hiveGPUs {
	has := map[string]bool{}
	for _, b := range p.cfg.Cluster.Binaries() {
		if b.Type == typ {
			has[b.NodeID] = true
		}
	}
	var out []hiveGPUs
	for _, rn := range p.cfg.Cluster.Nodes() {
		if rn.State != fsm.NodeAlive || rn.Capabilities == nil || len(rn.Capabilities.GPUs) == 0 {
			continue
		}
		if !has[rn.ID] {
			continue
		}
		out = append(out, hiveGPUs{NodeID: rn.ID, Name: rn.Name, GPUs: slices.Clone(rn.Capabilities.GPUs)})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// ownGPUs is this hive's GPUs as the registry has them (ok false when its
// capabilities are not stored yet).
func (p *Placer) ownGPUs() (hiveGPUs, bool) {
	rn, ok := p.cfg.Cluster.Node(p.cfg.LocalID)
	if !ok || rn.Capabilities == nil {
		return hiveGPUs{}, false
	}
	return hiveGPUs{NodeID: rn.ID, Name: p.cfg.LocalName, GPUs: slices.Clone(rn.Capabilities.GPUs)}, true
}

// estimateRef estimates a spawn for a model reference on the node that
// places it: from its own catalog (or the bundled model) when it can,
// else from the size a hive recorded in the registry.
func (p *Placer) estimateRef(ctx context.Context, em jobs.Emitter, ref string, ctxLen int) (MemEstimate, error) {
	if e, err := p.cfg.Models.Get(ref); err == nil {
		return Estimate(e, ctxLen), nil
	}
	if r, err := modelcat.ParseRef(ref); err == nil && r.Source == modelcat.SourceBuiltin {
		e, err := p.cfg.Models.ResolveModel(ctx, em, ref)
		if err != nil {
			return MemEstimate{}, err
		}
		return Estimate(e, ctxLen), nil
	}
	for _, h := range p.cfg.Cluster.Models() {
		if h.ModelID == ref && h.Size > 0 {
			return sizeOnlyEstimate(h.Size), nil
		}
	}
	return MemEstimate{}, jobs.Errorf(jobs.CodeBadRequest,
		"cannot place %s: no hive has it yet, so its size is unknown; download it first (`rbee model download --hive H %s`) or name the hive (--hive)", ref, ref)
}

// Place places an engine spawn of type typ for the model ref that names
// no hive: it picks the hive and GPU(s) that fit (the named gpus when
// given, on the first hive where they do). ok is false when no hive with
// such an engine reports a GPU: the spawn stays where it was asked, and
// the engine decides. Refusals are jobs errors (unavailable) that say
// what was missing.
func (p *Placer) Place(ctx context.Context, em jobs.Emitter, typ, ref string, ctxLen int, gpus []int) (pl Placement, ok bool, err error) {
	hives := p.gpuHives(typ)
	if len(hives) == 0 {
		em.Narrate("scheduler", "place", "no hive with a %s engine reports a GPU: starting it on %s", typ, p.cfg.LocalName)
		return Placement{}, false, nil
	}
	est, err := p.estimateRef(ctx, em, ref, ctxLen)
	if err != nil {
		return Placement{}, false, err
	}
	if len(gpus) > 0 {
		var errs []string
		for _, h := range hives {
			if err := checkGPUs(est.Total(), h, gpus); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			pl = Placement{NodeID: h.NodeID, Name: h.Name, GPUs: gpus}
			for _, g := range h.GPUs {
				if slices.Contains(gpus, g.Index) {
					pl.Free += g.VRAMFree
				}
			}
			break
		}
		if pl.Name == "" {
			return Placement{}, false, jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %s; needs %s", strings.Join(errs, "; "), est)
		}
	} else if pl, err = placeGPU(est.Total(), hives); err != nil {
		return Placement{}, false, jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %v (estimate: %s)", err, est)
	}
	em.Narrate("scheduler", "place", "%s needs %s: placing it on %s, GPU %s (%s free)", ref, est, pl.Name, joinInts(pl.GPUs), gib(pl.Free))
	return pl, true, nil
}

// FitGPUs checks that an engine spawn fits this hive's GPUs: the named
// ones, or else the one (or all) that holds it, which it then sets in
// r.GPUs. A hive that reports no GPU leaves the choice to the engine.
func (p *Placer) FitGPUs(em jobs.Emitter, r *api.WorkerSpawnRequest, model modelcat.Entry) error {
	own, ok := p.ownGPUs()
	if !ok || len(own.GPUs) == 0 {
		return nil
	}
	est := Estimate(model, r.Ctx)
	if len(r.GPUs) > 0 {
		if err := checkGPUs(est.Total(), own, r.GPUs); err != nil {
			return jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %v (estimate: %s)", err, est)
		}
		return nil
	}
	pl, err := placeGPU(est.Total(), []hiveGPUs{own})
	if err != nil {
		return jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %v (estimate: %s)", err, est)
	}
	em.Narrate("scheduler", "place", "%s needs %s: GPU %s of %s (%s free)", model.ID, est, joinInts(pl.GPUs), p.cfg.LocalName, gib(pl.Free))
	r.GPUs = pl.GPUs
	return nil
}

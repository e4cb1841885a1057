package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
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
}

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
		ValLen: u("attention.value_length"), TrainCtx: u("context_length")}
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
	kv := kvBytesPerValue * d.Layers * d.HeadsKV * (d.KeyLen + d.ValLen) * uint64(ctx)
	return MemEstimate{Weights: weights, KV: kv, Margin: marginFixed + (weights+kv)*marginPercent/100, Ctx: ctx, Exact: true}
}

// sizeOnlyEstimate is the estimate when only a model's size is known.
func sizeOnlyEstimate(size uint64) MemEstimate {
	return MemEstimate{Weights: size, Margin: marginFixed + size*marginPercent/100}
}

// estimateLocal estimates a worker of a model in this node's catalog.
func estimateLocal(e modelcat.Entry, ctx int) MemEstimate {
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

// placement is where a worker goes.
type placement struct {
	NodeID, Name string
	GPUs         []int
	Free         uint64
}

// placeGPU picks, among hives, the GPU with the most free VRAM that holds
// need; when none does alone, the hive whose GPUs together hold it (the
// engine splits the layers), most free first. The refusal names the
// largest free VRAM it saw.
func placeGPU(need uint64, hives []hiveGPUs) (placement, error) {
	var best, bestAll placement
	var largest placement
	for _, h := range hives {
		var sum uint64
		var all []int
		for _, g := range h.GPUs {
			sum += g.VRAMFree
			all = append(all, g.Index)
			if g.VRAMFree > largest.Free || largest.Name == "" {
				largest = placement{NodeID: h.NodeID, Name: h.Name, GPUs: []int{g.Index}, Free: g.VRAMFree}
			}
			if g.VRAMFree >= need && g.VRAMFree > best.Free {
				best = placement{NodeID: h.NodeID, Name: h.Name, GPUs: []int{g.Index}, Free: g.VRAMFree}
			}
		}
		if len(all) > 1 && sum >= need && sum > bestAll.Free {
			bestAll = placement{NodeID: h.NodeID, Name: h.Name, GPUs: all, Free: sum}
		}
	}
	switch {
	case best.Name != "":
		return best, nil
	case bestAll.Name != "":
		return bestAll, nil
	case largest.Name == "":
		return placement{}, fmt.Errorf("needs %s VRAM, and no hive reports a GPU (`rbee hive refresh-capabilities NAME` detects them again)", gib(need))
	}
	return placement{}, fmt.Errorf("needs %s VRAM, largest free is %s on %s:%d", gib(need), gib(largest.Free), largest.Name, largest.GPUs[0])
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

// gpuHives lists the alive hives that report GPUs and can run typ (hold a
// binary of it), sorted by name.
func (n *Node) gpuHives(typ string) []hiveGPUs {
	has := map[string]bool{}
	for _, b := range n.reg.Binaries() {
		if b.Type == typ {
			has[b.NodeID] = true
		}
	}
	var out []hiveGPUs
	for _, rn := range n.reg.Nodes() {
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
func (n *Node) ownGPUs() (hiveGPUs, bool) {
	rn, ok := n.reg.Node(n.ID())
	if !ok || rn.Capabilities == nil {
		return hiveGPUs{}, false
	}
	return hiveGPUs{NodeID: rn.ID, Name: n.cfg.Name, GPUs: slices.Clone(rn.Capabilities.GPUs)}, true
}

// estimateRef estimates a spawn for a model reference on the node that
// places it: from its own catalog (or the bundled model) when it can,
// else from the size a hive recorded in the registry.
func (n *Node) estimateRef(ctx context.Context, em jobs.Emitter, ref string, ctxLen int) (MemEstimate, error) {
	if e, err := n.models.Get(ref); err == nil {
		return estimateLocal(e, ctxLen), nil
	}
	if r, err := modelcat.ParseRef(ref); err == nil && r.Source == modelcat.SourceBuiltin {
		e, err := n.hive.ResolveModel(ctx, em, ref)
		if err != nil {
			return MemEstimate{}, err
		}
		return estimateLocal(e, ctxLen), nil
	}
	for _, h := range n.reg.Models() {
		if h.ModelID == ref && h.Size > 0 {
			return sizeOnlyEstimate(h.Size), nil
		}
	}
	return MemEstimate{}, jobs.Errorf(jobs.CodeBadRequest,
		"cannot place %s: no hive has it yet, so its size is unknown; download it first (`rbee model download --hive H %s`) or name the hive (--hive)", ref, ref)
}

// refreshCapabilitiesSoon detects this node's hardware again (in the
// background) so that the next placement sees the VRAM a spawn took.
func (n *Node) refreshCapabilitiesSoon() {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		caps := DetectCapabilities(n.ctx)
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		defer cancel()
		if err := n.storeCapabilities(ctx, caps); err != nil {
			n.log.Debug("store capabilities after spawn", "err", err)
		}
	}()
}

// placeSpawn places an engine spawn that names no hive: it picks the hive
// and GPU(s) that fit and forwards the spawn there (forwarded true), or
// sets r.GPUs when this node is the pick. With no hive reporting a GPU the
// spawn stays here and the engine decides.
func (n *Node) placeSpawn(ctx context.Context, em jobs.Emitter, req Request, r *api.WorkerSpawnRequest, ref string) (forwarded bool, err error) {
	hives := n.gpuHives(r.Type)
	if len(hives) == 0 {
		em.Narrate("scheduler", "place", "no hive with a %s engine reports a GPU: starting it on %s", r.Type, n.cfg.Name)
		return false, nil
	}
	est, err := n.estimateRef(ctx, em, ref, r.Ctx)
	if err != nil {
		return false, err
	}
	var p placement
	if len(r.GPUs) > 0 {
		var errs []string
		for _, h := range hives {
			if err := checkGPUs(est.Total(), h, r.GPUs); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			p = placement{NodeID: h.NodeID, Name: h.Name, GPUs: r.GPUs}
			for _, g := range h.GPUs {
				if slices.Contains(r.GPUs, g.Index) {
					p.Free += g.VRAMFree
				}
			}
			break
		}
		if p.Name == "" {
			return false, jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %s; needs %s", strings.Join(errs, "; "), est)
		}
	} else if p, err = placeGPU(est.Total(), hives); err != nil {
		return false, jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %v (estimate: %s)", err, est)
	}
	em.Narrate("scheduler", "place", "%s needs %s: placing it on %s, GPU %s (%s free)", ref, est, p.Name, joinInts(p.GPUs), gib(p.Free))
	r.GPUs = p.GPUs
	if p.NodeID == n.ID() {
		return false, nil
	}
	target, err := n.resolveHive(p.NodeID)
	if err != nil {
		return false, err
	}
	var fields map[string]any
	if err := json.Unmarshal(req.Raw, &fields); err != nil {
		return false, jobs.Errorf(jobs.CodeBadRequest, "%s: %v", req.Operation, err)
	}
	fields["hive"], fields["gpus"] = p.Name, p.GPUs
	fwd := req
	fwd.Hive = p.Name
	if fwd.Raw, err = json.Marshal(fields); err != nil {
		return false, err
	}
	return true, n.forwardJob(ctx, target, fwd, em)
}

// fitLocalGPUs checks that an engine spawn fits this hive's GPUs: the
// named ones, or else the one (or all) that holds it, which it then sets
// in r.GPUs. A hive that reports no GPU leaves the choice to the engine.
func (n *Node) fitLocalGPUs(em jobs.Emitter, r *api.WorkerSpawnRequest, model modelcat.Entry) error {
	own, ok := n.ownGPUs()
	if !ok || len(own.GPUs) == 0 {
		return nil
	}
	est := estimateLocal(model, r.Ctx)
	if len(r.GPUs) > 0 {
		if err := checkGPUs(est.Total(), own, r.GPUs); err != nil {
			return jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %v (estimate: %s)", err, est)
		}
		return nil
	}
	p, err := placeGPU(est.Total(), []hiveGPUs{own})
	if err != nil {
		return jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %v (estimate: %s)", err, est)
	}
	em.Narrate("scheduler", "place", "%s needs %s: GPU %s of %s (%s free)", model.ID, est, joinInts(p.GPUs), n.cfg.Name, gib(p.Free))
	r.GPUs = p.GPUs
	return nil
}

// fitLocalRAM checks that an engine spawned on the CPU fits this hive's
// free RAM (as last detected).
func (n *Node) fitLocalRAM(em jobs.Emitter, r api.WorkerSpawnRequest, model modelcat.Entry) error {
	rn, ok := n.reg.Node(n.ID())
	if !ok || rn.Capabilities == nil || rn.Capabilities.RAMFree == 0 {
		return nil
	}
	est := estimateLocal(model, r.Ctx)
	if free := rn.Capabilities.RAMFree; est.Total() > free {
		return jobs.Errorf(jobs.CodeUnavailable, "spawn refused: needs %s RAM, %s has %s free (estimate: %s)", gib(est.Total()), n.cfg.Name, gib(free), est)
	}
	return nil
}

package node

import (
	"context"
	"fmt"
	"sync"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/humanize"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/hw"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/placement"
	"github.com/rbee-project/rbee/worker/process"
)

// The RAM a hive gives CPU workers is accounted, not only detected: the
// free RAM the OS reports lags a spawn (the model loads for seconds) and
// does not show mapped model files at all (their pages are reclaimable
// cache), and `--memory-limit` caps a share of the machine that the OS
// knows nothing of. So every CPU spawn is admitted for its estimate
// (weights, KV cache, margin), which is held as a claim until its process
// starts and then recorded in its process entry (process.RAM, kept across
// a node restart) until it exits. A model file counts once however many
// workers map it (they share its pages).
//
// Free RAM for a CPU spawn, and the free RAM the hive reports to the
// registry, is the least of
//   - what the OS reports available, less the claims of spawns still
//     starting (their memory is not in use yet), and
//   - the cap (`--memory-limit`, else the machine's total), less what the
//     running CPU workers and the claims were admitted for.
//
// GPU workers are placed by their VRAM and are not counted here.

// ramLedger holds the claims of CPU spawns in progress on this hive. Safe
// for concurrent use; admission checks and claims under one lock, so
// spawns at once cannot all take the same free RAM.
type ramLedger struct {
	mu     sync.Mutex
	next   int
	claims map[int]ramClaim
}

// ramClaim is one spawn's admitted RAM: its worker's id, the model file
// it maps and its estimate. Once the worker's process entry exists (it is
// recorded with its RAM as soon as it starts) the entry counts, not the
// claim.
type ramClaim struct {
	worker string
	model  string
	ram    process.RAM
}

// ramUse sums what running workers and claims were admitted for, a model
// file once (the largest share recorded for it: a shard maps a part).
func ramUse(infos []process.WorkerInfo, claims map[int]ramClaim) (running, claimed uint64, mapped map[string]bool) {
	weights := map[string]uint64{}
	started := map[string]bool{}
	for _, w := range infos {
		running += w.RAM.Rest
		weights[w.ModelPath] = max(weights[w.ModelPath], w.RAM.Weights)
		started[w.WorkerID] = true
	}
	for _, wt := range weights {
		running += wt
	}
	mapped = map[string]bool{}
	for path, wt := range weights {
		mapped[path] = wt > 0
	}
	for _, c := range claims {
		if started[c.worker] {
			continue
		}
		claimed += c.ram.Rest
		if !mapped[c.model] {
			claimed += c.ram.Weights
			mapped[c.model] = c.ram.Weights > 0
		}
	}
	return running, claimed, mapped
}

// freeRAM is the free RAM for CPU workers given the OS's total and
// available figures (0: not known) and the cap; see the comment at the top.
func freeRAM(total, available, limit, running, claimed uint64) (free uint64, known bool) {
	sub := func(a, b uint64) uint64 { return a - min(a, b) }
	free = ^uint64(0)
	if available > 0 {
		free, known = sub(available, claimed), true
	}
	capacity := total
	if limit > 0 {
		capacity = limit
	}
	if capacity > 0 {
		free, known = min(free, sub(sub(capacity, running), claimed)), true
	}
	return free, known
}

// hiveRAMFree is this hive's free RAM for CPU workers now (total and
// available as detected; 0 when not known).
func (n *Node) hiveRAMFree(total, available uint64) uint64 {
	n.ram.mu.Lock()
	defer n.ram.mu.Unlock()
	running, claimed, _ := ramUse(n.procs.Infos(), n.ram.claims)
	free, known := freeRAM(total, available, n.cfg.MemoryLimit, running, claimed)
	if !known {
		return 0
	}
	return free
}

// admitRAM admits a CPU spawn of worker (its id) and the model file for ram: it refuses one
// that does not fit (when enforce; else it only claims) and otherwise
// holds the claim until release, which the spawn calls when its worker
// runs (and is recorded with its RAM) or has failed.
func (n *Node) admitRAM(ctx context.Context, worker, model string, ram process.RAM, enforce bool, what string) (release func(), err error) {
	total, available, _ := hw.RAM(ctx) // not known (0) where it cannot be read
	n.ram.mu.Lock()
	defer n.ram.mu.Unlock()
	running, claimed, mapped := ramUse(n.procs.Infos(), n.ram.claims)
	need := ram.Rest
	if !mapped[model] {
		need += ram.Weights
	}
	if free, known := freeRAM(total, available, n.cfg.MemoryLimit, running, claimed); enforce && known && need > free {
		limit := ""
		if n.cfg.MemoryLimit > 0 {
			limit = fmt.Sprintf(" under its --memory-limit of %s", humanize.Bytes(n.cfg.MemoryLimit))
		}
		return nil, jobs.Errorf(jobs.CodeUnavailable, "spawn refused: %s needs %s RAM, %s has %s free%s (its workers hold %s, spawns starting %s)",
			what, humanize.Bytes(need), n.cfg.Name, humanize.Bytes(free), limit, humanize.Bytes(running), humanize.Bytes(claimed))
	}
	if n.ram.claims == nil {
		n.ram.claims = map[int]ramClaim{}
	}
	id := n.ram.next
	n.ram.next++
	n.ram.claims[id] = ramClaim{worker: worker, model: model, ram: ram}
	var once sync.Once
	return func() {
		once.Do(func() {
			n.ram.mu.Lock()
			delete(n.ram.claims, id)
			n.ram.mu.Unlock()
		})
	}, nil
}

// cpuWorkerRAM is what a CPU worker of the model is admitted for: the
// placement estimate for its context (and, for rbee's worker, its slots
// and KV cache type), a shard's part of the weights and KV cache.
func (n *Node) cpuWorkerRAM(model modelcat.Entry, r api.WorkerSpawnRequest, external bool) process.RAM {
	est := placement.Estimate(model, r.Ctx)
	if !external {
		est = cpuEstimate(model, r.Ctx, r.Slots, r.KVCache)
	}
	if s := r.Shard; s != nil {
		if d, err := placement.ModelDims(model); err == nil {
			units := d.Layers
			if s.Mode == fsm.GroupTensor {
				units = d.KVHeads
			}
			if k := s.Hi - s.Lo; k > 0 && k < units {
				est.Weights = est.Weights / uint64(units) * uint64(k)
				est.KV = est.KV / uint64(units) * uint64(k)
			}
		}
	}
	return process.RAM{Weights: est.Weights, Rest: est.KV + est.Margin}
}

package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/rbee-project/rbee/model/gguf"
)

// BenchConfig selects what Bench measures, like llama-bench's pp and tg.
type BenchConfig struct {
	PromptTokens int // tokens processed as one prompt (pp); 0 skips pp
	GenTokens    int // tokens decoded one at a time (tg); 0 skips tg
	Reps         int // repetitions; the statistics are over these
	// Parallel lists sequence counts (llama-batched-bench's -npl): for
	// each, that many Sessions each evaluate a PromptTokens prompt of
	// their own (packed into batches of up to 128 rows, as a worker's
	// prefill) and then decode GenTokens tokens together, one batched
	// step per token with a row per sequence (as a worker's continuous
	// batching, without its HTTP and sampling). Needs PromptTokens and
	// GenTokens > 0, and a context of PromptTokens+GenTokens.
	Parallel []int
}

// ParallelResult is one level of BenchConfig.Parallel: prompt processing
// and generation tokens/s of all its sequences together, and generation
// against the first level's (the same run; TGRatio of the first is 1).
type ParallelResult struct {
	Sequences int        `json:"sequences"`
	PP        BenchStats `json:"pp_tps"`
	TG        BenchStats `json:"tg_tps"`
	TGRatio   float64    `json:"tg_ratio_to_first"`
}

// BenchStats summarises a rate over the repetitions, in tokens per second.
type BenchStats struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// BenchResult is the output of Bench (and of `rbee bench engine`).
type BenchResult struct {
	Model        string     `json:"model"`
	Arch         string     `json:"arch"`
	Quantization string     `json:"quantization"`
	Params       int64      `json:"params"`
	Threads      int        `json:"threads"`
	P            int        `json:"p"`
	N            int        `json:"n"`
	Reps         int        `json:"reps"`
	PP           BenchStats `json:"pp_tps"`
	TG           BenchStats `json:"tg_tps"`
	// Parallel: one entry per BenchConfig.Parallel level, in its order.
	Parallel []ParallelResult `json:"parallel,omitempty"`
}

// Bench measures prompt processing (PromptTokens evaluated as one batched
// prompt from an empty cache) and generation (GenTokens single-token decode
// steps after a BOS, greedy) on a fresh Session, after one untimed warm-up
// of each. Prompt tokens are a fixed pseudo-random sequence of ids.
func Bench(ctx context.Context, m *Model, cfg BenchConfig) (BenchResult, error) {
	res := BenchResult{
		Model: m.info.Name, Arch: m.info.Arch, Quantization: m.info.Quantization, Params: m.info.Params,
		Threads: m.pool.Threads(), P: cfg.PromptTokens, N: cfg.GenTokens, Reps: cfg.Reps,
	}
	if cfg.Reps <= 0 || cfg.PromptTokens < 0 || cfg.GenTokens < 0 {
		return res, fmt.Errorf("%w: bench needs reps > 0 and non-negative p and n", ErrBadRequest)
	}
	if cfg.PromptTokens+1 > m.hp.nCtx || cfg.GenTokens+1 > m.hp.nCtx {
		return res, fmt.Errorf("%w: p=%d or n=%d does not fit context %d", ErrContextOverflow, cfg.PromptTokens, cfg.GenTokens, m.hp.nCtx)
	}
	if len(cfg.Parallel) > 0 {
		if cfg.PromptTokens == 0 || cfg.GenTokens == 0 {
			return res, fmt.Errorf("%w: parallel decoding needs p > 0 and n > 0", ErrBadRequest)
		}
		if cfg.PromptTokens+cfg.GenTokens > m.hp.nCtx {
			return res, fmt.Errorf("%w: p+n=%d does not fit context %d", ErrContextOverflow, cfg.PromptTokens+cfg.GenTokens, m.hp.nCtx)
		}
		for _, n := range cfg.Parallel {
			if n < 1 || n > MaxBenchParallel {
				return res, fmt.Errorf("%w: %d parallel sequences: must be in [1, %d]", ErrBadRequest, n, MaxBenchParallel)
			}
		}
	}
	s := m.NewSession()
	prompt := make([]int32, cfg.PromptTokens)
	for i := range prompt {
		// A fixed LCG walk over the vocabulary: varied ids, same every run.
		prompt[i] = int32((uint64(i)*2654435761 + 12345) % uint64(m.hp.vocab))
	}
	var pp, tg []float64
	for rep := -1; rep < cfg.Reps; rep++ { // rep -1 is the warm-up
		if cfg.PromptTokens > 0 {
			s.Reset()
			start := time.Now()
			if _, err := s.eval(ctx, prompt); err != nil {
				return res, err
			}
			if rep >= 0 {
				pp = append(pp, float64(cfg.PromptTokens)/time.Since(start).Seconds())
			}
		}
		if cfg.GenTokens > 0 {
			s.Reset()
			logits, err := s.eval(ctx, []int32{max(m.tok.BOS(), 0)})
			if err != nil {
				return res, err
			}
			start := time.Now()
			for i := 0; i < cfg.GenTokens; i++ {
				s.one[0] = argmax(logits)
				if logits, err = s.eval(ctx, s.one[:]); err != nil {
					return res, err
				}
			}
			if rep >= 0 {
				tg = append(tg, float64(cfg.GenTokens)/time.Since(start).Seconds())
			}
		}
	}
	res.PP, res.TG = stats(pp), stats(tg)
	for _, n := range cfg.Parallel {
		var pp, tg []float64
		for rep := -1; rep < cfg.Reps; rep++ {
			r, err := benchParallel(ctx, m, n, cfg.PromptTokens, cfg.GenTokens)
			if err != nil {
				return res, err
			}
			if rep >= 0 {
				pp, tg = append(pp, r.pp), append(tg, r.tg)
			}
		}
		pr := ParallelResult{Sequences: n, PP: stats(pp), TG: stats(tg), TGRatio: 1}
		if len(res.Parallel) > 0 && res.Parallel[0].TG.Median > 0 {
			pr.TGRatio = pr.TG.Median / res.Parallel[0].TG.Median
		}
		res.Parallel = append(res.Parallel, pr)
	}
	return res, nil
}

// MaxBenchParallel bounds BenchConfig.Parallel's levels as a worker's
// slots are bounded (worker.Config.Slots); every sequence holds a KV cache
// of its own.
const MaxBenchParallel = 256

// parallelRun is one run of benchParallel: rates, and each sequence's
// greedy ids (for tests).
type parallelRun struct {
	pp, tg float64
	ids    [][]int32
}

// benchParallel evaluates n prompts of p tokens (each Session its own
// ids), packed into forward passes of up to promptBatch rows, then
// decodes g greedy tokens per sequence, one forward pass per token with a
// row per sequence.
func benchParallel(ctx context.Context, m *Model, n, p, g int) (parallelRun, error) {
	b := m.NewBatch()
	ss := make([]*Session, n)
	prompts := make([][]int32, n)
	for k := range ss {
		ss[k] = m.NewSession()
		prompts[k] = make([]int32, p)
		for i := range prompts[k] {
			prompts[k][i] = int32((uint64(k*p+i)*2654435761 + 12345) % uint64(m.hp.vocab))
		}
	}
	run := parallelRun{ids: make([][]int32, n)}
	next := make([]int32, n)
	plan := make([]segment, 0, n)
	start := time.Now()
	for k, done := 0, 0; k < n; {
		plan = plan[:0]
		for budget := promptBatch; k < n && budget > 0; {
			c := min(p-done, budget)
			plan = append(plan, segment{s: ss[k], ids: prompts[k][done : done+c], logits: done+c == p})
			budget -= c
			if done += c; done == p {
				k, done = k+1, 0
			}
		}
		if err := b.forward(ctx, plan); err != nil {
			return run, err
		}
		for i := range plan {
			if plan[i].logits {
				next[slices.Index(ss, plan[i].s)] = argmax(b.logitsOf(&plan[i]))
			}
		}
	}
	run.pp = float64(n*p) / time.Since(start).Seconds()
	start = time.Now()
	for step := 0; step < g; step++ {
		plan = plan[:0]
		for k, s := range ss {
			run.ids[k] = append(run.ids[k], next[k])
			s.one[0] = next[k]
			plan = append(plan, segment{s: s, ids: s.one[:], logits: true})
		}
		if err := b.forward(ctx, plan); err != nil {
			return run, err
		}
		for k := range plan {
			next[k] = argmax(b.logitsOf(&plan[k]))
		}
	}
	run.tg = float64(n*g) / time.Since(start).Seconds()
	return run, nil
}

func stats(v []float64) BenchStats {
	if len(v) == 0 {
		return BenchStats{}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return BenchStats{Median: med, Min: v[0], Max: v[len(v)-1]}
}

// TensorSummary describes one tensor for Inspect.
type TensorSummary struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`
	Dims  []uint64 `json:"dims"`
	Bytes uint64   `json:"bytes"`
}

// MetadataEntry is one metadata pair for Inspect. Value holds the full
// value (arrays included) for JSON; Summary is a short human form.
type MetadataEntry struct {
	Key     string `json:"key"`
	Type    string `json:"type"`
	Value   any    `json:"value"`
	Summary string `json:"-"`
}

// Inspection is what `rbee model inspect` prints.
type Inspection struct {
	Version    uint32          `json:"version"`
	Alignment  uint64          `json:"alignment"`
	DataOffset uint64          `json:"data_offset"`
	Metadata   []MetadataEntry `json:"metadata"`
	Tensors    []TensorSummary `json:"tensors"`
}

// inspectArrayPreview is how many elements of a long array the table view
// shows; the vocabularies of real models have 32k–256k entries.
const inspectArrayPreview = 8

// Inspect summarises a GGUF file's metadata and tensors.
func Inspect(f *gguf.File) Inspection {
	out := Inspection{Version: f.Version, Alignment: f.Alignment, DataOffset: f.DataOffset}
	for _, kv := range f.KVs {
		e := MetadataEntry{Key: kv.Key, Type: kv.Value.Type.String(), Value: kv.Value.Data, Summary: kv.Value.String()}
		if kv.Value.Type == gguf.TypeArray {
			e.Type = fmt.Sprintf("array[%s]", kv.Value.ArrayType)
			e.Summary = summarizeArray(kv.Value)
		}
		out.Metadata = append(out.Metadata, e)
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		out.Tensors = append(out.Tensors, TensorSummary{Name: t.Name, Type: t.Type.String(), Dims: t.Dims, Bytes: t.Size})
	}
	return out
}

func summarizeArray(v gguf.Value) string {
	n := v.Len()
	var head string
	switch a := v.Data.(type) {
	case []string:
		head = fmt.Sprintf("%q", a[:min(n, inspectArrayPreview)])
	case []float32:
		head = fmt.Sprint(a[:min(n, inspectArrayPreview)])
	case []int32:
		head = fmt.Sprint(a[:min(n, inspectArrayPreview)])
	case []uint32:
		head = fmt.Sprint(a[:min(n, inspectArrayPreview)])
	default:
		return v.String()
	}
	if n > inspectArrayPreview {
		return fmt.Sprintf("%s… (%d elements)", head[:len(head)-1], n)
	}
	return head
}

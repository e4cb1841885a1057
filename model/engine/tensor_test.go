package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// tpGroup is an in-process tensor-parallel group: AllGather is a barrier
// over the shards' goroutines, Begin hands the head's rows to the other
// shards, which run them with TensorForward.
type tpGroup struct {
	n       int
	mu      sync.Mutex
	cond    *sync.Cond
	parts   [][]float32
	result  [][]float32
	arrived int
	round   uint64
	plans   []chan tpPlan // shards 1..n-1
	errs    chan error
	gathers int
}

type tpPlan struct {
	segs []RemoteSegment
	ids  []int32
}

type tpMember struct {
	g    *tpGroup
	rank int
}

func (t tpMember) Begin(_ context.Context, segs []RemoteSegment, ids []int32) error {
	p := tpPlan{segs: append([]RemoteSegment(nil), segs...), ids: append([]int32(nil), ids...)}
	for _, c := range t.g.plans[1:] {
		c <- p
	}
	return nil
}

func (t tpMember) Epoch() uint64 { return 1 }

func (t tpMember) AllGather(_ context.Context, part []float32) ([][]float32, error) {
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.round
	g.parts[t.rank] = append([]float32(nil), part...)
	g.arrived++
	if g.arrived == g.n {
		g.result, g.parts = g.parts, make([][]float32, g.n)
		g.arrived = 0
		g.round++
		g.gathers++
		g.cond.Broadcast()
	} else {
		for g.round == r {
			g.cond.Wait()
		}
	}
	return g.result, nil
}

// AllReduce all-gathers the partial sums and adds them in shard order,
// as a group's head does.
func (t tpMember) AllReduce(ctx context.Context, part []float32) ([]float32, error) {
	parts, err := t.AllGather(ctx, part)
	if err != nil {
		return nil, err
	}
	sum := append([]float32(nil), parts[0]...)
	for _, p := range parts[1:] {
		if len(p) != len(sum) {
			return nil, fmt.Errorf("partial sums of %d and %d values", len(sum), len(p))
		}
		addTo(sum, p)
	}
	return sum, nil
}

// loadTensorGroup loads path as tensor shards of the KV-head ranges given
// by bounds (0 = b0 < … < bk = KV heads) and runs the non-head shards in
// goroutines; it returns the head.
func loadTensorGroup(t *testing.T, path string, bounds []int, gather bool, opts Options) (*Model, *tpGroup) {
	t.Helper()
	g := &tpGroup{n: len(bounds) - 1, parts: make([][]float32, len(bounds)-1), errs: make(chan error, len(bounds))}
	g.cond = sync.NewCond(&g.mu)
	g.plans = make([]chan tpPlan, g.n)
	var head *Model
	var wg sync.WaitGroup
	for r := 0; r < g.n; r++ {
		m, err := LoadShard(path, ShardSpec{Mode: Tensor, KVLo: bounds[r], KVHi: bounds[r+1], Peers: tpMember{g: g, rank: r}, Gather: gather}, opts)
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		if r == 0 {
			head = m
			continue
		}
		g.plans[r] = make(chan tpPlan, 1)
		wg.Add(1)
		go func(m *Model, plans chan tpPlan) {
			defer wg.Done()
			b := m.NewBatch()
			sessions := map[uint64]*Session{}
			for p := range plans {
				var segs []StageSegment
				for _, sg := range p.segs {
					s := sessions[sg.Session]
					if s == nil {
						s = m.NewSession()
						sessions[sg.Session] = s
					}
					segs = append(segs, StageSegment{Session: s, Pos: sg.Pos, N: sg.N, Logits: sg.Logits})
				}
				if err := b.TensorForward(context.Background(), segs, p.ids); err != nil {
					g.errs <- err
					return
				}
			}
		}(m, g.plans[r])
	}
	t.Cleanup(func() {
		for _, c := range g.plans[1:] {
			close(c)
		}
		wg.Wait()
	})
	return head, g
}

// TestTensorMatchesWhole: every fixture model split by KV heads into 2, 3
// and as many shards as KV heads (even and uneven) generates what the
// whole model generates, over two turns (the second reusing the cache)
// and two batched sequences: the same greedy ids, and log-probabilities
// bit-identical with ShardSpec.Gather, within float rounding with the
// all-reduces (which must then halve the exchanges where the weights'
// blocks allow a split by columns).
func TestTensorMatchesWhole(t *testing.T) {
	// A synthetic K-quant model whose head groups (4 × 64 columns) and
	// FFN shares fall on 256-value blocks, so its Wo and Wdown are split
	// by columns: the kquant fixtures' are not (their head groups are
	// 64 columns wide).
	aligned := filepath.Join(t.TempDir(), "aligned-q4_k.gguf")
	cfg := synth.DefaultConfig()
	cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Type, cfg.Vocab = 512, 2, 8, 2, 1024, quant.Q4_K, 600
	require.NoError(t, synth.Write(aligned, cfg))
	// qwen3: per-head q/k norms, heads longer than dim/heads.
	qwen3 := filepath.Join(t.TempDir(), "qwen3-f32.gguf")
	cfg = synth.DefaultConfig()
	cfg.Arch, cfg.Dim, cfg.Heads, cfg.KVHeads, cfg.HeadDim, cfg.Std = "qwen3", 64, 6, 3, 32, 0.3
	require.NoError(t, synth.Write(qwen3, cfg))
	// gemma3: post norms, soft-capped logits, windowed layers with their own RoPE.
	gemma3 := filepath.Join(t.TempDir(), "gemma3-f32.gguf")
	cfg = synth.DefaultConfig()
	cfg.Arch, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.HeadDim, cfg.Std = "gemma3", 6, 4, 2, 32, 0.3
	cfg.EmbedStd, cfg.SlidingWindow, cfg.FinalCap = 0.02, 4, 3
	require.NoError(t, synth.Write(gemma3, cfg))
	// phi3: fused q/k/v and gate/up matrices, cut again by heads and rows.
	phi3 := filepath.Join(t.TempDir(), "phi3-f32.gguf")
	cfg = synth.DefaultConfig()
	cfg.Arch, cfg.Heads, cfg.KVHeads, cfg.Std, cfg.OrigCtx = "phi3", 4, 2, 0.3, 64
	require.NoError(t, synth.Write(phi3, cfg))
	fixtures := []struct {
		path string
		// tol bounds the difference of a log-probability between the
		// whole model and an all-reducing group, after the fixture notes'
		// tolerances: about 2e-3 for an f32 model with an f16 KV cache
		// (the cache rounds keys and values to f16, which carries a
		// rounding difference on); for the quantised files, whose
		// activations are quantised again after each sum, theirs of
		// logits (0.23 against llama.cpp), much smaller here.
		tol float64
	}{
		{storiesPath, 2e-3},
		// Repacked (on AVX-512 VNNI) with a float contract of its own:
		// the shards repack their row slices, also those that do not
		// fill a group of eight rows.
		{stories260KQ4_0, 5e-2},
		{"../../testdata/gguf/kquant/kquant-Q4_K.gguf", 5e-2},
		{"../../testdata/gguf/kquant/kquant-Q6_K.gguf", 5e-2},
		{"../../testdata/gguf/qwen2/qwen2-random-F32.gguf", 2e-3},
		{aligned, 5e-2},
		{qwen3, 2e-3},
		{gemma3, 2e-3},
		{phi3, 2e-3},
	}
	opts := Options{Threads: 1, ContextSize: 128}
	for _, fx := range fixtures {
		path := fx.path
		whole, err := Load(path, opts)
		require.NoError(t, err)
		t.Cleanup(func() { whole.Close() })
		tok := whole.Tokenizer()
		p1 := tok.Encode("Once upon a time, there was a little", tok.AddBOS(), true)
		p2 := tok.Encode("The cat sat on the mat and", tok.AddBOS(), true)
		req := func(p []int32) GenerateRequest { return GenerateRequest{Prompt: p, MaxTokens: 16, Logprobs: true} }
		ws := whole.NewSession()
		want1 := generate(t, ws, req(p1))
		turn2 := append(append(append([]int32{}, p1...), want1.ids[:len(want1.ids)/2]...), p2[1:]...)
		want2 := generate(t, ws, req(turn2))
		wantB := generate(t, whole.NewSession(), req(p2))

		nkv := whole.Info().KVHeads
		all := []int{}
		for i := 0; i <= nkv; i++ {
			all = append(all, i)
		}
		var splits [][]int
		seen := map[string]bool{}
		for _, b := range [][]int{{0, nkv / 2, nkv}, {0, 1, nkv}, {0, 1, 2, nkv}, all} {
			ok := true
			for i := 1; i < len(b); i++ {
				ok = ok && b[i] > b[i-1]
			}
			if k := fmt.Sprint(b); ok && !seen[k] {
				seen[k] = true
				splits = append(splits, b)
			}
		}
		for _, bounds := range splits {
			for _, gather := range []bool{true, false} {
				name := fmt.Sprintf("%s-%s/%v/gather=%v", whole.Info().Name, whole.Info().Quantization, bounds, gather)
				t.Run(name, func(t *testing.T) {
					m, g := loadTensorGroup(t, path, bounds, gather, opts)
					sums := 0
					for i := range m.layers {
						sums += boolInt(m.tp.sumWo[i]) + boolInt(m.tp.sumDown[i])
					}
					if gather {
						require.Zero(t, sums)
					}
					// A column slice is a copy of its own: once repacked,
					// the shard holds it once.
					released := 0
					for i := range m.layers {
						l := &m.layers[i]
						for _, c := range []struct {
							w    *quant.Matrix
							cols bool
						}{{l.wo, m.tp.sumWo[i]}, {l.wDown, m.tp.sumDown[i]}} {
							if c.cols && c.w.Repacked() {
								require.Nil(t, c.w.Data)
								released++
							}
						}
					}
					if released > 0 {
						t.Logf("%d column slices held once, repacked", released)
					}
					same := func(want, got genOut) {
						t.Helper()
						require.Equal(t, want.ids, got.ids)
						if gather {
							require.Equal(t, want.logprobs, got.logprobs)
							return
						}
						require.InDeltaSlice(t, want.logprobs, got.logprobs, fx.tol)
					}
					s := m.NewSession()
					same(want1, generate(t, s, req(p1)))
					same(want2, generate(t, s, req(turn2)))

					s1, s2 := m.NewSession(), m.NewSession()
					q1, err := s1.Begin(req(p1))
					require.NoError(t, err)
					q2, err := s2.Begin(req(p2))
					require.NoError(t, err)
					b := m.NewBatch()
					outs := map[*Sequence]*genOut{q1: {}, q2: {}}
					g.gathers = 0
					steps := 0
					for !q1.Done() || !q2.Done() {
						var live []*Sequence
						for _, q := range []*Sequence{q1, q2} {
							if !q.Done() {
								live = append(live, q)
							}
						}
						require.NoError(t, b.Step(live))
						steps++
						for _, q := range live {
							o := outs[q]
							for _, tk := range q.Tokens() {
								if tk.ID >= 0 {
									o.ids = append(o.ids, tk.ID)
									o.logprobs = append(o.logprobs, tk.Logprob)
								}
							}
						}
					}
					same(want1, *outs[q1])
					same(wantB, *outs[q2])
					// Exchanges per forward pass (one per step): two per
					// matrix split by rows, one per matrix split by
					// columns, and the logits.
					perPass := 4*len(m.layers) - sums + 1
					require.Equal(t, perPass, m.TensorExchanges())
					require.Equal(t, steps*perPass, g.gathers, "%d of %d matrices all-reduced", sums, 2*len(m.layers))
					t.Logf("%d of %d matrices all-reduced: %d exchanges per pass", sums, 2*len(m.layers), perPass)
					select {
					case err := <-g.errs:
						t.Fatal(err)
					default:
					}
				})
			}
		}
	}
}

// shortGatherer answers every exchange with this shard's part and a part
// one value short: a member on another version, or a broken one.
type shortGatherer struct{}

func (shortGatherer) Begin(context.Context, []RemoteSegment, []int32) error { return nil }
func (shortGatherer) Epoch() uint64                                         { return 1 }
func (shortGatherer) AllGather(_ context.Context, part []float32) ([][]float32, error) {
	return [][]float32{part, part[:len(part)-1]}, nil
}
func (shortGatherer) AllReduce(_ context.Context, part []float32) ([]float32, error) {
	return part[:len(part)-1], nil
}

// TestTensorRefusesMismatchedParts: a partial sum or an all-gathered part
// of the wrong width fails the pass with ErrShard (nothing is added or
// copied out of bounds), in both modes.
func TestTensorRefusesMismatchedParts(t *testing.T) {
	for _, gather := range []bool{false, true} {
		m, err := LoadShard(storiesPath, ShardSpec{Mode: Tensor, KVLo: 0, KVHi: 2, Peers: shortGatherer{}, Gather: gather}, Options{Threads: 1, ContextSize: 64})
		require.NoError(t, err)
		_, err = m.NewSession().Generate(context.Background(), GenerateRequest{Prompt: []int32{1, 2}, MaxTokens: 2}, func(Token) error { return nil })
		require.ErrorIs(t, err, ErrShard, "gather=%v", gather)
		m.Close()
	}
}

// TestTensorRefusesExperts: a mixture-of-experts model is split by layers,
// not heads; a tensor shard of one is refused before anything loads.
func TestTensorRefusesExperts(t *testing.T) {
	cfg := synth.DefaultConfig()
	cfg.Arch, cfg.Experts, cfg.ExpertsUsed = "qwen3moe", 4, 2
	_, err := LoadShard(writeSynth(t, cfg), ShardSpec{Mode: Tensor, KVLo: 0, KVHi: 2, Peers: shortGatherer{}}, Options{Threads: 1, ContextSize: 64})
	require.ErrorIs(t, err, ErrShard)
	require.ErrorContains(t, err, "pipeline")
}

// TestTensorSpec: the tensor shard specs that are refused, and what a
// shard holds.
func TestTensorSpec(t *testing.T) {
	g := &tpGroup{}
	peer := tpMember{g: g}
	opts := Options{Threads: 1, ContextSize: 64}
	for _, c := range []ShardSpec{
		{Mode: Tensor, KVLo: 0, KVHi: 5, Peers: peer},
		{Mode: Tensor, KVLo: 2, KVHi: 2, Peers: peer},
		{Mode: Tensor, KVLo: 0, KVHi: 2},
		{Mode: Tensor, Lo: 1, KVLo: 0, KVHi: 2, Peers: peer},
		{Mode: 7},
	} {
		_, err := LoadShard(storiesPath, c, opts)
		require.ErrorIs(t, err, ErrShard, "%+v", c)
	}
	m, err := LoadShard(storiesPath, ShardSpec{Mode: Tensor, KVLo: 1, KVHi: 4, Peers: peer}, opts)
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, 6, m.heads)
	require.Equal(t, 3, m.kvHeads)
	// f32 splits anywhere: Wo by the columns of query heads [2, 8) of 8,
	// Wdown by those of its FFN rows.
	require.Equal(t, 64, m.layers[0].wo.Rows)
	require.Equal(t, 64-16, m.layers[0].wo.Cols)
	require.Equal(t, 172-43, m.layers[0].wGate.Rows)
	require.Equal(t, 172-43, m.layers[0].wDown.Cols)
	g2 := &tpGroup{}
	m2, err := LoadShard(storiesPath, ShardSpec{Mode: Tensor, KVLo: 1, KVHi: 4, Peers: tpMember{g: g2}, Gather: true}, opts)
	require.NoError(t, err)
	defer m2.Close()
	require.Equal(t, 64-16, m2.layers[0].wo.Rows, "Gather: split by output rows")
	require.Equal(t, 64-16, m2.layers[0].wDown.Rows)
	require.Equal(t, 512-128, m.output.Rows)
	_, err = m.NewSession().Begin(GenerateRequest{Prompt: []int32{1}})
	require.ErrorIs(t, err, ErrShard)

	// A member refuses a pass that names one session twice (its tokens
	// would go past the cache) before it evaluates anything.
	s := m.NewSession()
	b := m.NewBatch()
	err = b.TensorForward(context.Background(), []StageSegment{{Session: s, Pos: 0, N: 1}, {Session: s, Pos: 0, N: 1}}, []int32{1, 2})
	require.ErrorIs(t, err, ErrShard)
	require.ErrorContains(t, err, "given twice")
}

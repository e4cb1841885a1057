package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
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

// loadTensorGroup loads path as tensor shards of the KV-head ranges given
// by bounds (0 = b0 < … < bk = KV heads) and runs the non-head shards in
// goroutines; it returns the head.
func loadTensorGroup(t *testing.T, path string, bounds []int, opts Options) (*Model, *tpGroup) {
	t.Helper()
	g := &tpGroup{n: len(bounds) - 1, parts: make([][]float32, len(bounds)-1), errs: make(chan error, len(bounds))}
	g.cond = sync.NewCond(&g.mu)
	g.plans = make([]chan tpPlan, g.n)
	var head *Model
	var wg sync.WaitGroup
	for r := 0; r < g.n; r++ {
		m, err := LoadShard(path, ShardSpec{Mode: Tensor, KVLo: bounds[r], KVHi: bounds[r+1], Peers: tpMember{g: g, rank: r}}, opts)
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
// and as many shards as KV heads (even and uneven) generates exactly what
// the whole model generates: the same greedy ids, bit-identical
// log-probabilities, over two turns (the second reusing the cache) and two
// batched sequences.
func TestTensorMatchesWhole(t *testing.T) {
	fixtures := []string{
		storiesPath,
		// Repacked (on AVX-512 VNNI) with a float contract of its own:
		// the shards repack their row slices, also those that do not
		// fill a group of eight rows.
		stories260KQ4_0,
		"../../testdata/gguf/kquant/kquant-Q4_K.gguf",
		"../../testdata/gguf/kquant/kquant-Q6_K.gguf",
		"../../testdata/gguf/qwen2/qwen2-random-F32.gguf",
	}
	opts := Options{Threads: 1, ContextSize: 128}
	for _, path := range fixtures {
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
			t.Run(fmt.Sprintf("%s-%s/%v", whole.Info().Name, whole.Info().Quantization, bounds), func(t *testing.T) {
				m, g := loadTensorGroup(t, path, bounds, opts)
				s := m.NewSession()
				require.Equal(t, want1, generate(t, s, req(p1)))
				require.Equal(t, want2, generate(t, s, req(turn2)))
				require.Positive(t, g.gathers)

				s1, s2 := m.NewSession(), m.NewSession()
				q1, err := s1.Begin(req(p1))
				require.NoError(t, err)
				q2, err := s2.Begin(req(p2))
				require.NoError(t, err)
				b := m.NewBatch()
				outs := map[*Sequence]*genOut{q1: {}, q2: {}}
				for !q1.Done() || !q2.Done() {
					var live []*Sequence
					for _, q := range []*Sequence{q1, q2} {
						if !q.Done() {
							live = append(live, q)
						}
					}
					require.NoError(t, b.Step(live))
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
				require.Equal(t, want1.ids, outs[q1].ids)
				require.Equal(t, want1.logprobs, outs[q1].logprobs)
				require.Equal(t, wantB.ids, outs[q2].ids)
				require.Equal(t, wantB.logprobs, outs[q2].logprobs)
				select {
				case err := <-g.errs:
					t.Fatal(err)
				default:
				}
			})
		}
	}
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
	require.Equal(t, 64-16, m.layers[0].wo.Rows)
	require.Equal(t, 172-43, m.layers[0].wGate.Rows)
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

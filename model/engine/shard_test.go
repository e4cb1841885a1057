package engine

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/stretchr/testify/require"
)

// localStages is an in-process Remote: the later stages of a pipeline as
// Models of their own, each with its Batch and one Session per first-stage
// Session, hidden states handed over as they are (the wire carries the same
// float32 values).
type localStages struct {
	mu     sync.Mutex
	stages []*Model
	b      []*Batch
	sess   []map[uint64]*Session
	epoch  uint64
	calls  int
	fail   error // returned by the next Forward, then cleared
}

func newLocalStages(t testing.TB, path string, bounds []int, opts Options) *localStages {
	t.Helper()
	ls := &localStages{epoch: 1}
	for i := 1; i+1 < len(bounds); i++ {
		m, err := LoadShard(path, ShardSpec{Lo: bounds[i], Hi: bounds[i+1]}, opts)
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		ls.stages = append(ls.stages, m)
		ls.b = append(ls.b, m.NewBatch())
		ls.sess = append(ls.sess, map[uint64]*Session{})
	}
	return ls
}

// reconnect forgets every stage's sessions, as a new connection would.
func (ls *localStages) reconnect() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for i := range ls.sess {
		ls.sess[i] = map[uint64]*Session{}
	}
	ls.epoch++
}

func (ls *localStages) Epoch() uint64 {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.epoch
}

func (ls *localStages) Forward(ctx context.Context, segs []RemoteSegment, hidden, logits []float32) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.calls++
	if err := ls.fail; err != nil {
		ls.fail = nil
		return err
	}
	for i, m := range ls.stages {
		ss := make([]StageSegment, len(segs))
		for j, sg := range segs {
			s := ls.sess[i][sg.Session]
			if s == nil {
				s = m.NewSession()
				ls.sess[i][sg.Session] = s
			}
			ss[j] = StageSegment{Session: s, Pos: sg.Pos, N: sg.N, Logits: sg.Logits}
		}
		out, err := ls.b[i].StageForward(ctx, ss, hidden)
		if err != nil {
			return err
		}
		hidden = out
	}
	if len(hidden) != len(logits) {
		return fmt.Errorf("last stage gave %d values, want %d", len(hidden), len(logits))
	}
	copy(logits, hidden)
	return nil
}

// loadPipeline loads path split at bounds (0 = b0 < b1 < … < bk = layers)
// as a first stage driving in-process later stages.
func loadPipeline(t testing.TB, path string, bounds []int, opts Options) (*Model, *localStages) {
	t.Helper()
	ls := newLocalStages(t, path, bounds, opts)
	m, err := LoadShard(path, ShardSpec{Lo: 0, Hi: bounds[1], Next: ls}, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, ls
}

type genOut struct {
	ids      []int32
	logprobs []float32
	text     string
	res      Result
}

func generate(t *testing.T, s *Session, req GenerateRequest) genOut {
	t.Helper()
	var o genOut
	res, err := s.Generate(context.Background(), req, func(tk Token) error {
		if tk.ID >= 0 {
			o.ids = append(o.ids, tk.ID)
			o.logprobs = append(o.logprobs, tk.Logprob)
		}
		o.text += tk.Text
		return nil
	})
	require.NoError(t, err)
	o.res = res
	o.res.PromptDuration, o.res.GenDuration = 0, 0
	return o
}

// splits returns the stage boundaries tested for a model of n layers: two
// even stages, two uneven ones, three stages (uneven when n allows).
func splits(n int) [][]int {
	out := [][]int{{0, n / 2, n}, {0, 1, n}, {0, n - 1, n}}
	if n >= 3 {
		out = append(out, []int{0, 1, 2, n}, []int{0, n / 3, n - 1, n})
	}
	var uniq [][]int
	seen := map[string]bool{}
	for _, b := range out {
		ok := true
		for i := 1; i < len(b); i++ {
			ok = ok && b[i] > b[i-1]
		}
		if k := fmt.Sprint(b); ok && !seen[k] {
			seen[k] = true
			uniq = append(uniq, b)
		}
	}
	return uniq
}

// TestPipelineMatchesWhole: every fixture model split into 2 and 3 stages
// (even and uneven ranges) generates exactly what the whole model
// generates: the same greedy ids and bit-identical log-probabilities, over
// a first turn and a second turn that reuses (rewinds to) the cached
// prefix, and with two sequences batched in one step.
func TestPipelineMatchesWhole(t *testing.T) {
	// gemma2: windowed layers alternate, so a stage's first layer may be
	// either kind.
	gemma2 := filepath.Join(t.TempDir(), "gemma2-f32.gguf")
	cfg := synth.DefaultConfig()
	cfg.Arch, cfg.Layers, cfg.Std, cfg.EmbedStd, cfg.SlidingWindow = "gemma2", 5, 0.3, 0.02, 4
	require.NoError(t, synth.Write(gemma2, cfg))
	// qwen3moe: experts, which split by layers only.
	moe := filepath.Join(t.TempDir(), "qwen3moe-q8_0.gguf")
	cfg = synth.DefaultConfig()
	cfg.Arch, cfg.Layers, cfg.Type, cfg.Std, cfg.Experts, cfg.ExpertsUsed = "qwen3moe", 4, quant.Q8_0, 0.3, 6, 2
	require.NoError(t, synth.Write(moe, cfg))
	fixtures := []string{
		gemma2,
		moe,
		storiesPath,
		"../../testdata/gguf/kquant/kquant-Q4_K.gguf",
		"../../testdata/gguf/kquant/kquant-Q6_K.gguf",
		"../../testdata/gguf/qwen2/qwen2-random-F32.gguf",
	}
	opts := Options{Threads: 2, ContextSize: 256}
	for _, path := range fixtures {
		whole, err := Load(path, opts)
		require.NoError(t, err)
		t.Cleanup(func() { whole.Close() })
		tok := whole.Tokenizer()
		p1 := tok.Encode("Once upon a time, there was a little", tok.AddBOS(), true)
		p2 := tok.Encode("The cat sat on the mat and", tok.AddBOS(), true)
		req := func(p []int32) GenerateRequest {
			return GenerateRequest{Prompt: p, MaxTokens: 24, Logprobs: true}
		}
		ws := whole.NewSession()
		want1 := generate(t, ws, req(p1))
		turn2 := append(append(append([]int32{}, p1...), want1.ids[:len(want1.ids)/2]...), p2[1:]...)
		want2 := generate(t, ws, req(turn2))
		wantB := generate(t, whole.NewSession(), req(p2))
		require.NotEmpty(t, want1.ids)

		for _, bounds := range splits(whole.Info().Layers) {
			t.Run(fmt.Sprintf("%s/%v", whole.Info().Name+"-"+whole.Info().Quantization, bounds), func(t *testing.T) {
				m, ls := loadPipeline(t, path, bounds, opts)
				s := m.NewSession()
				require.Equal(t, want1, generate(t, s, req(p1)))
				calls := ls.calls
				require.Equal(t, want2, generate(t, s, req(turn2)))
				// The second turn evaluated only what was not cached:
				// one prompt chunk, then one step per token.
				require.LessOrEqual(t, ls.calls-calls, len(want2.ids)+1)

				// Two sequences in one Batch, the second joining later.
				s1, s2 := m.NewSession(), m.NewSession()
				q1, err := s1.Begin(req(p1))
				require.NoError(t, err)
				q2, err := s2.Begin(req(p2))
				require.NoError(t, err)
				b := m.NewBatch()
				var o1, o2 genOut
				for step := 0; !q1.Done() || !q2.Done(); step++ {
					seqs := []*Sequence{q1}
					if step >= 3 {
						seqs = append(seqs, q2)
					}
					wasDone := map[*Sequence]bool{q1: q1.Done(), q2: q2.Done()}
					require.NoError(t, b.Step(seqs))
					for _, pair := range []struct {
						q *Sequence
						o *genOut
					}{{q1, &o1}, {q2, &o2}} {
						if step < 3 && pair.q == q2 || wasDone[pair.q] {
							continue
						}
						for _, tk := range pair.q.Tokens() {
							if tk.ID >= 0 {
								pair.o.ids = append(pair.o.ids, tk.ID)
								pair.o.logprobs = append(pair.o.logprobs, tk.Logprob)
							}
							pair.o.text += tk.Text
						}
					}
				}
				require.Equal(t, want1.ids, o1.ids)
				require.Equal(t, want1.logprobs, o1.logprobs)
				require.Equal(t, wantB.ids, o2.ids)
				require.Equal(t, wantB.logprobs, o2.logprobs)
			})
		}
	}
}

// TestPipelineStageFailure: a failing exchange fails the step with the
// Remote's error and empties the Session; after a reconnection (new
// epoch) a Session's cached prefix is not reused, and generation again
// matches the whole model.
func TestPipelineStageFailure(t *testing.T) {
	opts := Options{Threads: 1, ContextSize: 128}
	whole, err := Load(storiesPath, opts)
	require.NoError(t, err)
	defer whole.Close()
	tok := whole.Tokenizer()
	p := tok.Encode("Lily wanted to play", tok.AddBOS(), true)
	req := GenerateRequest{Prompt: p, MaxTokens: 12, Logprobs: true}
	want := generate(t, whole.NewSession(), req)

	m, ls := loadPipeline(t, storiesPath, []int{0, 2, 5}, opts)
	s := m.NewSession()
	ls.fail = fmt.Errorf("stage 1: %w", ErrStageState)
	_, err = s.Generate(context.Background(), req, func(Token) error { return nil })
	require.ErrorIs(t, err, ErrStageState)
	require.Empty(t, s.Tokens())
	require.Equal(t, want, generate(t, s, req))

	require.Equal(t, len(p)-1, s.CommonPrefix(p))
	ls.reconnect()
	require.Zero(t, s.CommonPrefix(p))
	require.Equal(t, want, generate(t, s, req))
}

// TestShardLoad: what a shard holds, and the calls it refuses.
func TestShardLoad(t *testing.T) {
	opts := Options{Threads: 1, ContextSize: 64}
	ls := newLocalStages(t, storiesPath, []int{0, 2, 5}, opts)
	cases := []struct {
		spec            ShardSpec
		err             error
		embd, out       bool
		layers, lo, hi0 int
	}{
		{spec: ShardSpec{}, embd: true, out: true, layers: 5, lo: 0, hi0: 5},
		{spec: ShardSpec{Lo: 0, Hi: 2, Next: ls}, embd: true, layers: 2, lo: 0, hi0: 2},
		{spec: ShardSpec{Lo: 2, Hi: 4}, layers: 2, lo: 2, hi0: 4},
		{spec: ShardSpec{Lo: 4}, out: true, layers: 1, lo: 4, hi0: 5},
		{spec: ShardSpec{Lo: 0, Hi: 2}, err: ErrShard},
		{spec: ShardSpec{Lo: 3, Hi: 3}, err: ErrShard},
		{spec: ShardSpec{Lo: 0, Hi: 6}, err: ErrShard},
		{spec: ShardSpec{Lo: -1, Hi: 2}, err: ErrShard},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.spec.Lo, "-", c.spec.Hi), func(t *testing.T) {
			m, err := LoadShard(storiesPath, c.spec, opts)
			if c.err != nil {
				require.ErrorIs(t, err, c.err)
				return
			}
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, c.embd, m.embd != nil)
			require.Equal(t, c.out, m.output != nil && m.outN != nil)
			require.Len(t, m.layers, c.layers)
			lo, hi := m.Shard()
			require.Equal(t, []int{c.lo, c.hi0}, []int{lo, hi})
			s := m.NewSession()
			if lo > 0 {
				_, err := s.Begin(GenerateRequest{Prompt: []int32{1, 2}})
				require.ErrorIs(t, err, ErrShard)
				b := m.NewBatch()
				h := make([]float32, 2*m.Info().Dim)
				_, err = b.StageForward(context.Background(), []StageSegment{{Session: s, Pos: 1, N: 2}}, h)
				require.ErrorIs(t, err, ErrStageState)
				_, err = b.StageForward(context.Background(), []StageSegment{{Session: s, Pos: 0, N: 3}}, h)
				require.ErrorIs(t, err, ErrShard)
				out, err := b.StageForward(context.Background(), []StageSegment{{Session: s, Pos: 0, N: 2, Logits: true}}, h)
				require.NoError(t, err)
				want := m.Info().Dim * 2
				if c.out {
					want = m.Info().VocabSize
				}
				require.Len(t, out, want)
				for _, v := range out {
					require.False(t, math.IsNaN(float64(v)))
				}
				require.Len(t, s.Tokens(), 2)
			}
			if !m.whole() {
				_, err := s.Embed(context.Background(), []int32{1, 2})
				require.ErrorIs(t, err, ErrShard)
			}
		})
	}
}

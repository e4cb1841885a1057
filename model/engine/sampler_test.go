package engine

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGreedyLowestIDOnTies(t *testing.T) {
	s := newSampler(5)
	require.EqualValues(t, 1, s.sample([]float32{0, 3, 1, 3, 2}, SampleParams{}, nil))
	require.EqualValues(t, 0, s.sample([]float32{-1, -1, -1, -1, -1}, SampleParams{}, nil))
}

func TestRepeatPenalty(t *testing.T) {
	s := newSampler(4)
	logits := []float32{2, -2, 1.9, 0}
	// Token 0 seen twice and token 1 once: each is penalised once.
	id := s.sample(logits, SampleParams{RepeatPenalty: 2, RepeatLastN: 8}, []int32{0, 1, 0})
	require.EqualValues(t, 2, id)
	require.Equal(t, []float32{1, -4, 1.9, 0}, logits)
	// The window only covers the last N tokens.
	logits = []float32{2, -2, 1.9, 0}
	s.sample(logits, SampleParams{RepeatPenalty: 2, RepeatLastN: 1}, []int32{0, 1})
	require.Equal(t, []float32{2, -4, 1.9, 0}, logits)
}

// draw returns the empirical distribution of many seeded draws.
func draw(t *testing.T, logits []float32, p SampleParams, n int) []float64 {
	t.Helper()
	s := newSampler(len(logits))
	s.reseed(p.Seed)
	counts := make([]float64, len(logits))
	buf := make([]float32, len(logits))
	for i := 0; i < n; i++ {
		copy(buf, logits)
		counts[s.sample(buf, p, nil)]++
	}
	for i := range counts {
		counts[i] /= float64(n)
	}
	return counts
}

func TestSamplingChain(t *testing.T) {
	// Probabilities at T=1: softmax(log p) = p.
	probs := []float64{0.5, 0.25, 0.15, 0.07, 0.03}
	logits := make([]float32, len(probs))
	for i, p := range probs {
		logits[i] = float32(math.Log(p))
	}
	const n = 20000
	cases := []struct {
		name string
		p    SampleParams
		want []float64
	}{
		{"plain", SampleParams{Temperature: 1}, probs},
		{"top-k 2", SampleParams{Temperature: 1, TopK: 2}, []float64{2. / 3, 1. / 3, 0, 0, 0}},
		// cumulative 0.5, 0.75, 0.9 → keeps 3 tokens.
		{"top-p 0.8", SampleParams{Temperature: 1, TopP: 0.8}, []float64{0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0, 0}},
		// min-p 0.2: keep p >= 0.1.
		{"min-p 0.2", SampleParams{Temperature: 1, MinP: 0.2}, []float64{0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0, 0}},
		// T=0.5 squares the probabilities.
		{"temperature 0.5", SampleParams{Temperature: 0.5, TopK: 2}, []float64{0.8, 0.2, 0, 0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := draw(t, logits, c.p, n)
			for i := range got {
				// 4.5 binomial standard deviations.
				sd := math.Sqrt(c.want[i]*(1-c.want[i])/n) + 1e-9
				require.InDeltaf(t, c.want[i], got[i], 4.5*sd+1e-9, "token %d: %v", i, got)
			}
		})
	}
}

func TestSamplingIsDeterministicPerSeed(t *testing.T) {
	logits := []float32{1, 1, 1, 1, 1, 1, 1, 1}
	p := SampleParams{Temperature: 1, Seed: 99}
	seq := func(seed uint64) []int32 {
		s := newSampler(len(logits))
		s.reseed(seed)
		var out []int32
		for i := 0; i < 32; i++ {
			out = append(out, s.sample(append([]float32(nil), logits...), p, nil))
		}
		return out
	}
	require.Equal(t, seq(99), seq(99))
	require.NotEqual(t, seq(99), seq(100))
}

func TestTopKMatchesSort(t *testing.T) {
	c := make([]candidate, 1000)
	for i := range c {
		c[i] = candidate{id: int32(i), logit: float32((i * 7919) % 101)}
	}
	ref := append([]candidate(nil), c...)
	full := topK(ref, 0)
	for _, k := range []int{1, 5, 40, 999} {
		got := topK(append([]candidate(nil), c...), k)
		require.Equal(t, full[:k], got, "k=%d", k)
	}
	// Straight from the logits: what topK gives, ties (by id) and a NaN
	// included.
	logits := make([]float32, len(c))
	for i := range c {
		logits[i] = c[i].logit
	}
	for _, nan := range []int{-1, 0, 3, 500} {
		if nan >= 0 {
			logits[nan], c[nan].logit = float32(math.NaN()), float32(math.NaN())
		}
		buf := make([]candidate, len(c))
		for _, k := range []int{1, 5, 40, 999} {
			want := topK(append([]candidate(nil), c...), k)
			got := topKLogits(buf, logits, k)
			require.Equal(t, fmt.Sprint(want), fmt.Sprint(got), "nan at %d, k=%d", nan, k)
		}
	}
}

func TestStopper(t *testing.T) {
	think := &QuietSpan{Open: "<think>", Close: "</think>"}
	opened := &QuietSpan{Open: "<think>", Close: "</think>", Inside: true}
	cases := []struct {
		name   string
		stops  []string
		pieces []string
		out    []string
		hitAt  int // index of the piece that completes a stop string; -1 none
		held   string
		quiet  *QuietSpan
	}{
		{"no stops", nil, []string{"a", "b"}, []string{"a", "b"}, -1, "", nil},
		{"split stop", []string{"END"}, []string{"xE", "N", "Dy"}, []string{"x", "", ""}, 2, "", nil},
		{"false start", []string{"END"}, []string{"xE", "Nq"}, []string{"x", "ENq"}, -1, "", nil},
		{"held at end", []string{"END"}, []string{"abEN"}, []string{"ab"}, -1, "EN", nil},
		{"earliest of two", []string{"cd", "bc"}, []string{"abcd"}, []string{"a"}, 0, "", nil},
		// A think block is quiet: a stop string inside it is text; one
		// after it stops, also in the piece that closes the block.
		{"quiet block", []string{"x"}, []string{"\n<thi", "nk>x</th", "ink>ax"}, []string{"", "\n<think>x</th", "ink>a"}, 2, "", think},
		{"quiet block, stop in the closing piece", []string{"x"}, []string{"<think>x", "</think>ax"}, []string{"<think>x", "</think>a"}, 1, "", think},
		{"no block: stops from the start", []string{"x"}, []string{"<thx"}, []string{"<th"}, 0, "", think},
		{"an open block", []string{"x"}, []string{"x</think>", "x"}, []string{"x</think>", ""}, 1, "", opened},
		{"the beginning of a block held", []string{"x"}, []string{" <th"}, []string{""}, -1, " <th", think},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := newStopper(c.stops, c.quiet)
			hitAt := -1
			for i, p := range c.pieces {
				out, hit := st.push(p)
				require.Equal(t, c.out[i], out, "piece %d", i)
				if hit {
					hitAt = i
					break
				}
			}
			require.Equal(t, c.hitAt, hitAt)
			require.Equal(t, c.held, st.held)
		})
	}
}

// TestSampleNaNLogits: NaN logits never panic the chain; they count as
// -Inf, and with no finite logit left the draw is -1.
func TestSampleNaNLogits(t *testing.T) {
	nan := float32(math.NaN())
	params := []SampleParams{
		{}, // greedy
		{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: 1},
		{Temperature: 0.8, MinP: 0.05, Seed: 1},
		{Temperature: 0.8, TopP: 0.9, Seed: 1},
		{Temperature: 1, Seed: 1},
	}
	for i, p := range params {
		s := newSampler(8)
		s.reseed(uint64(p.Seed))
		all := []float32{nan, nan, nan, nan, nan, nan, nan, nan}
		require.Equal(t, int32(-1), s.sample(all, p, nil), "params %d: all NaN", i)
		some := []float32{nan, 1, nan, 5, nan, 2, nan, float32(math.Inf(-1))}
		id := s.sample(some, p, nil)
		require.Contains(t, []int32{1, 3, 5}, id, "params %d: a finite logit's token", i)
		if p.Temperature == 0 {
			require.Equal(t, int32(3), id)
		}
	}
}

// TestBrokenWeightsEndInAnError: a model whose weights hold NaN ends a
// generation with ErrBadModel, greedy or sampled, and does not panic.
func TestBrokenWeightsEndInAnError(t *testing.T) {
	b, err := os.ReadFile(storiesPath)
	require.NoError(t, err)
	for i := len(b) * 35 / 100; i < len(b); i++ {
		b[i] = 0xFF // NaN in every f32 from here
	}
	path := filepath.Join(t.TempDir(), "nan.gguf")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	m, err := Load(path, Options{Threads: 1})
	require.NoError(t, err)
	defer m.Close()
	prompt := m.Tokenizer().Encode("Once upon", true, false)
	for _, sp := range []SampleParams{{}, {Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: 3}} {
		_, err := m.NewSession().Generate(context.Background(), GenerateRequest{Prompt: prompt, MaxTokens: 5, Sample: sp}, func(Token) error { return nil })
		require.ErrorIs(t, err, ErrBadModel, "%+v", sp)
	}
}

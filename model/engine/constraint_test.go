package engine

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLogprobs(t *testing.T) {
	m := loadStories(t)
	s := m.NewSession()
	prompt := m.Tokenizer().Encode("Once upon a time", true, false)
	cases := []struct {
		name string
		req  GenerateRequest
	}{
		{"greedy top 5", GenerateRequest{Prompt: prompt, MaxTokens: 12, Logprobs: true, TopLogprobs: 5}},
		{"greedy top 20 with penalty", GenerateRequest{Prompt: prompt, MaxTokens: 12, Logprobs: true, TopLogprobs: 20,
			Sample: SampleParams{RepeatPenalty: 1.5}}},
		{"sampled top 1", GenerateRequest{Prompt: prompt, MaxTokens: 12, Logprobs: true, TopLogprobs: 1,
			Sample: SampleParams{Temperature: 1, Seed: 3}}},
		{"chosen only", GenerateRequest{Prompt: prompt, MaxTokens: 12, Logprobs: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			_, err := s.Generate(context.Background(), tc.req, func(tk Token) error {
				if tk.ID < 0 {
					return nil
				}
				n++
				require.LessOrEqual(t, tk.Logprob, float32(0))
				require.Len(t, tk.TopLogprobs, tc.req.TopLogprobs)
				var sum float64
				for i, alt := range tk.TopLogprobs {
					sum += math.Exp(float64(alt.Logprob))
					require.Equal(t, m.Tokenizer().Piece(alt.ID), alt.Text)
					if i > 0 {
						require.LessOrEqual(t, alt.Logprob, tk.TopLogprobs[i-1].Logprob)
					}
					if alt.ID == tk.ID {
						require.InDelta(t, alt.Logprob, tk.Logprob, 1e-6)
					}
				}
				require.LessOrEqual(t, sum, 1+1e-5)
				if tc.req.Sample.Temperature == 0 && tc.req.Sample.RepeatPenalty == 0 && len(tk.TopLogprobs) > 0 {
					// Greedy on the raw logits: the chosen token is the top one.
					require.Equal(t, tk.ID, tk.TopLogprobs[0].ID)
					require.Equal(t, tk.Logprob, tk.TopLogprobs[0].Logprob)
				}
				return nil
			})
			require.NoError(t, err)
			require.Positive(t, n)
		})
	}
	_, err := s.Generate(context.Background(), GenerateRequest{Prompt: prompt, Logprobs: true, TopLogprobs: 21}, func(Token) error { return nil })
	require.ErrorIs(t, err, ErrBadRequest)
}

// onlyIDs allows a fixed sequence of tokens, one per step, then is Done.
type onlyIDs struct {
	seq []int32
	pos int
}

func (c *onlyIDs) Mask(logits []float32) {
	for i := range logits {
		if int32(i) != c.seq[c.pos] {
			logits[i] = float32(math.Inf(-1))
		}
	}
}

func (c *onlyIDs) Accept(id int32) error {
	if id != c.seq[c.pos] {
		return ErrBadRequest
	}
	c.pos++
	return nil
}

func (c *onlyIDs) Done() bool { return c.pos == len(c.seq) }

func TestConstraintSteersAndEnds(t *testing.T) {
	m := loadStories(t)
	s := m.NewSession()
	prompt := m.Tokenizer().Encode("Once upon a time", true, false)
	want := m.Tokenizer().Encode("the end of it", false, false)
	for _, sp := range []SampleParams{{}, {Temperature: 1.5, TopK: 3, Seed: 9}} {
		ids, _, res, err := collect(t, s, GenerateRequest{Prompt: prompt, MaxTokens: 50, Sample: sp, Constraint: &onlyIDs{seq: want}})
		require.NoError(t, err)
		require.Equal(t, want, ids)
		require.Equal(t, StopEOS, res.StopReason)
	}
}

// deadEnd allows the tokens of seq, then none: a grammar that the
// vocabulary cannot continue.
type deadEnd struct{ onlyIDs }

func (c *deadEnd) Mask(logits []float32) {
	if c.pos < len(c.seq) {
		c.onlyIDs.Mask(logits)
		return
	}
	for i := range logits {
		logits[i] = float32(math.Inf(-1))
	}
}

func (c *deadEnd) Done() bool { return false }

// TestConstraintDeadEnd: a constraint that allows no token ends the
// generation with ErrConstraint, after the tokens it allowed; it said the
// model's weights were broken (ErrBadModel).
func TestConstraintDeadEnd(t *testing.T) {
	m := loadStories(t)
	s := m.NewSession()
	prompt := m.Tokenizer().Encode("Once upon a time", true, false)
	want := m.Tokenizer().Encode("the end", false, false)
	for _, sp := range []SampleParams{{}, {Temperature: 1, Seed: 2, RepeatPenalty: 1.3}} {
		ids, _, _, err := collect(t, s, GenerateRequest{Prompt: prompt, MaxTokens: 50, Sample: sp, Constraint: &deadEnd{onlyIDs{seq: want}}})
		require.ErrorIs(t, err, ErrConstraint)
		require.NotErrorIs(t, err, ErrBadModel)
		require.Contains(t, err.Error(), fmt.Sprintf("after %d tokens", len(want)))
		require.Equal(t, want, ids)
	}
}

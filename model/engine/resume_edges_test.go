package engine

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type rec struct {
	id   int32
	text string
}

func runRecs(t *testing.T, s *Session, req GenerateRequest) ([]rec, Result) {
	var out []rec
	res, err := s.Generate(context.Background(), req, func(tk Token) error {
		out = append(out, rec{tk.ID, tk.Text})
		return nil
	})
	require.NoError(t, err)
	return out, res
}

func joinText(rs []rec) string {
	var sb strings.Builder
	for _, r := range rs {
		sb.WriteString(r.text)
	}
	return sb.String()
}

// Resume after every token (max_tokens reached), with the last token's text
// held back by a stop-string prefix: the original flushes it, the resume
// does not.
func TestResumeAtMaxTokensFlushesHeldText(t *testing.T) {
	m := loadStories(t)
	tok := m.Tokenizer()
	prompt := tok.Encode("Once upon a time", tok.AddBOS(), true)
	base, _ := runRecs(t, m.NewSession(), GenerateRequest{Prompt: prompt, MaxTokens: 10})
	last := base[len(base)-1]
	require.NotEmpty(t, strings.TrimSpace(last.text))
	req := GenerateRequest{Prompt: prompt, MaxTokens: 10, Stop: []string{last.text + "\x01"}}
	full, fres := runRecs(t, m.NewSession(), req)
	t.Logf("full: %q reason=%s", full, fres.StopReason)
	var ids []int32
	for _, r := range full {
		if r.id >= 0 {
			ids = append(ids, r.id)
		}
	}
	rreq := req
	rreq.Prompt = append(append([]int32(nil), prompt...), ids...)
	rreq.Resume = len(ids)
	rest, rres := runRecs(t, m.NewSession(), rreq)
	t.Logf("resumed rest: %q reason=%s", rest, rres.StopReason)
	var sent strings.Builder
	for _, r := range full {
		if r.id >= 0 {
			sent.WriteString(r.text)
		}
	}
	require.Equal(t, joinText(full), sent.String()+joinText(rest), "held-back text lost on resume after the last token")
}

// doneThen: fixed sequence, then (Done) only `after` may follow (as the
// grammar allows whitespace after a complete document).
type doneThen struct {
	seq   []int32
	pos   int
	after int32
}

func (c *doneThen) Mask(l []float32) {
	for i := range l {
		if c.pos < len(c.seq) && int32(i) != c.seq[c.pos] || c.pos >= len(c.seq) && int32(i) != c.after {
			l[i] = float32(math.Inf(-1))
		}
	}
}
func (c *doneThen) Accept(id int32) error {
	if c.pos < len(c.seq) {
		if id != c.seq[c.pos] {
			return ErrBadRequest
		}
		c.pos++
		return nil
	}
	if id != c.after {
		return ErrBadRequest
	}
	return nil
}
func (c *doneThen) Done() bool { return c.pos >= len(c.seq) }

func TestResumeAfterCompleteConstraintEnds(t *testing.T) {
	m := loadStories(t)
	tok := m.Tokenizer()
	prompt := tok.Encode("Once upon a time", true, false)
	want := tok.Encode("the end", false, false)
	sp := tok.Encode(" ", false, false)
	full, fres := runRecs(t, m.NewSession(), GenerateRequest{Prompt: prompt, MaxTokens: 20, Constraint: &doneThen{seq: want, after: sp[len(sp)-1]}})
	require.Equal(t, StopEOS, fres.StopReason)
	rreq := GenerateRequest{Prompt: append(append([]int32(nil), prompt...), want...), Resume: len(want), MaxTokens: 20, Constraint: &doneThen{seq: want, after: sp[len(sp)-1]}}
	rest, rres := runRecs(t, m.NewSession(), rreq)
	t.Logf("full=%q rest=%q reason=%s/%s completion=%d/%d", full, rest, fres.StopReason, rres.StopReason, fres.CompletionTokens, rres.CompletionTokens)
	require.Empty(t, rest, "resume of a complete constrained output emits more tokens")
	require.Equal(t, fres.CompletionTokens, rres.CompletionTokens)
}

// Resume inside a batch, next to a prefilling long prompt and a decoding
// seeded sequence, with logprobs on: equals the uninterrupted run alone.
func TestBatchedResumeMatchesAlone(t *testing.T) {
	m := loadStories(t)
	tok := m.Tokenizer()
	seeded := SampleParams{Temperature: 0.9, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, Seed: 11}
	prompt := tok.Encode("The little dog", true, false)
	req := GenerateRequest{Prompt: prompt, MaxTokens: 30, Sample: seeded, Logprobs: true, TopLogprobs: 3, Stop: []string{"zzq"}}
	var full []Token
	_, err := m.NewSession().Generate(context.Background(), req, func(tk Token) error { full = append(full, tk); return nil })
	require.NoError(t, err)
	k := 9
	var ids []int32
	for _, tk := range full[:k] {
		ids = append(ids, tk.ID)
	}
	rreq := req
	rreq.Prompt = append(append([]int32(nil), prompt...), ids...)
	rreq.Resume = k
	others := []GenerateRequest{
		{Prompt: tok.Encode(strings.Repeat("Lily and Ben went to the park. ", 14), true, false), MaxTokens: 10, Logprobs: true, TopLogprobs: 5},
		{Prompt: tok.Encode("Tom had", true, false), MaxTokens: 30, Sample: SampleParams{Temperature: 1, Seed: 3}, Logprobs: true},
	}
	b := m.NewBatch()
	var seqs []*Sequence
	for _, o := range others {
		q, err := m.NewSession().Begin(o)
		require.NoError(t, err)
		seqs = append(seqs, q)
	}
	rq, err := m.NewSession().Begin(rreq)
	require.NoError(t, err)
	seqs = append(seqs, rq)
	var got []Token
	for !rq.Done() {
		require.NoError(t, b.Step(seqs))
		got = append(got, rq.Tokens()...)
	}
	require.Equal(t, len(full[k:]), len(got))
	for i := range got {
		require.Equal(t, full[k+i].ID, got[i].ID, "token %d", i)
		require.Equal(t, full[k+i].Text, got[i].Text)
		require.Equal(t, full[k+i].Index, got[i].Index)
		require.InDelta(t, full[k+i].Logprob, got[i].Logprob, 1e-4)
	}
}

package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// batchCase is one sequence of TestBatchMatchesAlone: it joins the batch at
// step join and is cancelled at step cancel (0: never).
type batchCase struct {
	text   string
	repeat int // the text is repeated this many times (long prompts are chunked)
	req    GenerateRequest
	join   int
	cancel int
}

type seqOut struct {
	ids  []int32
	text string
	res  Result
}

func (o *seqOut) add(tk Token) {
	if tk.ID >= 0 {
		o.ids = append(o.ids, tk.ID)
	}
	o.text += tk.Text
}

// TestBatchMatchesAlone: sequences of different prompts decoded together in
// one Batch (greedy and seeded sampling, joining and leaving at different
// steps, one prompt longer than a prefill chunk, one cancelled mid-way)
// produce exactly the tokens, text and stop reasons they produce alone; a
// follow-up turn on a batched Session reuses its cache and matches a fresh
// Session.
func TestBatchMatchesAlone(t *testing.T) {
	for _, path := range []string{storiesPath, "../../testdata/gguf/kquant/kquant-Q4_K.gguf", stories260KQ4_0} {
		t.Run(path[strings.LastIndex(path, "/")+1:], func(t *testing.T) {
			m, err := Load(path, Options{Threads: 2, ContextSize: 512})
			require.NoError(t, err)
			defer m.Close()
			tok := m.Tokenizer()
			seeded := SampleParams{Temperature: 0.9, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, Seed: 7}
			cases := []batchCase{
				{text: "Once upon a time", req: GenerateRequest{MaxTokens: 12}},
				{text: "The little dog", req: GenerateRequest{MaxTokens: 30, Sample: seeded}},
				{text: "Lily and Ben went to the park. ", repeat: 12, req: GenerateRequest{MaxTokens: 20}, join: 2},
				{text: "Tom had a red ball", req: GenerateRequest{MaxTokens: 25, Sample: SampleParams{Temperature: 0.7, Seed: 3}}, join: 5},
				{text: "One day", req: GenerateRequest{MaxTokens: 40}, join: 1, cancel: 9},
				{text: "The sun", req: GenerateRequest{MaxTokens: 16, Stop: []string{"."}}, join: 3},
			}
			for i := range cases {
				c := &cases[i]
				c.req.Prompt = tok.Encode(strings.Repeat(c.text, max(c.repeat, 1)), true, false)
			}
			require.Greater(t, len(cases[2].req.Prompt), prefillChunk, "one prompt spans several chunks")

			alone := make([]seqOut, len(cases))
			for i, c := range cases {
				if c.cancel > 0 {
					continue
				}
				s := m.NewSession()
				res, err := s.Generate(context.Background(), c.req, func(tk Token) error { alone[i].add(tk); return nil })
				require.NoError(t, err)
				alone[i].res = res
			}

			b := m.NewBatch()
			sessions := make([]*Session, len(cases))
			seqs := make([]*Sequence, len(cases))
			got := make([]seqOut, len(cases))
			var active []*Sequence
			for step := 0; ; step++ {
				for i, c := range cases {
					if c.join == step {
						sessions[i] = m.NewSession()
						seqs[i], err = sessions[i].Begin(c.req)
						require.NoError(t, err)
						active = append(active, seqs[i])
					}
					if c.cancel > 0 && c.cancel == step {
						seqs[i].Cancel()
					}
				}
				if len(active) == 0 && step > 6 {
					break
				}
				require.NoError(t, b.Step(active))
				kept := active[:0]
				for _, q := range active {
					i := indexOf(seqs, q)
					for _, tk := range q.Tokens() {
						got[i].add(tk)
					}
					if q.Done() {
						got[i].res = q.Result()
						continue
					}
					kept = append(kept, q)
				}
				active = kept
			}
			for i, c := range cases {
				if c.cancel > 0 {
					require.Equal(t, StopCancelled, got[i].res.StopReason)
					continue
				}
				require.Equal(t, alone[i].ids, got[i].ids, "sequence %d ids", i)
				require.Equal(t, alone[i].text, got[i].text, "sequence %d text", i)
				require.Equal(t, alone[i].res.StopReason, got[i].res.StopReason, "sequence %d", i)
				require.Equal(t, alone[i].res.CompletionTokens, got[i].res.CompletionTokens, "sequence %d", i)
			}

			// Second turn: prompt + answer + more, on the batched Session
			// (cache reused) and on a fresh one.
			c := cases[1]
			next := append(append(append([]int32(nil), c.req.Prompt...), got[1].ids...), tok.Encode(" Then", false, false)...)
			reused := sessions[1].CommonPrefix(next)
			require.GreaterOrEqual(t, reused, len(c.req.Prompt))
			req := GenerateRequest{Prompt: next, MaxTokens: 10}
			var warm, cold seqOut
			_, err = sessions[1].Generate(context.Background(), req, func(tk Token) error { warm.add(tk); return nil })
			require.NoError(t, err)
			_, err = m.NewSession().Generate(context.Background(), req, func(tk Token) error { cold.add(tk); return nil })
			require.NoError(t, err)
			require.Equal(t, cold.ids, warm.ids)
		})
	}
}

func indexOf(seqs []*Sequence, q *Sequence) int {
	for i, s := range seqs {
		if s == q {
			return i
		}
	}
	return -1
}

// TestBatchStepErrors: a closed model fails the step and leaves the
// sequences as they were; Begin refuses bad requests without touching the
// Session.
func TestBatchStepErrors(t *testing.T) {
	m, err := Load(storiesPath, Options{Threads: 1})
	require.NoError(t, err)
	s := m.NewSession()
	_, err = s.eval(context.Background(), []int32{1, 300, 301})
	require.NoError(t, err)
	_, err = s.Begin(GenerateRequest{Prompt: []int32{1, 9999}})
	require.ErrorIs(t, err, ErrBadRequest)
	require.Equal(t, []int32{1, 300, 301}, s.Tokens())
	q, err := s.Begin(GenerateRequest{Prompt: []int32{1, 300, 302}, MaxTokens: 4})
	require.NoError(t, err)
	require.True(t, q.Prefilling())
	require.NoError(t, m.Close())
	require.ErrorIs(t, m.NewBatch().Step([]*Sequence{q}), ErrClosed)
	require.False(t, q.Done())
	require.True(t, q.Prefilling())
}

// TestBatchDecodeDoesNotAllocate: a batched decode step (one forward pass
// over several sessions' rows, then sampling each) reuses the Batch's and
// Sessions' buffers once they have grown.
func TestBatchDecodeDoesNotAllocate(t *testing.T) {
	m, err := Load("../../testdata/gguf/kquant/kquant-Q4_K.gguf", Options{Threads: 2, ContextSize: 512})
	require.NoError(t, err)
	defer m.Close()
	b := m.NewBatch()
	p := SampleParams{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1}
	var plan []segment
	for i := 0; i < 4; i++ {
		s := m.NewSession()
		_, err := s.eval(context.Background(), []int32{1, int32(300 + i), 301})
		require.NoError(t, err)
		plan = append(plan, segment{s: s, ids: s.one[:], logits: true})
	}
	step := func() {
		for i := range plan {
			plan[i].s.one[0] = 300
		}
		if err := b.forward(context.Background(), plan); err != nil {
			panic(err)
		}
		for i := range plan {
			sg := &plan[i]
			sg.s.one[0] = sg.s.smp.sample(b.logitsOf(sg), p, sg.s.tokens)
		}
	}
	step() // grow the Batch's buffers
	require.Zero(t, testing.AllocsPerRun(50, step))
}

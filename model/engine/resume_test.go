package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestResumeContinuesExactly interrupts a generation after every possible
// token and resumes it on a fresh session (as another worker would) from
// the prompt plus the ids generated so far: the concatenated text, ids and
// counts equal the uninterrupted run, for greedy and seeded sampling, and
// with a stop string that straddles the break.
func TestResumeContinuesExactly(t *testing.T) {
	m := loadStories(t)
	tok := m.Tokenizer()
	prompt := tok.Encode("Once upon a time", tok.AddBOS(), true)
	type tokenRec struct {
		id   int32
		text string
		idx  int
	}
	run := func(s *Session, req GenerateRequest) ([]tokenRec, Result) {
		var out []tokenRec
		res, err := s.Generate(context.Background(), req, func(tk Token) error {
			out = append(out, tokenRec{tk.ID, tk.Text, tk.Index})
			return nil
		})
		require.NoError(t, err)
		return out, res
	}
	text := func(rs []tokenRec) string {
		var sb strings.Builder
		for _, r := range rs {
			sb.WriteString(r.text)
		}
		return sb.String()
	}
	cases := []struct {
		name   string
		sample SampleParams
		stop   []string
	}{
		{"greedy", SampleParams{}, nil},
		{"seeded", SampleParams{Temperature: 1, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, Seed: 42}, nil},
		{"seeded, stop string", SampleParams{Temperature: 0.9, Seed: 7}, nil}, // stop filled in below
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := GenerateRequest{Prompt: prompt, MaxTokens: 40, Sample: c.sample, Stop: c.stop}
			full, fullRes := run(m.NewSession(), req)
			require.NotEmpty(t, full)
			if i == 2 {
				// A stop string spanning two tokens in the middle of the text.
				var ids []int32
				for _, r := range full {
					ids = append(ids, r.id)
				}
				k := len(full) / 2
				st := strings.TrimSpace(tok.Decode(ids[k-1 : k+1]))
				require.NotEmpty(t, st)
				req.Stop = []string{st}
				full, fullRes = run(m.NewSession(), req)
				require.Equal(t, StopString, fullRes.StopReason)
			}
			want := text(full)
			for k := 1; k < len(full); k++ {
				var gen []int32
				for _, r := range full[:k] {
					require.GreaterOrEqual(t, r.id, int32(0))
					gen = append(gen, r.id)
				}
				rreq := req
				rreq.Prompt = append(append([]int32(nil), prompt...), gen...)
				rreq.Resume = k
				rest, res := run(m.NewSession(), rreq)
				require.Equal(t, want, text(full[:k])+text(rest), "resumed after %d tokens", k)
				require.Equal(t, full[k:], rest, "resumed after %d tokens", k)
				require.Equal(t, fullRes.StopReason, res.StopReason)
				require.Equal(t, fullRes.CompletionTokens, res.CompletionTokens)
				require.Equal(t, fullRes.PromptTokens, res.PromptTokens)
			}
		})
	}
	t.Run("bad resume", func(t *testing.T) {
		for _, r := range []int{-1, len(prompt)} {
			_, _, _, err := collect(t, m.NewSession(), GenerateRequest{Prompt: prompt, MaxTokens: 4, Resume: r})
			require.ErrorIs(t, err, ErrBadRequest)
		}
	})
}

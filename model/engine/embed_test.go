package engine

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEmbed(t *testing.T) {
	m := loadStories(t)
	tok := m.Tokenizer()
	enc := func(s string) []int32 { return tok.Encode(s, tok.AddBOS(), false) }
	s := m.NewSession()
	ctx := context.Background()

	a, err := s.Embed(ctx, enc("Once upon a time"))
	require.NoError(t, err)
	require.Len(t, a, m.Info().Dim)
	var norm float64
	for _, v := range a {
		norm += float64(v) * float64(v)
	}
	require.InDelta(t, 1, math.Sqrt(norm), 1e-4, "L2-normalised")

	// Deterministic, whatever the session held before; another text
	// differs; a prompt longer than one forward batch pools every batch.
	b, err := m.NewSession().Embed(ctx, enc("Once upon a time"))
	require.NoError(t, err)
	require.Equal(t, a, b)
	c, err := s.Embed(ctx, enc("The cat sat on the mat"))
	require.NoError(t, err)
	require.NotEqual(t, a, c)
	long := enc(strings.Repeat("Lily went to the park. ", 40))
	require.Greater(t, len(long), promptBatch)
	d, err := s.Embed(ctx, long)
	require.NoError(t, err)
	require.Len(t, d, m.Info().Dim)

	// The session generates after an embedding as a fresh one does.
	req := GenerateRequest{Prompt: enc("Once upon a time"), MaxTokens: 8}
	var got, want strings.Builder
	_, err = s.Generate(ctx, req, func(tk Token) error { got.WriteString(tk.Text); return nil })
	require.NoError(t, err)
	_, err = m.NewSession().Generate(ctx, req, func(tk Token) error { want.WriteString(tk.Text); return nil })
	require.NoError(t, err)
	require.Equal(t, want.String(), got.String())

	_, err = s.Embed(ctx, nil)
	require.ErrorIs(t, err, ErrEmptyPrompt)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.Embed(cctx, long)
	require.ErrorIs(t, err, context.Canceled)
}

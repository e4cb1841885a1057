package tokenizer

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// specialVocab is an SPM vocabulary with the byte tokens and the given
// texts as tokens of type typ.
func specialVocab(t *testing.T, texts []string, typ int32) (*Tokenizer, error) {
	t.Helper()
	return mixedVocab(t, texts, func(int) int32 { return typ })
}

// mixedVocab is specialVocab with text i of type typ(i).
func mixedVocab(t *testing.T, texts []string, typ func(i int) int32) (*Tokenizer, error) {
	t.Helper()
	tokens := []string{"<unk>", "<s>", "</s>"}
	types := []int32{2, 3, 3}
	for b := 0; b < 256; b++ {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b))
		types = append(types, 6)
	}
	tokens = append(tokens, "▁", "x")
	types = append(types, 1, 1)
	for i, s := range texts {
		tokens = append(tokens, s)
		types = append(types, typ(i))
	}
	return tryVocab(t, map[string]any{
		"tokenizer.ggml.model":      "llama",
		"tokenizer.ggml.tokens":     tokens,
		"tokenizer.ggml.scores":     make([]float32, len(tokens)),
		"tokenizer.ggml.token_type": types,
	})
}

// TestSpecialIndexSameSplit: with more than manySpecials special tokens,
// partition tries only those the index finds in the text, and splits the
// text exactly as trying every token does (overlapping texts, prefixes,
// suffixes, repeats, both token types).
func TestSpecialIndexSameSplit(t *testing.T) {
	texts := []string{"<a>", "<a", "a>", "<", "<ab>", "b", "ab", "bab", "<a><a>", "aaa", "a a"}
	for i := 0; len(texts) <= manySpecials+10; i++ {
		texts = append(texts, fmt.Sprintf("<f%d>", i))
	}
	// Control (3), user-defined (4), and both, alternating: a control
	// token is not tried without parseSpecial, its user-defined twin is.
	for _, typ := range []int32{3, 4, 0} {
		tok, err := mixedVocab(t, texts, func(i int) int32 {
			if typ == 0 {
				return int32(3 + i%2)
			}
			return typ
		})
		require.NoError(t, err)
		require.NotNil(t, tok.specials)
		idx := tok.specials
		rng := rand.New(rand.NewPCG(1, uint64(typ)))
		const alphabet = "<ab> xf1"
		for n := 0; n < 2000; n++ {
			var b strings.Builder
			for range rng.IntN(40) {
				if rng.IntN(8) == 0 {
					b.WriteString(texts[rng.IntN(len(texts))])
				} else {
					b.WriteByte(alphabet[rng.IntN(len(alphabet))])
				}
			}
			s := b.String()
			for _, parse := range []bool{false, true} {
				tok.specials = idx
				got := tok.partition(s, parse, nil)
				tok.specials = nil
				want := tok.partition(s, parse, nil)
				require.Equal(t, want, got, "type %d, text %q, parseSpecial %v", typ, s, parse)
			}
		}
		tok.specials = idx
	}
}

// TestManySpecialTokens: a vocabulary of 100k user-defined tokens made each
// Encode scan the text once per token (a minute for 100 KB of text); now
// one pass finds the few that occur. A vocabulary whose special tokens
// hold more than maxSpecialBytes is refused, naming the sizes.
func TestManySpecialTokens(t *testing.T) {
	texts := make([]string, 100_000)
	for i := range texts {
		texts[i] = fmt.Sprintf("<c%d>", i)
	}
	tok, err := specialVocab(t, texts, 4)
	require.NoError(t, err)
	text := strings.Repeat("<c x <a b> hello <c42> world ", 4000) // 116 KB
	start := time.Now()
	ids := tok.Encode(text, false, false)
	require.Less(t, time.Since(start), 5*time.Second)
	n := 0
	for _, id := range ids {
		if id == tok.ids["<c42>"] {
			n++
		}
	}
	require.Equal(t, 4000, n)

	big := make([]string, manySpecials+1)
	for i := range big {
		big[i] = fmt.Sprintf("<%d%s>", i, strings.Repeat("y", maxSpecialBytes/manySpecials))
	}
	_, err = specialVocab(t, big, 3)
	require.ErrorIs(t, err, ErrBadMetadata)
	require.ErrorContains(t, err, "special")
}

// TestWrongTypedVocabKeys: a vocabulary key present with the wrong type
// is ErrBadMetadata naming it; before, scores and token types of the
// wrong type were silently dropped (every token normal, <s> included),
// and tokens of the wrong type were reported as missing.
func TestWrongTypedVocabKeys(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{
			"tokenizer.ggml.model":      "llama",
			"tokenizer.ggml.tokens":     []string{"<unk>", "<s>", "</s>", "a"},
			"tokenizer.ggml.scores":     []float32{0, 0, 0, 0},
			"tokenizer.ggml.token_type": []int32{2, 3, 3, 1},
		}
	}
	for _, tc := range []struct {
		key string
		v   any
	}{
		{"tokenizer.ggml.tokens", []uint32{1, 2, 3, 4}},
		{"tokenizer.ggml.tokens", "<unk>"},
		{"tokenizer.ggml.scores", []string{"0", "0", "0", "0"}},
		{"tokenizer.ggml.scores", float32(0)},
		{"tokenizer.ggml.token_type", []string{"2", "3", "3", "1"}},
		{"tokenizer.ggml.token_type", []float32{2, 3, 3, 1}},
		{"tokenizer.ggml.token_type", []int64{2, 3, 3, 1 << 40}},
		{"tokenizer.ggml.merges", []uint8{1}},
	} {
		t.Run(fmt.Sprintf("%s %T", tc.key, tc.v), func(t *testing.T) {
			kvs := base()
			kvs[tc.key] = tc.v
			if tc.key == "tokenizer.ggml.merges" {
				kvs["tokenizer.ggml.model"] = "gpt2"
				kvs["tokenizer.ggml.pre"] = "gpt-2"
			}
			_, err := tryVocab(t, kvs)
			require.ErrorIs(t, err, ErrBadMetadata)
			require.ErrorContains(t, err, tc.key)
		})
	}
	_, err := tryVocab(t, base())
	require.NoError(t, err)
}

// TestEncodeLiteral: a control token's text that overlaps a literal range,
// even by one byte, is plain text; outside the ranges it is the token; a
// user-defined token is matched either way (as Encode without
// parseSpecial does). SpecialSpans finds what EncodeLiteral may refuse.
func TestEncodeLiteral(t *testing.T) {
	tok, err := mixedVocab(t, []string{"<c>", "<u>"}, func(i int) int32 { return int32(3 + i) })
	require.NoError(t, err)
	ctl, ok := tok.TokenID("<c>")
	require.True(t, ok)
	usr, ok := tok.TokenID("<u>")
	require.True(t, ok)
	text := "<c>x<c>x<c><u>"
	cases := []struct {
		name    string
		literal [][2]int
		want    []int32 // the special ids, in order
	}{
		{"no ranges", nil, []int32{ctl, ctl, ctl, usr}},
		{"second token", [][2]int{{4, 7}}, []int32{ctl, ctl, usr}},
		{"one byte of the first", [][2]int{{2, 3}}, []int32{ctl, ctl, usr}},
		{"ranges around", [][2]int{{0, 0}, {3, 4}, {7, 8}}, []int32{ctl, ctl, ctl, usr}},
		{"everything", [][2]int{{0, len(text)}}, []int32{usr}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []int32
			for _, id := range tok.EncodeLiteral(text, false, c.literal) {
				if id == ctl || id == usr {
					got = append(got, id)
				}
			}
			require.Equal(t, c.want, got)
		})
	}
	require.Equal(t, tok.Encode(text, false, false), tok.EncodeLiteral(text, false, [][2]int{{0, len(text)}}))
	require.Equal(t, tok.Encode(text, false, true), tok.EncodeLiteral(text, false, nil))
	require.Equal(t, [][2]int{{0, 3}, {4, 7}, {8, 11}}, tok.SpecialSpans(text))
	require.Empty(t, tok.SpecialSpans("x<u>x"))
}

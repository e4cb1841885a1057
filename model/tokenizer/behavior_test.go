package tokenizer

import (
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/stretchr/testify/require"
)

// writeVocab writes a vocab-only GGUF with the given tokenizer keys and
// loads it back through gguf.Open, like a real model file.
func writeVocab(t testing.TB, kvs map[string]any) *Tokenizer {
	t.Helper()
	tok, err := tryVocab(t, kvs)
	require.NoError(t, err)
	return tok
}

func tryVocab(t testing.TB, kvs map[string]any) (*Tokenizer, error) {
	t.Helper()
	w := gguf.NewWriter()
	require.NoError(t, w.AddKV("general.architecture", "llama"))
	for k, v := range kvs {
		require.NoError(t, w.AddKV(k, v))
	}
	path := filepath.Join(t.TempDir(), "vocab.gguf")
	require.NoError(t, w.WriteFile(path))
	f, err := gguf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	return FromGGUF(f)
}

// byteLevelAlphabet returns the 256 single-byte tokens of a byte-level BPE vocab.
func byteLevelAlphabet() []string {
	out := make([]string, 256)
	for b := range out {
		out[b] = string(byteLevel.toRune[b])
	}
	return out
}

func TestIgnoreMerges(t *testing.T) {
	tokens := append(byteLevelAlphabet(), "Ġw", "xyz", "xy")
	merges := []string{"Ġ w", "x y"}
	for _, tc := range []struct {
		pre  string
		want []string
	}{
		{"llama-bpe", []string{"xyz", "Ġw"}}, // whole pre-token is a token: used as is
		{"dbrx", []string{"xy", "z", "Ġw"}},  // same split, but merges only
	} {
		tok := writeVocab(t, map[string]any{
			"tokenizer.ggml.model":  "gpt2",
			"tokenizer.ggml.pre":    tc.pre,
			"tokenizer.ggml.tokens": tokens,
			"tokenizer.ggml.merges": merges,
		})
		var got []string
		for _, id := range tok.Encode("xyz w", false, false) {
			got = append(got, tok.TokenText(id))
		}
		require.Equal(t, tc.want, got, tc.pre)
		require.Equal(t, "xyz w", tok.Decode(tok.Encode("xyz w", false, false)))
	}
}

func TestMetadataDefaults(t *testing.T) {
	tokens := append(byteLevelAlphabet(), "<|begin_of_text|>", "<|eot_id|>")
	base := func(pre string) map[string]any {
		return map[string]any{
			"tokenizer.ggml.model":        "gpt2",
			"tokenizer.ggml.pre":          pre,
			"tokenizer.ggml.tokens":       tokens,
			"tokenizer.ggml.merges":       []string{},
			"tokenizer.ggml.bos_token_id": uint32(256),
		}
	}
	tok := writeVocab(t, base("llama-bpe"))
	require.True(t, tok.AddBOS(), "llama3 adds BOS by default")
	require.Equal(t, int32(256), tok.BOS())
	require.Equal(t, int32(257), tok.EOT(), "found by its text")
	require.True(t, tok.IsEOG(257))
	require.True(t, tok.IsControl(257))
	require.Empty(t, tok.Warnings())

	tok = writeVocab(t, base("qwen2"))
	require.False(t, tok.AddBOS(), "BPE vocabs do not add BOS by default")
	require.Equal(t, []int32{256, 'h', 'i'}, tok.Encode("hi", true, false))

	kv := base("qwen2")
	kv["tokenizer.ggml.add_bos_token"] = true
	require.True(t, writeVocab(t, kv).AddBOS())

	tok = writeVocab(t, base("no-such-pre"))
	require.Len(t, tok.Warnings(), 1)
	require.Contains(t, tok.Warnings()[0], "no-such-pre")
	require.Equal(t, "no-such-pre", tok.Pre())

	kv = base("gpt-2")
	kv["tokenizer.ggml.eos_token_id"] = uint32(99999)
	tok = writeVocab(t, kv)
	require.Equal(t, int32(11), tok.EOS(), "out-of-range id keeps the default")
	require.Len(t, tok.Warnings(), 1)
}

func TestFromGGUFErrors(t *testing.T) {
	tests := []struct {
		name string
		kvs  map[string]any
		want error
	}{
		{"no model", map[string]any{"tokenizer.ggml.tokens": []string{"a"}}, ErrNoVocab},
		{"no tokens", map[string]any{"tokenizer.ggml.model": "llama"}, ErrNoVocab},
		{"unknown model", map[string]any{"tokenizer.ggml.model": "plamo2", "tokenizer.ggml.tokens": []string{"a"}}, ErrUnsupported},
		{"duplicate", map[string]any{"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": []string{"a", "a"}}, ErrBadMetadata},
		{"short scores", map[string]any{"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": []string{"a", "b"},
			"tokenizer.ggml.scores": []float32{1}}, ErrBadMetadata},
		{"short types", map[string]any{"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": []string{"a", "b"},
			"tokenizer.ggml.token_type": []int32{1}}, ErrBadMetadata},
		{"no merges", map[string]any{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": []string{"a"}}, ErrBadMetadata},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryVocab(t, tc.kvs)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestSpecialTokens(t *testing.T) {
	t.Run("qwen2", func(t *testing.T) {
		tok := loadVocab(t, "qwen2")
		start, ok := tok.TokenID("<|im_start|>")
		require.True(t, ok)
		end, _ := tok.TokenID("<|im_end|>")
		text := "<|im_start|>user\nhi<|im_end|>"
		ids := tok.Encode(text, false, true)
		require.Equal(t, start, ids[0])
		require.Equal(t, end, ids[len(ids)-1])
		require.Equal(t, "user\nhi", tok.Decode(ids), "control tokens render as nothing")
		plain := tok.Encode(text, false, false)
		require.NotContains(t, plain, start)
		require.Equal(t, text, tok.Decode(plain))
		require.True(t, tok.IsEOG(end), "<|im_end|> is an end-of-generation token")
		require.True(t, tok.IsEOG(tok.EOS()))
		require.False(t, tok.IsEOG(start))
		require.False(t, tok.AddBOS())
		require.Equal(t, int32(151643), tok.BOS())
		require.Equal(t, 151936, tok.VocabSize())
		require.Equal(t, "", tok.Piece(151700), "padding tokens render as nothing")
	})
	t.Run("llama-spm", func(t *testing.T) {
		tok := loadVocab(t, "llama-spm")
		require.True(t, tok.AddBOS())
		require.Equal(t, int32(1), tok.BOS())
		require.Equal(t, int32(2), tok.EOS())
		require.Equal(t, []int32{1, 15043, 3186}, tok.Encode("Hello world", true, false))
		// After a special token the dummy-prefix space is added again.
		require.Equal(t, []int32{1, 15043, 2}, tok.Encode("<s>Hello</s>", false, true))
		plain := tok.Encode("<s>Hello", false, false)
		require.NotContains(t, plain, int32(1))
		require.Equal(t, "<s>Hello", tok.Decode(plain))
		require.True(t, tok.IsEOG(2))
		require.Equal(t, " Hello", tok.Piece(15043))
		require.Equal(t, "\n", tok.Piece(13))
		require.Equal(t, "", tok.Piece(1))
		require.Equal(t, "", tok.Piece(-1))
		require.Equal(t, "", tok.Piece(1<<20))
		id, ok := tok.TokenID("▁Hello")
		require.True(t, ok)
		require.Equal(t, int32(15043), id)
	})
	t.Run("longest match first", func(t *testing.T) {
		tok := writeVocab(t, map[string]any{
			"tokenizer.ggml.model":      "gpt2",
			"tokenizer.ggml.pre":        "gpt-2",
			"tokenizer.ggml.tokens":     append(byteLevelAlphabet(), "<a>", "<a><b>", "<u>"),
			"tokenizer.ggml.token_type": append(make([]int32, 256), typeControl, typeControl, typeUserDefined),
			"tokenizer.ggml.merges":     []string{},
		})
		require.Equal(t, []int32{257, 256}, tok.Encode("<a><b><a>", false, true))
		// User-defined tokens are matched even without parseSpecial.
		require.Equal(t, []int32{'x', 258}, tok.Encode("x<u>", false, false))
	})
}

// TestRoundTrip decodes the encoding of every vector input back to the input.
func TestRoundTrip(t *testing.T) {
	for _, name := range vocabNames(t) {
		tok := loadVocab(t, name)
		if !exactFamily(tok) {
			continue
		}
		tests, _ := readVectors(t, vocabPath(t, name))
		for _, s := range tests {
			require.Equal(t, s, tok.Decode(tok.Encode(s, false, false)), "%s: %q", name, s)
			require.Equal(t, s, tok.Decode(tok.Encode(s, true, false)), "%s with BOS: %q", name, s)
		}
	}
}

func TestStreamDecoder(t *testing.T) {
	tok := loadVocab(t, "llama-spm")
	text := "Hello 🦙 wörld 我想在apple工作 😁"
	ids := tok.Encode(text, false, false)
	d := tok.NewStreamDecoder()
	var b strings.Builder
	held := false
	for _, id := range ids {
		s := d.Next(id)
		require.True(t, utf8.ValidString(s), "chunk %q", s)
		if s == "" && tok.Piece(id) != "" {
			held = true
		}
		b.WriteString(s)
	}
	b.WriteString(d.Flush())
	require.True(t, held, "the emoji are byte tokens, so some bytes must have been held back")
	require.Equal(t, " "+text, b.String(), "pieces keep the SentencePiece space")

	// Incomplete at the end: flushed as U+FFFD; a byte that can never be
	// valid comes out at once as U+FFFD.
	e2, _ := tok.TokenID("<0xE2>")
	b96, _ := tok.TokenID("<0x96>")
	ff, _ := tok.TokenID("<0xFF>")
	d = tok.NewStreamDecoder()
	require.Equal(t, "", d.Next(e2))
	require.Equal(t, "", d.Next(b96))
	require.Equal(t, "\uFFFD\uFFFD", d.Flush())
	require.Equal(t, "", d.Flush())
	require.Equal(t, "\uFFFD", d.Next(ff))
	require.Equal(t, " Hello", d.Next(15043))
}

func TestPieceSpecial(t *testing.T) {
	tok := loadVocab(t, "qwen2")
	end, _ := tok.TokenID("<|im_end|>")
	require.Equal(t, "", tok.Piece(end))
	require.Equal(t, "<|im_end|>", tok.PieceSpecial(end))
	require.Equal(t, "", tok.PieceSpecial(151700), "unused padding stays empty")
	hello := tok.Encode(" Hello", false, false)
	require.Len(t, hello, 1)
	require.Equal(t, " Hello", tok.PieceSpecial(hello[0]))
}

// TestConcurrentEncode shares one Tokenizer between goroutines (run with -race).
func TestConcurrentEncode(t *testing.T) {
	tok := loadVocab(t, "qwen2")
	text := benchText()[:600]
	want := tok.Encode(text, false, true)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if got := tok.Encode(text, false, true); !slices.Equal(got, want) {
					errs <- "concurrent Encode differs"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// TestEveryTokenAndCodepoint is in the spirit of llama.cpp's
// test-tokenizer-1-{bpe,spm}: every normal token's text, and every Unicode
// scalar value, survives Decode(Encode(x)).
func TestEveryTokenAndCodepoint(t *testing.T) {
	for _, name := range vocabNames(t) {
		tok := loadVocab(t, name)
		if !exactFamily(tok) {
			continue
		}
		bad := 0
		for id := range int32(tok.VocabSize()) {
			if tok.attrs[id]&attrNormal == 0 {
				continue
			}
			s := tok.Decode([]int32{id})
			if !utf8.ValidString(s) || (tok.kind == kindSPM && strings.ContainsRune(s, '▁')) {
				continue
			}
			if got := tok.Decode(tok.Encode(s, false, true)); got != s {
				bad++
				if bad < 5 {
					t.Errorf("%s: token %d %q round-trips to %q", name, id, s, got)
				}
			}
		}
		// Every BMP code point; the supplementary planes sampled.
		for r := rune(0); r <= utf8.MaxRune; r++ {
			if r > 0xFFFF {
				r += 96
			}
			if !utf8.ValidRune(r) || (tok.kind == kindSPM && r == '▁') {
				continue
			}
			s := string(r)
			if !coversBytes(tok, s) {
				continue // no token for one of its bytes: dropped, as in llama.cpp
			}
			if got := tok.Decode(tok.Encode(s, false, false)); got != s {
				bad++
				if bad < 10 {
					t.Errorf("%s: U+%04X round-trips to %q", name, r, got)
				}
			}
		}
		require.Zero(t, bad, name)
	}
}

// coversBytes reports whether a byte-level BPE vocabulary has the
// single-byte token of every byte of s (some, e.g. Falcon's, lack a few
// control bytes, and llama.cpp drops what it cannot spell). Other
// families cover everything or say so in their own tests.
func coversBytes(tok *Tokenizer, s string) bool {
	if tok.kind != kindBPE {
		return true
	}
	for i := 0; i < len(s); i++ {
		if _, ok := tok.ids[string(byteLevel.toRune[s[i]])]; !ok {
			return false
		}
	}
	return true
}

func TestEOTPrefersTurnEnd(t *testing.T) {
	tok := loadVocab(t, "qwen2")
	end, _ := tok.TokenID("<|im_end|>")
	require.Equal(t, end, tok.EOT())
}

// TestEOSTokenIDs: every id of tokenizer.ggml.eos_token_ids (the list
// Ollama's converter writes: gpt-oss's <|return|>, <|endoftext|> and
// <|call|>) ends generation, whatever its text; an id outside the
// vocabulary is a warning, not a failure.
func TestEOSTokenIDs(t *testing.T) {
	tokens := append(byteLevelAlphabet(), "<|stop_a|>", "<|stop_b|>", "<|keep|>")
	for _, tc := range []struct {
		name     string
		ids      any
		eog      []int32
		warnings int
	}{
		{"int32", []int32{256, 257}, []int32{256, 257}, 0},
		{"uint32", []uint32{257}, []int32{257}, 0},
		{"out of range", []int32{256, 9999, -1}, []int32{256}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := writeVocab(t, map[string]any{
				"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.tokens": tokens,
				"tokenizer.ggml.merges": []string{}, "tokenizer.ggml.eos_token_ids": tc.ids,
			})
			for id := int32(256); id < 259; id++ {
				require.Equal(t, slices.Contains(tc.eog, id), tok.IsEOG(id), "token %d", id)
			}
			require.Len(t, tok.Warnings(), tc.warnings)
		})
	}
}

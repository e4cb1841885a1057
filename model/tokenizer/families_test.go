package tokenizer

import (
	"encoding/binary"
	"github.com/stretchr/testify/require"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// texts renders ids as their vocabulary texts, for readable failures.
func texts(tok *Tokenizer, ids []int32) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = tok.TokenText(id)
	}
	return out
}

// bertVocab is a WordPiece vocabulary as the GGUF converters store one:
// word-initial pieces behind "▁", continuations bare, control tokens as is.
func bertVocab(t testing.TB) *Tokenizer {
	tokens := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁hello", "▁he", "llo", "▁world",
		"▁,", "▁!", "▁fu", "hr", "er", "▁中", "▁a", "▁.", "▁$", "▁¼"}
	types := make([]int32, len(tokens))
	for i := range types {
		types[i] = typeNormal
		if i < 4 {
			types[i] = typeControl
		}
	}
	return writeVocab(t, map[string]any{
		"tokenizer.ggml.model":            "bert",
		"tokenizer.ggml.tokens":           tokens,
		"tokenizer.ggml.token_type":       types,
		"tokenizer.ggml.unknown_token_id": uint32(1),
		"tokenizer.ggml.bos_token_id":     uint32(2),
	})
}

func TestWordPiece(t *testing.T) {
	tok := bertVocab(t)
	require.Equal(t, "bert", tok.Model())
	require.True(t, tok.AddBOS(), "BERT prompts start with [CLS]")
	for _, tc := range []struct {
		in      string
		special bool
		want    []string
	}{
		{"Hello, World!", false, []string{"▁hello", "▁,", "▁world", "▁!"}},
		// Lowered, accents dropped (ü → u), then the longest pieces left to right.
		{"Führer", false, []string{"▁fu", "hr", "er"}},
		// A word with a part no piece matches is one [UNK], whatever matched before.
		{"hellx world", false, []string{"[UNK]", "▁world"}},
		// CJK ideographs stand alone; whitespace of any kind separates; control
		// characters and NUL vanish.
		{"中文\ta\u00a0a\x00\u200b.", false, []string{"▁中", "[UNK]", "▁a", "▁a", "▁."}},
		// ASCII symbols split, others (¼ is No) stay in the word.
		{"$a¼", false, []string{"▁$", "[UNK]"}},
		{"¼", false, []string{"▁¼"}},
		{"   \n", false, nil},
		{"", false, nil},
		// Control-token text is only a token when special text is parsed.
		{"[CLS]hello", true, []string{"[CLS]", "▁hello"}},
	} {
		got := tok.Encode(tc.in, false, tc.special)
		require.Equal(t, tc.want, nilIfEmpty(texts(tok, got)), "%q", tc.in)
	}
	require.Equal(t, []string{"[CLS]", "▁hello"}, texts(tok, tok.Encode("hello", true, false)))
	// [SEP] (id 102 by default, here outside the vocabulary) comes from
	// tokenizer.ggml.seperator_token_id, and add_sep_token says to use it.
	require.Equal(t, int32(-1), tok.SEP())
	require.False(t, tok.AddSEP())
	withSep := writeVocab(t, map[string]any{
		"tokenizer.ggml.model":              "bert",
		"tokenizer.ggml.tokens":             []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁a"},
		"tokenizer.ggml.seperator_token_id": uint32(3),
	})
	require.Equal(t, int32(3), withSep.SEP())
	require.True(t, withSep.AddSEP())
	// Decode joins the pieces: the first phantom space goes, the others are
	// the spaces between words (punctuation became a word of its own).
	require.Equal(t, "hello , world !", tok.Decode(tok.Encode("Hello, World!", false, false)))
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// buildCharsmap serializes a SentencePiece precompiled charsmap for the
// replacements in m: a double array where every trie node owns a block of
// 256 units at 256·k (so 256·k^c = 256·k+c, and a node's leaf sits at
// 256·k^0), followed by the NUL-terminated replacement strings.
func buildCharsmap(t testing.TB, m map[string]string) []byte {
	type node struct {
		kids  map[byte]*node
		value int
		leaf  bool
		block int
	}
	root := &node{kids: map[byte]*node{}}
	var strs []byte
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		n := root
		for i := 0; i < len(k); i++ {
			c := n.kids[k[i]]
			if c == nil {
				c = &node{kids: map[byte]*node{}}
				n.kids[k[i]] = c
			}
			n = c
		}
		n.leaf, n.value = true, len(strs)
		strs = append(append(strs, m[k]...), 0)
	}
	var order []*node
	var number func(n *node)
	number = func(n *node) {
		order = append(order, n)
		n.block = len(order) // block 0 holds the root's own unit
		for c := 0; c < 256; c++ {
			if k := n.kids[byte(c)]; k != nil {
				number(k)
			}
		}
	}
	number(root)
	units := make([]uint32, 256*(len(order)+1))
	base := func(n *node) uint32 { return uint32(256 * n.block) }
	require.Less(t, base(order[len(order)-1]), uint32(1<<21))
	units[0] = base(root) << 10
	for _, n := range order {
		for c, k := range n.kids {
			// A unit stores its children's block relative to its own index.
			at := base(n) + uint32(c)
			u := uint32(c) | (at^base(k))<<10
			if k.leaf {
				u |= 1 << 8
				units[base(k)] = 1<<31 | uint32(k.value)
			}
			units[at] = u
		}
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(4*len(units)))
	for _, u := range units {
		out = binary.LittleEndian.AppendUint32(out, u)
	}
	return append(out, strs...)
}

func t5Vocab(t testing.TB, extra map[string]any) *Tokenizer {
	pieces := []struct {
		text  string
		score float32
		typ   int32
	}{
		{"<pad>", 0, typeControl}, {"</s>", 0, typeControl}, {"<unk>", 0, typeUnknown},
		{"▁", -2, typeNormal}, {"▁a", -1, typeNormal}, {"b", -3, typeNormal},
		{"▁ab", -3.5, typeNormal}, {"c", -1, typeNormal}, {"▁c", -5, typeNormal},
		{"<x>", -100, typeUserDefined}, {"A", -1, typeNormal}, {"fi", -1, typeNormal},
	}
	kv := map[string]any{"tokenizer.ggml.model": "t5"}
	var tokens []string
	var scores []float32
	var types []int32
	for _, p := range pieces {
		tokens, scores, types = append(tokens, p.text), append(scores, p.score), append(types, p.typ)
	}
	kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.scores"], kv["tokenizer.ggml.token_type"] = tokens, scores, types
	kv["tokenizer.ggml.precompiled_charsmap"] = buildCharsmap(t, map[string]string{
		"Ａ": "A", "ﬁ": "fi", "\u3000": " ", "Ａ\u3000": "A-", // the longest match wins
	})
	for k, v := range extra {
		kv[k] = v
	}
	return writeVocab(t, kv)
}

func TestUnigram(t *testing.T) {
	prefix := map[string]any{"tokenizer.ggml.add_space_prefix": true}
	merge := map[string]any{"tokenizer.ggml.add_space_prefix": true, "tokenizer.ggml.remove_extra_whitespaces": true}
	bare := map[string]any{"tokenizer.ggml.add_space_prefix": false}
	for _, tc := range []struct {
		extra map[string]any
		in    string
		want  []string
	}{
		// The highest score sum wins: ▁ab (-3.5) over ▁a b (-4); ▁ c (-3) over ▁c (-5).
		{prefix, "ab", []string{"▁ab"}},
		{prefix, "c", []string{"▁", "c"}},
		{prefix, "ab c", []string{"▁ab", "▁", "c"}},
		// The charsmap replaces (full-width A, the fi ligature, the ideographic
		// space; its longest match first).
		{prefix, "Ａ", []string{"▁", "A"}},
		{prefix, "ﬁ", []string{"▁", "fi"}},
		{prefix, "Ａ\u3000", []string{"▁", "A", "<unk>"}},
		{prefix, "\u3000c", []string{"▁", "▁", "c"}},
		// User-defined tokens are cut out first, like special tokens; each
		// side is normalized on its own (so "b" gets its space again).
		{prefix, "a<x>b", []string{"▁a", "<x>", "▁", "b"}},
		// What no token covers is <unk>, one for a run.
		{prefix, "zzz", []string{"▁", "<unk>"}},
		{prefix, "", nil},
		{merge, "  a   b ", []string{"▁a", "▁", "b"}},
		{bare, "ab", []string{"<unk>", "b"}},
	} {
		tok := t5Vocab(t, tc.extra)
		got := tok.Encode(tc.in, false, false)
		require.Equal(t, tc.want, nilIfEmpty(texts(tok, got)), "%q %v", tc.in, tc.extra)
	}
	tok := t5Vocab(t, prefix)
	require.Equal(t, "t5", tok.Model())
	require.False(t, tok.AddBOS())
	require.True(t, tok.AddEOS(), "T5 appends </s>")
	require.Equal(t, "ab c", tok.Decode(tok.Encode("ab c", false, false)))
}

func TestUnigramBadCharsmap(t *testing.T) {
	good := buildCharsmap(t, map[string]string{"x": "y"})
	for name, cm := range map[string]any{
		"short":        []byte{1, 0},
		"trie too big": append(binary.LittleEndian.AppendUint32(nil, 1<<20), 0, 0, 0, 0),
		"odd size":     append(binary.LittleEndian.AppendUint32(nil, 3), 0, 0, 0, 0),
		"not bytes":    []string{"x"},
	} {
		_, err := tryVocab(t, map[string]any{
			"tokenizer.ggml.model":                "t5",
			"tokenizer.ggml.tokens":               []string{"<pad>", "</s>", "<unk>"},
			"tokenizer.ggml.precompiled_charsmap": cm,
		})
		require.ErrorIs(t, err, ErrBadMetadata, name)
	}
	// A trie whose indexes point outside itself normalizes less; it never
	// reads out of bounds.
	broken := append([]byte(nil), good...)
	for i := 4; i+4 <= 4+int(binary.LittleEndian.Uint32(good)); i += 4 {
		if u := binary.LittleEndian.Uint32(broken[i:]); u != 0 {
			binary.LittleEndian.PutUint32(broken[i:], u|0x3ffffc00)
		}
	}
	tok := writeVocab(t, map[string]any{
		"tokenizer.ggml.model":                "t5",
		"tokenizer.ggml.tokens":               []string{"<pad>", "</s>", "<unk>", "x", "y"},
		"tokenizer.ggml.precompiled_charsmap": broken,
	})
	require.NotPanics(t, func() { tok.Encode("xxy", false, false) })
}

func rwkvVocab(t testing.TB) *Tokenizer {
	return writeVocab(t, map[string]any{
		"tokenizer.ggml.model": "rwkv",
		"tokenizer.ggml.tokens": []string{"<s>", "a", "ab", "abc", `\n`, `\x41`, `\\`, "b", `\t\x00z`,
			"xy", `\xe4\xb8`, `\xad`},
	})
}

func TestRWKV(t *testing.T) {
	tok := rwkvVocab(t)
	require.Equal(t, "rwkv", tok.Model())
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"abcab\nAb\\", []string{"abc", "ab", `\n`, `\x41`, "b", `\\`}},
		{"\t\x00z", []string{`\t\x00z`}},
		// Bytes no token covers are dropped (the vocabulary has no unknown
		// token), also where a longer token starts with them.
		{"qxzb", []string{"b"}},
		// Tokens may split a character; decoding joins the bytes again.
		{"中", []string{`\xe4\xb8`, `\xad`}},
	} {
		got := tok.Encode(tc.in, false, false)
		require.Equal(t, tc.want, texts(tok, got), "%q", tc.in)
	}
	require.Equal(t, "abcab\nAb\\中", tok.Decode(tok.Encode("abcab\nAb\\中", false, false)))
	require.Equal(t, "\t\x00z", tok.Piece(8))
}

func TestPrefixIndex(t *testing.T) {
	x := newPrefixIndex([]string{"ab", "a", "abcd", "b", "", "ab"}, []int32{1, 2, 3, 4, 5, 6})
	var got [][2]int
	x.walk("abcde", func(n int, id int32) bool { got = append(got, [2]int{n, int(id)}); return true })
	require.Equal(t, [][2]int{{1, 2}, {2, 6}, {4, 3}}, got, "shortest first; a repeated key keeps the later id")
	n, id := x.longest("abc")
	require.Equal(t, 2, n)
	require.Equal(t, int32(6), id)
	n, id = x.longest("c")
	require.Equal(t, 0, n)
	require.Equal(t, noToken, id)
}

// FuzzOtherFamilies checks that the WordPiece, unigram and RWKV tokenizers
// never panic and give ids in range, and that RWKV (byte-exact) decodes
// what it covers.
func FuzzOtherFamilies(f *testing.F) {
	for _, s := range []string{"", "Hello, World!", "Führer 中文", "a<x>b\u3000Ａ", "\xff\xfe", "abcab\nA"} {
		f.Add(s)
	}
	toks := map[string]*Tokenizer{"bert": bertVocab(f), "t5": t5Vocab(f, nil), "rwkv": rwkvVocab(f)}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 1<<12 {
			return
		}
		for name, tok := range toks {
			ids := tok.Encode(s, true, true)
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("%s: id %d out of range", name, id)
				}
			}
			if name == "bert" || name == "t5" {
				if d := tok.Decode(ids); !utf8.ValidString(s) || strings.Contains(s, "\uFFFD") {
					continue
				} else if !utf8.ValidString(d) {
					t.Fatalf("%s: Decode gave invalid UTF-8 %q for valid %q", name, d, s)
				}
			}
		}
	})
}

// TestUnigramCyclicCharsmap: a crafted trie whose node leads back to
// itself matches every byte of a run; the walk stops at the longest key a
// real charsmap has, so a long input stays linear, not quadratic.
func TestUnigramCyclicCharsmap(t *testing.T) {
	units := make([]uint32, 0x62)
	units[0x61] = 0x61<<10 | 0x61 // lcheck 'a', base 'a': node ^ 'a' ^ 'a' = node
	cm := binary.LittleEndian.AppendUint32(nil, uint32(4*len(units)))
	for _, u := range units {
		cm = binary.LittleEndian.AppendUint32(cm, u)
	}
	cm = append(cm, 'z', 0)
	tok := writeVocab(t, map[string]any{
		"tokenizer.ggml.model":                "t5",
		"tokenizer.ggml.tokens":               []string{"<pad>", "</s>", "<unk>", "a"},
		"tokenizer.ggml.precompiled_charsmap": cm,
	})
	done := make(chan []int32, 1)
	go func() { done <- tok.Encode(strings.Repeat("a", 1<<18), false, false) }()
	select {
	case ids := <-done:
		require.NotEmpty(t, ids)
	case <-time.After(20 * time.Second):
		t.Fatal("Encode of 256 KiB through a cyclic charsmap did not finish in 20s")
	}
}

// TestWordPieceLongToken: one very long token in a vocabulary does not make
// every input byte cost its length squared (substring lookups from the
// longest token's length down): 256 KiB of words encodes in well under
// the seconds it took.
func TestWordPieceLongToken(t *testing.T) {
	tok := writeVocab(t, map[string]any{
		"tokenizer.ggml.model":  "bert",
		"tokenizer.ggml.tokens": []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁a", "a", strings.Repeat("q", 5000)},
	})
	in := strings.Repeat(strings.Repeat("a", 4000)+" ", 64)
	t0 := time.Now()
	ids := tok.Encode(in, false, false)
	require.Len(t, ids, len(in)-64)
	require.Less(t, time.Since(t0), 3*time.Second)
}

// TestWordPieceMatchesLookup: the prefix index cuts words exactly as
// llama.cpp's substring lookups from the longest token's length down do.
func TestWordPieceMatchesLookup(t *testing.T) {
	tok := bertVocab(t)
	naive := func(w string) []int32 {
		var out []int32
		for i := 0; i < len(w); {
			found := false
			for j := min(len(w), i+tok.maxTokenLen); j > i; j-- {
				if id, ok := tok.ids[w[i:j]]; ok {
					out, i, found = append(out, id), j, true
					break
				}
			}
			if !found {
				return []int32{tok.unk}
			}
		}
		return out
	}
	alphabet := []string{"h", "e", "l", "o", "w", "r", "d", "f", "u", "a", "▁", "中"}
	rng := uint64(1)
	for range 20000 {
		var b strings.Builder
		b.WriteString("▁")
		rng = rng*6364136223846793005 + 1442695040888963407
		for n := rng >> 60; n > 0; n-- {
			rng = rng*6364136223846793005 + 1442695040888963407
			b.WriteString(alphabet[(rng>>33)%uint64(len(alphabet))])
		}
		w := b.String()
		require.Equal(t, naive(w), tok.wpmWord(w, nil), "%q", w)
	}
}

// TestUnigramUnterminatedReplacement: a replacement without its NUL runs
// to the end of the charsmap; a crafted map of a long unterminated string
// must not expand every matching input byte into all of it.
func TestUnigramUnterminatedReplacement(t *testing.T) {
	cm := buildCharsmap(t, map[string]string{"a": "b"})
	cm = append(cm[:len(cm)-1], strings.Repeat("b", 1<<16)...) // drop the NUL, then 64 KiB
	tok := writeVocab(t, map[string]any{
		"tokenizer.ggml.model":                "t5",
		"tokenizer.ggml.tokens":               []string{"<pad>", "</s>", "<unk>", "b"},
		"tokenizer.ggml.precompiled_charsmap": cm,
	})
	in := strings.Repeat("a", 100)
	require.LessOrEqual(t, len(tok.ugmNormalize(in)), maxCharsmapKey*len(in))
}

// TestMaxTokenBytesBound: where MaxTokenBytes gives a bound, a text of n
// bytes has at least n/MaxTokenBytes tokens (servers refuse or cut texts by
// it before tokenizing); where normalization drops input it gives none.
func TestMaxTokenBytesBound(t *testing.T) {
	in := "hello" + strings.Repeat(" ", 10000) + strings.Repeat("\x01", 100) + "\u3000\u3000"
	for name, tok := range map[string]*Tokenizer{"bert": bertVocab(t), "t5": t5Vocab(t, map[string]any{"tokenizer.ggml.remove_extra_whitespaces": true}), "rwkv": rwkvVocab(t)} {
		n := len(tok.Encode(in, false, false))
		if mtb := tok.MaxTokenBytes(); mtb > 0 {
			require.GreaterOrEqual(t, n, len(in)/mtb, name)
		}
	}
}

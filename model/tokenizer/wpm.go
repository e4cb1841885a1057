package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// ---- WordPiece (llm_tokenizer_wpm, tokenizer.ggml.model "bert") ----
//
// The GGUF converters store a BERT vocabulary with a phantom space: a
// word-initial piece "hello" becomes "▁hello", a continuation "##lo"
// becomes "lo", control tokens ([CLS], [SEP], ...) stay as they are. The
// text is split into words (whitespace separates, punctuation, ASCII
// symbols and CJK ideographs stand alone), each code point lowered and
// reduced to the first code point of its canonical decomposition (which
// drops accents: "Führer" → "fuhrer"), then every word gets "▁" in front
// and is cut greedily into the longest vocabulary entries, left to right.
// A word with a part no entry matches becomes the unknown token as a whole.

// wpmMaxWord bounds the bytes of one word that the greedy match walks: a
// word longer than any real one (a megabyte without a space) costs
// len × MaxTokenBytes map lookups, so past this it is the unknown token at
// once, as BERT's own tokenizer does for words over 100 characters.
const wpmMaxWord = 4096

// newWPM indexes every token by its text (llama.cpp's text_to_token).
func (t *Tokenizer) newWPM() {
	ids := make([]int32, len(t.tokens))
	for i := range ids {
		ids[i] = int32(i)
	}
	t.wpm = newPrefixIndex(t.tokens, ids)
}

// wpmTokenize appends the WordPiece tokens of one raw text fragment to out.
func (t *Tokenizer) wpmTokenize(text string, out []int32) []int32 {
	var word strings.Builder
	flush := func() {
		if word.Len() == 0 {
			return
		}
		out = t.wpmWord("▁"+word.String(), out)
		word.Reset()
	}
	for _, r := range text {
		r = firstOfNFD(r)
		f := flagsOf(r)
		if f&flagWhitespace != 0 {
			flush()
			continue
		}
		if r == 0 || r == utf8.RuneError || f&flagControl != 0 {
			continue
		}
		lower := unicode.ToLower(r)
		if f&flagPunctuation != 0 || (r < 0x7F && f&flagSymbol != 0) || isCJKIdeograph(r) {
			flush()
			word.WriteRune(lower)
			flush()
			continue
		}
		word.WriteRune(lower)
	}
	flush()
	return out
}

// wpmWord cuts one phantom-space-prefixed word into the longest matching
// vocabulary entries, or the unknown token if some part matches none.
// llama.cpp looks up every substring from the longest token's length down;
// the prefix index finds the same longest entry in time bounded by the
// match, not by the vocabulary's longest token (one long token in a
// crafted vocabulary made that cost its length squared per input byte).
func (t *Tokenizer) wpmWord(w string, out []int32) []int32 {
	start := len(out)
	if len(w) <= wpmMaxWord {
		for i := 0; i < len(w); {
			n, id := t.wpm.longest(w[i:])
			if n == 0 {
				out = out[:start]
				break
			}
			out = append(out, id)
			i += n
		}
	}
	if len(out) == start && t.unk != noToken {
		out = append(out, t.unk)
	}
	return out
}

// firstOfNFD returns the first code point of r's canonical decomposition
// (r itself when it has none), as llama.cpp's unicode_cpts_normalize_nfd
// does: a single code point, accents dropped.
func firstOfNFD(r rune) rune {
	if r < 0xC0 {
		return r // nothing below U+00C0 decomposes
	}
	var buf [utf8.UTFMax]byte
	n := utf8.EncodeRune(buf[:], r)
	if norm.NFD.IsNormal(buf[:n]) {
		return r
	}
	d := norm.NFD.Bytes(buf[:n])
	first, _ := utf8.DecodeRune(d)
	return first
}

// isCJKIdeograph is BERT's _is_chinese_char (llama.cpp's copy of it,
// including the Hugging Face range that starts at U+2B920).
func isCJKIdeograph(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) ||
		(r >= 0x3400 && r <= 0x4DBF) ||
		(r >= 0x20000 && r <= 0x2A6DF) ||
		(r >= 0x2A700 && r <= 0x2B73F) ||
		(r >= 0x2B740 && r <= 0x2B81F) ||
		(r >= 0x2B920 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) ||
		(r >= 0x2F800 && r <= 0x2FA1F)
}

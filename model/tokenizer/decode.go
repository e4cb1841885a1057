package tokenizer

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// renderPiece is llama.cpp's token_to_piece with special = false.
func (t *Tokenizer) renderPiece(id int32) string {
	a := t.attrs[id]
	text := t.tokens[id]
	switch {
	case a&(attrUnknown|attrControl) != 0:
		return ""
	case t.kind == kindRWKV:
		if a&attrUnused != 0 {
			return ""
		}
		return rwkvUnescape(text)
	case a&attrUserDefined != 0:
		return text
	case a&attrNormal != 0:
		if t.kind != kindBPE {
			return strings.ReplaceAll(text, "▁", " ")
		}
		return string(byteDecode(nil, text))
	case a&attrByte != 0:
		if b, ok := parseByteToken(text); ok {
			return string([]byte{b})
		}
		if t.kind == kindBPE {
			return string(byteDecode(nil, text))
		}
		return text
	}
	return "" // unused and undefined tokens render as nothing
}

// parseByteToken reads a "<0xXX>" byte token.
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || !strings.HasPrefix(s, "<0x") || s[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(s[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

// Piece returns the bytes token id stands for, as llama.cpp's
// token_to_piece(special = false): SentencePiece "▁" becomes a space,
// byte tokens become their byte, byte-level BPE text is mapped back to
// bytes, and control, unknown and unused tokens render as "". A piece may
// hold an incomplete UTF-8 sequence; use a StreamDecoder to print pieces as
// they are generated. Out-of-range ids give "".
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// PieceSpecial is Piece with control and unknown tokens rendered as their
// vocabulary text (llama.cpp's token_to_piece with special = true), for
// showing prompts and debugging. Unused and undefined tokens still render as "".
func (t *Tokenizer) PieceSpecial(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	if t.attrs[id]&(attrUnknown|attrControl) != 0 {
		return t.tokens[id]
	}
	return t.pieces[id]
}

// Decode returns the text of ids: the concatenation of their pieces, minus
// the one leading space that Encode's SentencePiece dummy prefix adds (it is
// taken off the first token that renders as something), so that
// Decode(Encode(s, false, false)) == s for valid UTF-8 s with the
// SentencePiece and BPE models (WordPiece, whose words all start with the
// phantom space, loses that first space too, but its text comes back
// lowered, without accents and with a space between words and
// punctuation; unigram text comes back as its normalizer left it). The result holds
// the raw bytes and may be invalid UTF-8 if ids end inside a character.
// Unlike llama.cpp's detokenize, no clean_up_tokenization_spaces pass is
// applied: the text comes back byte for byte.
func (t *Tokenizer) Decode(ids []int32) string {
	var b strings.Builder
	strip := (t.kind == kindSPM || t.kind == kindUGM) && t.addSpace || t.kind == kindWPM
	for _, id := range ids {
		p := t.Piece(id)
		if p == "" {
			continue
		}
		if strip {
			p = strings.TrimPrefix(p, " ")
			strip = false
		}
		b.WriteString(p)
	}
	return b.String()
}

// StreamDecoder turns a stream of generated token ids into text that never
// splits a UTF-8 character: bytes of an incomplete character are held back
// until the token that completes them arrives. A StreamDecoder is used by
// one goroutine at a time.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte
}

// NewStreamDecoder returns a decoder with nothing pending.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder {
	return &StreamDecoder{t: t}
}

// Next adds token id and returns the text that is now complete (possibly "").
// The returned text is always valid UTF-8: bytes that can never start or
// continue a character are replaced by U+FFFD at once, an incomplete
// sequence at the end is kept for the next call. Pieces are not stripped of
// the SentencePiece leading space: a generated "▁Paris" prints " Paris".
func (d *StreamDecoder) Next(id int32) string {
	d.pending = append(d.pending, d.t.Piece(id)...)
	return d.drain(false)
}

// Flush returns whatever is still held back, with each byte of an
// incomplete sequence replaced by U+FFFD, and resets the decoder.
func (d *StreamDecoder) Flush() string {
	return d.drain(true)
}

func (d *StreamDecoder) drain(final bool) string {
	p := d.pending
	var out []byte
	i := 0
	for i < len(p) {
		if p[i] < utf8.RuneSelf {
			i++
			continue
		}
		if !utf8.FullRune(p[i:]) {
			if !final {
				break // a valid prefix: wait for the rest
			}
		}
		r, n := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && n <= 1 {
			out = append(out, p[:i]...)
			out = append(out, "\uFFFD"...)
			p = p[i+1:]
			i = 0
			continue
		}
		i += n
	}
	out = append(out, p[:i]...)
	rest := p[i:]
	d.pending = append(d.pending[:0], rest...)
	return string(out)
}

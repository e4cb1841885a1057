package engine

// TEMPORARY stand-in until model/tokenizer lands: decoding only.

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/rbee-project/rbee/model/gguf"
)

type tokenizerT = stubTok

type stubTok struct {
	pieces [][]byte
	bos    int32
	eos    int32
}

func loadTokenizer(f *gguf.File) (*stubTok, error) {
	toks, ok := f.Strings("tokenizer.ggml.tokens")
	if !ok {
		return nil, fmt.Errorf("no tokens")
	}
	t := &stubTok{bos: 1, eos: 2}
	for _, s := range toks {
		if len(s) == 6 && strings.HasPrefix(s, "<0x") && s[5] == '>' {
			v, _ := strconv.ParseUint(s[3:5], 16, 8)
			t.pieces = append(t.pieces, []byte{byte(v)})
			continue
		}
		t.pieces = append(t.pieces, []byte(strings.ReplaceAll(s, "▁", " ")))
	}
	if v, ok := f.Uint("tokenizer.ggml.bos_token_id"); ok {
		t.bos = int32(v)
	}
	if v, ok := f.Uint("tokenizer.ggml.eos_token_id"); ok {
		t.eos = int32(v)
	}
	return t, nil
}

func (t *stubTok) VocabSize() int        { return len(t.pieces) }
func (t *stubTok) BOS() int32            { return t.bos }
func (t *stubTok) EOS() int32            { return t.eos }
func (t *stubTok) AddBOS() bool          { return true }
func (t *stubTok) IsEOG(id int32) bool   { return id == t.eos }
func (t *stubTok) Piece(id int32) string { return string(t.pieces[id]) }
func (t *stubTok) Encode(text string, addBOS, special bool) []int32 {
	return []int32{t.bos}
}

type stubStream struct {
	t   *stubTok
	buf []byte
}

func (t *stubTok) NewStreamDecoder() *stubStream { return &stubStream{t: t} }
func (d *stubStream) Next(id int32) string {
	if id == d.t.bos || id == d.t.eos {
		return ""
	}
	d.buf = append(d.buf, d.t.pieces[id]...)
	n := 0
	for n < len(d.buf) {
		r, sz := utf8.DecodeRune(d.buf[n:])
		if r == utf8.RuneError && sz <= 1 {
			if !utf8.FullRune(d.buf[n:]) {
				break
			}
		}
		n += sz
	}
	out := string(d.buf[:n])
	d.buf = d.buf[:copy(d.buf, d.buf[n:])]
	return out
}
func (d *stubStream) Flush() string { s := string(d.buf); d.buf = d.buf[:0]; return s }

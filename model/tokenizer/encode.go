package tokenizer

import (
	"sort"
	"strings"
	"unicode/utf8"
)

// fragment is either a special token (tok >= 0) or the raw text s[lo:hi].
type fragment struct {
	tok    int32
	lo, hi int
}

// Encode converts text to token ids.
//
// addBOS prepends the BOS token (when the vocabulary has one); pass
// t.AddBOS() for the model's convention. EOS is never appended.
//
// parseSpecial makes the text of control tokens (e.g. "<|im_start|>")
// become those tokens, longest match first; without it such text is
// tokenized as plain text. As in llama.cpp, user-defined tokens are matched
// either way.
//
// SentencePiece vocabularies get llama.cpp's dummy-prefix space in front of
// the text and of every text run that follows a special token (unless
// tokenizer.ggml.add_space_prefix is false). Invalid UTF-8 is tolerated:
// SentencePiece encodes the stray bytes with byte tokens, byte-level BPE
// reads each of them as U+FFFD.
func (t *Tokenizer) Encode(text string, addBOS, parseSpecial bool) []int32 {
	return t.encode(text, addBOS, parseSpecial, nil)
}

// EncodeLiteral is Encode with parseSpecial, except that the text of a
// control or unknown token is read as that token only where it overlaps
// none of the literal byte ranges [lo, hi) of text (sorted, not
// overlapping): there it is plain text, as Encode without parseSpecial
// reads it. A chat prompt marks the parts that came from the request this
// way, so that a message cannot write the template's own markup
// ("<|im_start|>system") and have it read as the special token.
func (t *Tokenizer) EncodeLiteral(text string, addBOS bool, literal [][2]int) []int32 {
	return t.encode(text, addBOS, true, literal)
}

// SpecialSpans returns the byte ranges [lo, hi) of text that Encode with
// parseSpecial reads as control or unknown tokens (the ones it reads as
// plain text without it), in order.
func (t *Tokenizer) SpecialSpans(text string) [][2]int {
	var spans [][2]int
	for _, f := range t.partition(text, true, nil) {
		if f.tok >= 0 && t.attrs[f.tok]&(attrControl|attrUnknown) != 0 {
			spans = append(spans, [2]int{f.lo, f.hi})
		}
	}
	return spans
}

func (t *Tokenizer) encode(text string, addBOS, parseSpecial bool, literal [][2]int) []int32 {
	out := make([]int32, 0, len(text)/3+2)
	if addBOS && t.bos != noToken {
		out = append(out, t.bos)
	}
	if text == "" {
		return out
	}
	frags := t.partition(text, parseSpecial, literal)
	switch t.kind {
	case kindSPM:
		s := t.spmPool.Get().(*spmSession)
		defer t.spmPool.Put(s)
		prevSpecial := true
		var buf strings.Builder
		for _, f := range frags {
			if f.tok >= 0 {
				out = append(out, f.tok)
				prevSpecial = true
				continue
			}
			buf.Reset()
			if t.addSpace && prevSpecial {
				buf.WriteString("▁")
			}
			buf.WriteString(strings.ReplaceAll(text[f.lo:f.hi], " ", "▁"))
			out = s.tokenize(t, buf.String(), out)
			prevSpecial = false
		}
	case kindBPE:
		s := t.bpePool.Get().(*bpeSession)
		defer t.bpePool.Put(s)
		for _, f := range frags {
			if f.tok >= 0 {
				out = append(out, f.tok)
				continue
			}
			out = s.tokenize(t, text[f.lo:f.hi], out)
		}
	default:
		for _, f := range frags {
			switch {
			case f.tok >= 0:
				out = append(out, f.tok)
			case t.kind == kindWPM:
				out = t.wpmTokenize(text[f.lo:f.hi], out)
			case t.kind == kindUGM:
				out = t.ugmTokenize(text[f.lo:f.hi], out)
			case t.kind == kindRWKV:
				out = t.rwkvTokenize(text[f.lo:f.hi], out)
			}
		}
	}
	return out
}

// partition splits text at special-token occurrences (llama.cpp's
// tokenizer_st_partition): special tokens are tried longest first, each
// splitting every remaining text fragment at all its occurrences. A control
// or unknown token's occurrence that overlaps a literal range (see
// EncodeLiteral) stays text.
func (t *Tokenizer) partition(text string, parseSpecial bool, literal [][2]int) []fragment {
	frags := []fragment{{tok: noToken, lo: 0, hi: len(text)}}
	var next []fragment
	order := t.special
	if t.specials != nil {
		// Only the tokens that occur, in the same (longest first) order.
		found := t.specials.occurring(text)
		order = make([]int32, len(found))
		for i, si := range found {
			order[i] = t.special[si]
		}
	}
	for _, id := range order {
		a := t.attrs[id]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		word := t.tokens[id]
		found := false
		for _, f := range frags {
			if f.tok < 0 && strings.Contains(text[f.lo:f.hi], word) {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		next = next[:0]
		for _, f := range frags {
			if f.tok >= 0 {
				next = append(next, f)
				continue
			}
			lo, hi := f.lo, f.hi
			for from := lo; lo < hi; {
				i := strings.Index(text[from:hi], word)
				if i < 0 {
					next = append(next, fragment{tok: noToken, lo: lo, hi: hi})
					break
				}
				m := from + i
				if a&(attrControl|attrUnknown) != 0 && overlaps(literal, m, m+len(word)) {
					from = m + 1
					continue
				}
				left := m
				if a&attrLStrip != 0 {
					for left > lo && isASCIISpace(text[left-1]) {
						left--
					}
				}
				if left > lo {
					next = append(next, fragment{tok: noToken, lo: lo, hi: left})
				}
				next = append(next, fragment{tok: id, lo: m, hi: m + len(word)})
				lo = m + len(word)
				if a&attrRStrip != 0 {
					for lo < hi && isASCIISpace(text[lo]) {
						lo++
					}
				}
				from = lo
			}
		}
		frags, next = next, frags
	}
	return frags
}

// overlaps reports whether [lo, hi) overlaps one of the sorted ranges.
func overlaps(ranges [][2]int, lo, hi int) bool {
	i := sort.Search(len(ranges), func(i int) bool { return ranges[i][1] > lo })
	return i < len(ranges) && ranges[i][0] < hi
}

func isASCIISpace(b byte) bool {
	return b == ' ' || (b >= '\t' && b <= '\r')
}

// ---- SentencePiece (llm_tokenizer_spm) ----

type symbol struct {
	prev, next int
	lo, n      int // text[lo:lo+n]
}

type spmBigram struct {
	left, right int
	score       float32
	size        int
}

func spmLess(a, b spmBigram) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.left < b.left
}

type spmSession struct {
	syms  []symbol
	queue pqueue[spmBigram]
	text  string
}

func (s *spmSession) tokenize(t *Tokenizer, text string, out []int32) []int32 {
	s.text = text
	s.syms = s.syms[:0]
	s.queue.reset(spmLess)
	for off := 0; off < len(text); {
		n := utf8LenFromLead(text[off])
		if off+n > len(text) {
			n = len(text) - off
		}
		idx := len(s.syms)
		next := idx + 1
		if off+n == len(text) {
			next = -1
		}
		s.syms = append(s.syms, symbol{prev: idx - 1, next: next, lo: off, n: n})
		off += n
	}
	for i := 1; i < len(s.syms); i++ {
		s.tryAdd(t, i-1, i)
	}
	for s.queue.len() > 0 {
		b := s.queue.pop()
		l, r := &s.syms[b.left], &s.syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			s.syms[r.next].prev = b.left
		}
		s.tryAdd(t, l.prev, b.left)
		s.tryAdd(t, b.left, l.next)
	}
	for i := 0; i != -1 && len(s.syms) > 0; i = s.syms[i].next {
		out = s.emit(t, i, out)
	}
	return out
}

// utf8LenFromLead is llama.cpp's unicode_len_utf8: the sequence length
// announced by a lead byte (1 for continuation and invalid bytes).
func utf8LenFromLead(b byte) int {
	switch b >> 4 {
	case 0xC, 0xD:
		return 2
	case 0xE:
		return 3
	case 0xF:
		return 4
	}
	return 1
}

func (s *spmSession) tryAdd(t *Tokenizer, left, right int) {
	if left < 0 || right < 0 {
		return
	}
	l, r := s.syms[left], s.syms[right]
	text := s.text[l.lo : l.lo+l.n+r.n]
	id, ok := t.ids[text]
	if !ok {
		return
	}
	s.queue.push(spmBigram{left: left, right: right, score: t.scores[id], size: len(text)})
}

// emit appends symbol i: its token if the text is one, else its bytes as
// byte tokens. (llama.cpp's resegment also looks the text up among the
// merges it made, but a merge only ever produces a vocabulary token and a
// lone character never equals a pair of symbols, so that branch is dead.)
func (s *spmSession) emit(t *Tokenizer, i int, out []int32) []int32 {
	sym := s.syms[i]
	text := s.text[sym.lo : sym.lo+sym.n]
	if id, ok := t.ids[text]; ok {
		return append(out, id)
	}
	for j := 0; j < len(text); j++ {
		if id := t.spmBytes[text[j]]; id != noToken {
			out = append(out, id)
		} else if t.unk != noToken {
			out = append(out, t.unk)
		}
	}
	return out
}

// ---- byte-level BPE (llm_tokenizer_bpe) ----

type bpeBigram struct {
	left, right int
	rank        int32
	size        int
}

func bpeLess(a, b bpeBigram) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.left < b.left
}

type bpeSession struct {
	rt    reText
	offs  []int
	tmp   []int
	word  []byte
	syms  []symbol
	queue pqueue[bpeBigram]
	key   []byte
}

func (s *bpeSession) tokenize(t *Tokenizer, text string, out []int32) []int32 {
	s.rt.cpts = decodeCodepoints(text, s.rt.cpts)
	s.rt.flags = s.rt.flags[:0]
	for _, r := range s.rt.cpts {
		s.rt.flags = append(s.rt.flags, flagsOf(r))
	}
	s.offs = append(s.offs[:0], len(s.rt.cpts))
	for _, sp := range t.splitters {
		s.tmp = sp.split(&s.rt, s.offs, s.tmp[:0])
		s.offs, s.tmp = s.tmp, s.offs
	}
	start := 0
	for _, n := range s.offs {
		s.word = s.word[:0]
		for _, r := range s.rt.cpts[start : start+n] {
			var enc [utf8.UTFMax]byte
			for _, b := range utf8.AppendRune(enc[:0], r) {
				s.word = utf8.AppendRune(s.word, byteLevel.toRune[b])
			}
		}
		start += n
		out = s.mergeWord(t, out)
	}
	return out
}

func (s *bpeSession) mergeWord(t *Tokenizer, out []int32) []int32 {
	word := s.word
	if t.ignoreMerges {
		if id, ok := t.ids[string(word)]; ok {
			return append(out, id)
		}
	}
	s.syms = s.syms[:0]
	s.queue.reset(bpeLess)
	for off := 0; off < len(word); {
		n := utf8LenFromLead(word[off])
		if off+n > len(word) {
			n = len(word) - off
		}
		idx := len(s.syms)
		next := idx + 1
		if off+n == len(word) {
			next = -1
		}
		s.syms = append(s.syms, symbol{prev: idx - 1, next: next, lo: off, n: n})
		off += n
	}
	for i := 1; i < len(s.syms); i++ {
		s.tryAdd(t, word, i-1, i)
	}
	for s.queue.len() > 0 {
		b := s.queue.pop()
		l, r := &s.syms[b.left], &s.syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // stale: one side changed since the pair was queued
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			s.syms[r.next].prev = b.left
		}
		s.tryAdd(t, word, l.prev, b.left)
		s.tryAdd(t, word, b.left, l.next)
	}
	for i := 0; i != -1 && len(s.syms) > 0; i = s.syms[i].next {
		sym := s.syms[i]
		piece := word[sym.lo : sym.lo+sym.n]
		if id, ok := t.ids[string(piece)]; ok {
			out = append(out, id)
			continue
		}
		// Not a token: llama.cpp looks each raw byte up on its own.
		for j := 0; j < len(piece); j++ {
			if id, ok := t.ids[string(piece[j:j+1])]; ok {
				out = append(out, id)
			}
		}
	}
	return out
}

func (s *bpeSession) tryAdd(t *Tokenizer, word []byte, left, right int) {
	if left < 0 || right < 0 {
		return
	}
	l, r := s.syms[left], s.syms[right]
	s.key = append(s.key[:0], word[l.lo:l.lo+l.n]...)
	s.key = append(s.key, ' ')
	s.key = append(s.key, word[r.lo:r.lo+r.n]...)
	rank, ok := t.merges[string(s.key)]
	if !ok {
		return
	}
	s.queue.push(bpeBigram{left: left, right: right, rank: rank, size: l.n + r.n})
}

// pqueue is a binary heap ordered by less (the top is the least element),
// typed to avoid container/heap's interface boxing on every push.
type pqueue[T any] struct {
	items []T
	less  func(a, b T) bool
}

func (q *pqueue[T]) reset(less func(a, b T) bool) {
	q.items = q.items[:0]
	q.less = less
}

func (q *pqueue[T]) len() int { return len(q.items) }

func (q *pqueue[T]) push(x T) {
	q.items = append(q.items, x)
	i := len(q.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(q.items[i], q.items[p]) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

func (q *pqueue[T]) pop() T {
	top := q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items = q.items[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && q.less(q.items[l], q.items[m]) {
			m = l
		}
		if r < last && q.less(q.items[r], q.items[m]) {
			m = r
		}
		if m == i {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return top
}

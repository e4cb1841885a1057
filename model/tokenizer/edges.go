package tokenizer

// specialEdges holds the pieces (of at least minEdge bytes) of the control
// and unknown tokens' texts: those a token's text goes on after (tails of a
// string that a following text can complete) and those it has something
// before (heads that a preceding text can complete).
type specialEdges struct {
	continued map[string]bool // substrings of text[:len-1]
	preceded  map[string]bool // substrings of text[1:]
	max       int             // the longest such piece
}

// minEdge: a piece of one byte is not looked for. A token split across two
// strings has at least two bytes on one side when it is three or more
// bytes long, and that side is found.
const minEdge = 2

func (t *Tokenizer) specialEdges() *specialEdges {
	t.edgesOnce.Do(func() {
		e := &specialEdges{continued: map[string]bool{}, preceded: map[string]bool{}}
		for _, id := range t.special {
			if t.attrs[id]&(attrControl|attrUnknown) == 0 {
				continue
			}
			w := t.tokens[id]
			if len(w) <= minEdge {
				continue
			}
			for lo := 0; lo < len(w); lo++ {
				for hi := lo + minEdge; hi <= len(w); hi++ {
					if lo == 0 && hi == len(w) {
						continue
					}
					if hi < len(w) {
						e.continued[w[lo:hi]] = true
					}
					if lo > 0 {
						e.preceded[w[lo:hi]] = true
					}
					e.max = max(e.max, hi-lo)
				}
			}
		}
		t.edges = e
	})
	return t.edges
}

// SpecialEdges returns how many bytes at the start (head) and at the end
// (tail) of s could, with the text written before or after s, make up the
// text of a control or unknown token that s does not hold whole: the
// longest prefix of s (at least two bytes) found inside such a text after
// its first byte, and the longest suffix found inside one before its last
// byte. A chat prompt reads them as literal text, as it does the special
// texts within s (SpecialSpans), so that two strings side by side cannot
// form a token ("<|im_" and "start|>").
func (t *Tokenizer) SpecialEdges(s string) (head, tail int) {
	e := t.specialEdges()
	for n := min(len(s), e.max); n >= minEdge; n-- {
		if e.preceded[s[:n]] {
			head = n
			break
		}
	}
	for n := min(len(s), e.max); n >= minEdge; n-- {
		if e.continued[s[len(s)-n:]] {
			tail = n
			break
		}
	}
	return head, tail
}

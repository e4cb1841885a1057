package tokenizer

// specialEdges holds the pieces (of at least minEdge bytes) of the control
// and unknown tokens' texts that another text beside them can complete.
type specialEdges struct {
	prefixes map[string]bool // proper prefixes: a following text completes them
	suffixes map[string]bool // proper suffixes: a preceding text completes them
	inner    map[string]bool // proper substrings: texts on both sides complete them
	max      int             // the longest such piece
}

// minEdge: a piece of one byte is not looked for. A token split across two
// strings has at least two bytes on one side when it is three or more
// bytes long, and that side is found.
const minEdge = 2

// maxEdgeToken and maxEdgePieces bound what a vocabulary (a hostile file's
// included) costs here: a control token's text longer than maxEdgeToken
// bytes is not looked for in pieces, and the pieces stop at maxEdgePieces
// (real vocabularies have a few thousand short control tokens: tens of
// thousands of pieces).
const (
	maxEdgeToken  = 64
	maxEdgePieces = 1 << 18
)

func (t *Tokenizer) specialEdges() *specialEdges {
	t.edgesOnce.Do(func() {
		e := &specialEdges{prefixes: map[string]bool{}, suffixes: map[string]bool{}, inner: map[string]bool{}}
		for _, id := range t.special {
			if t.attrs[id]&(attrControl|attrUnknown) == 0 {
				continue
			}
			w := t.tokens[id]
			if len(w) <= minEdge || len(w) > maxEdgeToken {
				continue
			}
			if len(e.prefixes)+len(e.suffixes)+len(e.inner) > maxEdgePieces {
				break
			}
			e.max = max(e.max, len(w)-1)
			for n := minEdge; n < len(w); n++ {
				e.prefixes[w[:n]] = true
				e.suffixes[w[len(w)-n:]] = true
			}
			for lo := 1; lo < len(w); lo++ {
				for hi := lo + minEdge; hi < len(w); hi++ {
					e.inner[w[lo:hi]] = true
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
// longest prefix of s (at least two bytes) that ends such a text and the
// longest suffix that begins one; all of s when it lies inside one. A chat
// prompt reads them as literal text, as it does the special texts within
// s (SpecialSpans), so that strings side by side cannot form a token
// ("<|im_" and "start|>system").
func (t *Tokenizer) SpecialEdges(s string) (head, tail int) {
	e := t.specialEdges()
	if len(s) < minEdge {
		return 0, 0
	}
	if len(s) <= e.max && (e.inner[s] || e.prefixes[s] || e.suffixes[s]) {
		return len(s), len(s)
	}
	for n := min(len(s), e.max); n >= minEdge; n-- {
		if e.suffixes[s[:n]] {
			head = n
			break
		}
	}
	for n := min(len(s), e.max); n >= minEdge; n-- {
		if e.prefixes[s[len(s)-n:]] {
			tail = n
			break
		}
	}
	return head, tail
}

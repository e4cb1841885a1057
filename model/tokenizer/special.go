package tokenizer

import (
	"fmt"
	"slices"
)

// manySpecials is the number of special tokens above which partition first
// finds, in one pass over the text, which of them occur (specialIndex), and
// tries only those: trying each token costs a scan of the text, so a
// vocabulary of 150k special tokens (a hostile file of 4 MB) made one
// Encode of 30 KB take 20 s. Real vocabularies have tens to a few thousand.
const manySpecials = 64

// maxSpecialBytes bounds the total text of the special tokens when there
// are more than manySpecials of them: specialIndex keeps a trie node per
// byte (tens of bytes each). Real vocabularies need a few tens of KiB.
const maxSpecialBytes = 1 << 20

// specialIndex is an Aho-Corasick automaton over the texts of the special
// tokens: occurring reports, in time linear in the text (plus the tokens
// found), which of them occur in it.
type specialIndex struct {
	next map[uint64]int32 // node<<8 | byte -> child node
	fail []int32          // longest proper suffix of the node's text that is a node
	out  []int32          // nearest node on the fail chain that ends a token, 0 if none
	term []int32          // index in Tokenizer.special of the token ending here, -1 if none
}

// newSpecialIndex indexes the texts of special (ids into tokens); empty
// texts are left out (partition never matches them).
func newSpecialIndex(tokens []string, special []int32) (*specialIndex, error) {
	total := 0
	for _, id := range special {
		total += len(tokens[id])
	}
	if total > maxSpecialBytes {
		return nil, fmt.Errorf("%w: %d special (control, user-defined, unknown) tokens of %d bytes in all (at most %d)",
			ErrBadMetadata, len(special), total, maxSpecialBytes)
	}
	x := &specialIndex{next: make(map[uint64]int32, total), fail: []int32{0}, out: []int32{0}, term: []int32{-1}}
	// Children lists, for the breadth-first pass that sets fail links.
	first, sibling := []int32{-1}, []int32{-1}
	edge := []byte{0}
	for si, id := range special {
		node := int32(0)
		for _, b := range []byte(tokens[id]) {
			k := uint64(node)<<8 | uint64(b)
			c, ok := x.next[k]
			if !ok {
				c = int32(len(x.fail))
				x.next[k] = c
				x.fail, x.out, x.term = append(x.fail, 0), append(x.out, 0), append(x.term, -1)
				first, sibling, edge = append(first, -1), append(sibling, first[node]), append(edge, b)
				first[node] = c
			}
			node = c
		}
		if node != 0 {
			x.term[node] = int32(si)
		}
	}
	queue := []int32{0}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		for c := first[u]; c >= 0; c = sibling[c] {
			queue = append(queue, c)
			if u == 0 {
				continue // fail and out are the root
			}
			f := x.fail[u]
			for {
				if g, ok := x.next[uint64(f)<<8|uint64(edge[c])]; ok {
					x.fail[c] = g
					break
				}
				if f == 0 {
					break
				}
				f = x.fail[f]
			}
			if g := x.fail[c]; x.term[g] >= 0 {
				x.out[c] = g
			} else {
				x.out[c] = x.out[g]
			}
		}
	}
	return x, nil
}

// occurring returns the indices (into Tokenizer.special, ascending) of the
// tokens whose text occurs in text.
func (x *specialIndex) occurring(text string) []int {
	var found []int
	seen := map[int32]bool{}
	node := int32(0)
	for i := 0; i < len(text); i++ {
		b := uint64(text[i])
		for {
			if c, ok := x.next[uint64(node)<<8|b]; ok {
				node = c
				break
			}
			if node == 0 {
				break
			}
			node = x.fail[node]
		}
		// Every token ending here: the node's own, then the fail chain's.
		// A node seen before had its whole chain reported then.
		u := node
		if x.term[u] < 0 {
			u = x.out[u]
		}
		for u != 0 && !seen[u] {
			seen[u] = true
			found = append(found, int(x.term[u]))
			u = x.out[u]
		}
	}
	slices.Sort(found)
	return found
}

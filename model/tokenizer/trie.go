package tokenizer

import "sort"

// prefixIndex finds the vocabulary entries that are prefixes of a text
// (the job of llama.cpp's naive_trie) with a sorted array of keys instead
// of a node per byte: the keys that share the first k bytes of the text
// are a contiguous run, narrowed by binary search one byte at a time. It
// costs two slices for any vocabulary size and is read-only after
// newPrefixIndex, so safe for concurrent use.
type prefixIndex struct {
	keys []string
	ids  []int32
}

// newPrefixIndex indexes keys[i] → ids[i]. For a key given twice the later
// id wins, as a trie insert overwrites. Empty keys are left out.
func newPrefixIndex(keys []string, ids []int32) *prefixIndex {
	order := make([]int, 0, len(keys))
	for i, k := range keys {
		if k != "" {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return keys[order[a]] < keys[order[b]] })
	x := &prefixIndex{keys: make([]string, 0, len(order)), ids: make([]int32, 0, len(order))}
	for _, i := range order {
		if n := len(x.keys); n > 0 && x.keys[n-1] == keys[i] {
			x.ids[n-1] = ids[i] // stable sort: i is the later one
			continue
		}
		x.keys = append(x.keys, keys[i])
		x.ids = append(x.ids, ids[i])
	}
	return x
}

// walk calls fn(n, id) for every key equal to s[:n], shortest first, and
// stops early when fn returns false.
func (x *prefixIndex) walk(s string, fn func(n int, id int32) bool) {
	lo, hi := 0, len(x.keys)
	for k := 0; k < len(s) && lo < hi; k++ {
		// keys[lo:hi] all start with s[:k]; one of exactly k bytes sorts first.
		if len(x.keys[lo]) == k {
			lo++
		}
		c := s[k]
		lo += sort.Search(hi-lo, func(i int) bool { return x.keys[lo+i][k] >= c })
		hi = lo + sort.Search(hi-lo, func(i int) bool { return x.keys[lo+i][k] > c })
		if lo < hi && len(x.keys[lo]) == k+1 {
			if !fn(k+1, x.ids[lo]) {
				return
			}
		}
	}
}

// longest returns the length and id of the longest key that is a prefix
// of s (0 and noToken if none).
func (x *prefixIndex) longest(s string) (int, int32) {
	n, id := 0, noToken
	x.walk(s, func(m int, v int32) bool {
		n, id = m, v
		return true
	})
	return n, id
}

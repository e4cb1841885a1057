package grammar

import (
	"fmt"
	"math"
	"slices"
)

// unbounded is Schema.deep of a node on a recursion: its values nest
// without bound.
const unbounded = math.MaxInt32

// heights computes how deep the values of each node nest, in stack frames
// (a value's own frame and those of the values inside it):
//   - minH: the least any value takes (an optional property, an empty
//     array, the shortest alternative need nothing); the matcher starts a
//     value only where it fits, so it never writes a prefix it cannot
//     finish within maxDepth;
//   - deep: the most any value takes, unbounded on a recursion;
//   - needs: for a container, the most its frame can require at any point
//     (itself and the value it may start next), so the matcher checks a
//     frame's room only near the limit.
//
// The limit counts the document's nesting, not the schema's: $ref, anyOf
// and allOf add no level. A schema whose documents all nest deeper than
// maxDepth allows is refused, as is one without recursion whose documents
// may (the part past the limit could never be written); a recursive
// schema is followed to the limit.
func (s *Schema) heights() error {
	n := len(s.nodes)
	inf := int32(maxDepth + 1)
	s.minH = make([]int32, n)
	// Least fixpoint from above: values only decrease, each at most
	// maxDepth+1 times, and a decrease revisits the node's parents.
	parents := make([][]int32, n)
	for id := range s.nodes {
		s.minH[id] = inf
		for _, c := range s.minDeps(int32(id)) {
			parents[c] = append(parents[c], int32(id))
		}
	}
	queue := make([]int32, n)
	queued := make([]bool, n)
	for i := range queue {
		queue[i], queued[i] = int32(i), true
	}
	for len(queue) > 0 {
		id := queue[len(queue)-1]
		queue, queued[id] = queue[:len(queue)-1], false
		if v := s.evalMin(id, inf); v < s.minH[id] {
			s.minH[id] = v
			for _, p := range parents[id] {
				if !queued[p] {
					queue, queued[p] = append(queue, p), true
				}
			}
		}
	}

	s.deep = make([]int32, n)
	state := make([]uint8, n) // 0 not seen, 1 being walked, 2 done
	var walk func(x int32) int32
	walk = func(x int32) int32 {
		switch state[x] {
		case 1:
			return unbounded // x reaches itself: a recursion
		case 2:
			return s.deep[x]
		}
		state[x] = 1
		h := int32(0)
		for _, c := range s.children(x) {
			for _, l := range s.leaves[c] {
				h = max(h, walk(l))
			}
		}
		if h < unbounded {
			h++
		}
		s.deep[x], state[x] = h, 2
		return h
	}
	for id := range s.nodes {
		if s.nodes[id].kind != kAnyOf {
			walk(int32(id))
		}
	}
	for id := range s.nodes {
		if s.nodes[id].kind == kAnyOf {
			for _, l := range s.leaves[id] {
				s.deep[id] = max(s.deep[id], s.deep[l])
			}
		}
	}

	s.needs = make([]int32, n)
	for id := range s.nodes {
		h := int32(0)
		for _, c := range s.children(int32(id)) {
			h = max(h, s.minH[c])
		}
		s.needs[id] = 1 + h
	}

	// The document's own frame comes first: its value has maxDepth-1.
	if s.root < 0 {
		return nil
	}
	switch most := int32(maxDepth - 1); {
	case s.minH[s.root] > most:
		return fmt.Errorf("%w: every document of the schema nests more than %d levels (objects and arrays within each other); at most %d are supported",
			ErrUnsupported, most, most)
	case s.deep[s.root] != unbounded && s.deep[s.root] > most:
		return fmt.Errorf("%w: documents of the schema nest up to %d levels (objects and arrays within each other); at most %d are supported",
			ErrUnsupported, s.deep[s.root], most)
	}
	return nil
}

// minDeps are the nodes minH of id is computed from.
func (s *Schema) minDeps(id int32) []int32 {
	n := &s.nodes[id]
	switch n.kind {
	case kAnyOf:
		return n.alts
	case kObject:
		var list []int32
		for i, p := range n.props {
			if n.required&(1<<i) != 0 {
				list = append(list, p)
			}
		}
		return list
	case kArray:
		return n.requiredItems()
	}
	return nil
}

// evalMin is minH of id from its dependencies' current values.
func (s *Schema) evalMin(id int32, inf int32) int32 {
	n := &s.nodes[id]
	switch n.kind {
	case kAnyOf:
		v := inf
		for _, a := range n.alts {
			v = min(v, s.minH[a])
		}
		return v
	case kObject:
		h := int32(0)
		for i, p := range n.props {
			if n.required&(1<<i) != 0 {
				h = max(h, s.minH[p])
			}
		}
		return min(inf, 1+h)
	case kArray:
		h := int32(0)
		for _, it := range n.requiredItems() {
			h = max(h, s.minH[it])
		}
		return min(inf, 1+h)
	}
	return 1
}

// children are the nodes of the values directly inside a value of x
// (a leaf): its properties and undeclared properties, or its items.
func (s *Schema) children(x int32) []int32 {
	n := &s.nodes[x]
	switch n.kind {
	case kObject:
		if n.additional >= 0 {
			return append(slices.Clip(n.props), n.additional)
		}
		return n.props
	case kArray:
		list := slices.Clone(n.prefix)
		if n.maxItems < 0 || int(n.maxItems) > len(n.prefix) {
			list = append(list, n.items)
		}
		return list
	}
	return nil
}

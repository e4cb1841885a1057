package grammar

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
)

const (
	// maxThreads bounds the live alternatives (anyOf, enum, a key that may
	// still become several properties). Beyond it the extra alternatives
	// are dropped: the output stays valid, only less varied.
	maxThreads = 64
	// maxCache bounds the masks kept per Matcher (each is vocab/8 bytes:
	// 4 KiB for a 32k vocabulary).
	maxCache = 512
)

// Sub-states of a frame, per kind.
const (
	// root (node -1); n counts the bytes of the prefix or suffix matched
	rValue = iota
	rDone
	rPrefix
	rSuffix
)

const (
	oOpen  = iota // before '{'
	oFirst        // after '{'
	oKey          // inside a key
	oColon        // after a key
	oValue        // after ':'
	oAfter        // after a value
	oNext         // after ','
)

const (
	aOpen  = iota // before '['
	aFirst        // after '['
	aAfter        // after an item
	aNext         // after ','
)

const (
	sOpen = iota // before '"'
	sIn
)

const (
	nStart = iota
	nMinus
	nZero // complete
	nInt  // complete
	nDot
	nFrac // complete
	nE
	nESign
	nExp // complete
)

// frame is one level of a document being matched.
type frame struct {
	node int32 // -1: the document root
	n    int32 // string: code points; array: items; literal: bytes matched; number: bytes; object: current property (-1: additional)
	st   uint8
	ws   uint8 // whitespace since the last token: 0 none, 1 a space, 2+k a newline and k indentation bytes
	esc  uint8 // string escape: 1 after '\', 2..5 hex digits of \u to go (+1), escSurrogate after \uD
	utf  uint8 // string: UTF-8 continuation bytes to go (low 2 bits) and the next one's range (utfRange's code, bits 2-4)
	seen uint64
	// object key: declared names still possible are names[lo:hi]; kpos
	// bytes of the key typed (number: exponent digits after the first;
	// string of a format: the state of its automaton).
	lo, hi, kpos int32
}

// State is a set of alternative stacks ("threads"), concatenated.
type state struct {
	frames []frame
	ends   []int32 // end offset in frames of each thread
}

func (s *state) reset() {
	s.frames = s.frames[:0]
	s.ends = s.ends[:0]
}

func (s *state) thread(i int) []frame {
	start := int32(0)
	if i > 0 {
		start = s.ends[i-1]
	}
	return s.frames[start:s.ends[i]]
}

// result of a frame consuming a byte
type result uint8

const (
	rej  result = iota // the byte cannot come here
	ok                 // consumed
	done               // consumed, and the frame's value is complete
	pass               // not consumed: the frame's value is complete, the parent takes the byte
	push               // the parent expects a value: push child and give it the byte
)

// expand computes leaves: the non-anyOf nodes each node stands for. A
// cycle made only of anyOf and $ref (no object or array in between)
// consumes nothing, so every node on it stands for the same leaves: all
// those reachable from any of them (Tarjan's strongly connected
// components over the anyOf edges). A cycle that reaches no leaf at all
// is refused by CompileSchema before. It fails when a node stands for
// more than maxThreads alternatives.
func (s *Schema) expand() ([][]int32, error) {
	out := make([][]int32, len(s.nodes))
	index := make([]int32, len(s.nodes)) // 0 new, else visit order + 1
	low := make([]int32, len(s.nodes))
	onStack := make([]bool, len(s.nodes))
	inComp := make([]bool, len(s.nodes))
	var stack []int32
	next := int32(1)
	var walk func(n int32) error
	walk = func(n int32) error {
		if s.nodes[n].kind != kAnyOf {
			out[n] = []int32{n}
			return nil
		}
		index[n], low[n] = next, next
		next++
		stack = append(stack, n)
		onStack[n] = true
		for _, a := range s.nodes[n].alts {
			if s.nodes[a].kind != kAnyOf {
				continue
			}
			if index[a] == 0 {
				if err := walk(a); err != nil {
					return err
				}
				low[n] = min(low[n], low[a])
			} else if onStack[a] {
				low[n] = min(low[n], index[a])
			}
		}
		if low[n] != index[n] {
			return nil
		}
		// n roots a component: the nodes above it on the stack.
		i := len(stack) - 1
		for stack[i] != n {
			i--
		}
		comp := slices.Clone(stack[i:])
		stack = stack[:i]
		for _, m := range comp {
			onStack[m], inComp[m] = false, true
		}
		defer func() {
			for _, m := range comp {
				inComp[m] = false
			}
		}()
		var leaves []int32
		for _, m := range comp {
			for _, a := range s.nodes[m].alts {
				var add []int32
				switch {
				case s.nodes[a].kind != kAnyOf:
					add = []int32{a}
				case !inComp[a]:
					add = out[a]
				}
				for _, l := range add {
					if !slices.Contains(leaves, l) {
						leaves = append(leaves, l)
					}
				}
				if len(leaves) > maxThreads {
					return fmt.Errorf("%w: a value has more than %d alternatives (nested anyOf/enum)", ErrUnsupported, maxThreads)
				}
			}
		}
		for _, m := range comp {
			out[m] = leaves
		}
		return nil
	}
	for id := range s.nodes {
		if index[id] == 0 && out[id] == nil {
			if err := walk(int32(id)); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// Matcher checks and steers one output against a Schema. It implements
// model/engine's Constraint (Mask, Accept, Done). Not safe for concurrent
// use.
type Matcher struct {
	s      *Schema
	v      *Vocab
	leaves [][]int32
	cur    state
	tmp    state
	save   state // cur before a Write, restored when it fails
	ended  bool
	depth  []state // scratch of the vocabulary walk, per byte of a token
	cache  map[string][]uint64
	key    []byte
}

// NewMatcher returns a Matcher at the start of a document. v is the
// vocabulary Mask and Accept work on; it may be nil for byte-level use
// (Write).
func (s *Schema) NewMatcher(v *Vocab) *Matcher {
	m := &Matcher{s: s, v: v, leaves: s.leaves, cache: map[string][]uint64{}}
	root := frame{node: -1}
	if s.prefix != "" {
		root.st = rPrefix
	}
	m.cur.frames = append(m.cur.frames, root)
	m.cur.ends = append(m.cur.ends, 1)
	return m
}

// Write advances the matcher by p. If p does not continue a valid
// document the state is unchanged and the error wraps ErrRejected.
func (m *Matcher) Write(p []byte) error {
	m.save.frames = append(m.save.frames[:0], m.cur.frames...)
	m.save.ends = append(m.save.ends[:0], m.cur.ends...)
	for i, b := range p {
		if !m.step(&m.tmp, &m.cur, b) {
			m.cur, m.save = m.save, m.cur
			return fmt.Errorf("%w: byte %d (%q) of %q", ErrRejected, i, b, p)
		}
		m.cur, m.tmp = m.tmp, m.cur
	}
	return nil
}

// Done reports that a complete document has been written and nothing but
// whitespace may follow.
func (m *Matcher) Done() bool {
	if m.ended {
		return true
	}
	for i := range m.cur.ends {
		t := m.cur.thread(i)
		if len(t) == 1 && t[0].st == rDone {
			return true
		}
	}
	return false
}

// CanEnd reports whether the output written so far is a complete document
// (end of generation may come now).
func (m *Matcher) CanEnd() bool {
	for i := range m.cur.ends {
		t := m.cur.thread(i)
		if len(t) == 1 && t[0].st == rDone {
			return true
		}
		if len(t) == 2 && m.s.suffix == "" && isNumber(m.s.nodes[t[1].node].kind) && numComplete(t[1].st) &&
			(!m.s.nodes[t[1].node].bounded || m.s.nodes[t[1].node].inRange(&t[1])) {
			return true
		}
	}
	return false
}

func isNumber(k kind) bool { return k == kNumber || k == kInteger }

func numComplete(st uint8) bool { return st == nZero || st == nInt || st == nFrac || st == nExp }

func isWS(b byte) bool { return b == ' ' || b == '\n' || b == '\t' }

// step feeds b to every thread of src and writes the survivors to dst; it
// reports whether any survived.
func (m *Matcher) step(dst, src *state, b byte) bool {
	dst.reset()
	for i := range src.ends {
		if len(dst.ends) >= maxThreads {
			break
		}
		m.feed(dst, src.thread(i), b)
	}
	m.dedupe(dst)
	return len(dst.ends) > 0
}

// dedupe drops threads equal to an earlier one.
func (m *Matcher) dedupe(s *state) {
	if len(s.ends) < 2 {
		return
	}
	w, start := 0, int32(0)
	for i := range s.ends {
		t := s.thread(i)
		dup := false
		for j := 0; j < w && !dup; j++ {
			dup = slices.Equal(s.frames[s.startOf(j):s.ends[j]], t)
		}
		if !dup {
			copy(s.frames[start:], t)
			start += int32(len(t))
			s.ends[w] = start
			w++
		}
	}
	s.ends = s.ends[:w]
	s.frames = s.frames[:start]
}

func (s *state) startOf(i int) int32 {
	if i == 0 {
		return 0
	}
	return s.ends[i-1]
}

// feed appends to dst the threads that feeding b to thread t yields.
func (m *Matcher) feed(dst *state, t []frame, b byte) {
	start := len(dst.frames)
	dst.frames = append(dst.frames, t...)
	for {
		top := &dst.frames[len(dst.frames)-1]
		r := m.frameStep(top, b)
		switch r {
		case rej:
			dst.frames = dst.frames[:start]
			return
		case ok:
			if !m.fits(top, len(dst.frames)-start) {
				dst.frames = dst.frames[:start]
				return
			}
			dst.ends = append(dst.ends, int32(len(dst.frames)))
			return
		case done:
			dst.frames = dst.frames[:len(dst.frames)-1]
			dst.ends = append(dst.ends, int32(len(dst.frames)))
			return
		case pass:
			dst.frames = dst.frames[:len(dst.frames)-1]
			continue
		}
		// push: the child is the value the (updated) top frame expects,
		// in one of its alternatives that can be finished within
		// maxDepth frames.
		room := int32(maxDepth - (len(dst.frames) - start))
		child := m.childOf(top)
		leaves := m.leaves[child]
		if len(leaves) == 1 {
			if m.s.minH[leaves[0]] > room {
				dst.frames = dst.frames[:start]
				return
			}
			dst.frames = append(dst.frames, newFrame(m.s, leaves[0]))
			continue
		}
		base := slices.Clone(dst.frames[start:])
		dst.frames = dst.frames[:start]
		for _, l := range leaves {
			if len(dst.ends) >= maxThreads {
				return
			}
			if m.s.minH[l] <= room {
				m.feed(dst, append(base, newFrame(m.s, l)), b)
			}
		}
		return
	}
}

// fits reports whether the frame f, the d-th of its thread, can still
// be finished within maxDepth frames from its state: a key whose value
// needs more, or a comma where every value that could follow does, is
// refused, so the output never reaches a prefix it cannot complete.
func (m *Matcher) fits(f *frame, d int) bool {
	if f.node < 0 {
		return true // the root's value was checked where it was pushed
	}
	room := int32(maxDepth - d + 1)
	if m.s.needs[f.node] <= room {
		return true // far from the limit: the usual case, one comparison
	}
	n := &m.s.nodes[f.node]
	minH := m.s.minH
	inf := int32(maxDepth + 1)
	var h int32 // the frames below f its state still requires
	switch n.kind {
	case kArray:
		if f.st == aNext || ((f.st == aFirst || f.st == aAfter) && f.n < n.minItems) {
			h = minH[n.item(f.n)] // the item at the next position
		}
	case kObject:
		for i, p := range n.props {
			if n.required&^f.seen&(1<<i) != 0 {
				h = max(h, minH[p])
			}
		}
		switch f.st {
		case oColon, oValue:
			h = max(h, minH[m.childOf(f)])
		case oKey, oNext:
			// The key may still become any unseen declared name of the
			// range, or an undeclared one: the cheapest of them.
			lo, hi := int32(0), int32(len(n.names))
			if f.st == oKey {
				lo, hi = f.lo, f.hi
			}
			best := inf
			for i := lo; i < hi; i++ {
				if f.seen&(1<<i) == 0 {
					best = min(best, minH[n.props[i]])
				}
			}
			if n.additional >= 0 {
				best = min(best, minH[n.additional])
			}
			h = max(h, best)
		}
	}
	return 1+h <= room
}

func newFrame(s *Schema, id int32) frame {
	return frame{node: id, hi: int32(len(s.nodes[id].names))}
}

// childOf is the node of the value the frame f has just started.
func (m *Matcher) childOf(f *frame) int32 {
	if f.node < 0 {
		return m.s.root
	}
	n := &m.s.nodes[f.node]
	if n.kind == kArray {
		return n.item(f.n - 1) // the count includes the item begun
	}
	if f.n >= 0 {
		return n.props[f.n]
	}
	return n.additional
}

// space consumes whitespace between tokens, as llama.cpp's JSON grammar
// allows it: one space, or a newline and up to maxIndent spaces or tabs.
// More would only let a model stall in blank output.
func space(f *frame, b byte) result {
	switch {
	case f.ws == 0 && b == ' ':
		f.ws = 1
	case f.ws == 0 && b == '\n':
		f.ws = 2
	case f.ws >= 2 && f.ws < 2+maxIndent && (b == ' ' || b == '\t'):
		f.ws++
	default:
		return rej
	}
	return ok
}

// frameStep feeds b to one frame.
func (m *Matcher) frameStep(f *frame, b byte) result {
	if f.node < 0 { // the document
		switch {
		case f.st == rPrefix || f.st == rSuffix:
			lit := m.s.prefix
			if f.st == rSuffix {
				lit = m.s.suffix
			}
			if lit[f.n] != b {
				return rej
			}
			if f.n++; int(f.n) == len(lit) {
				f.n = 0
				if f.st == rPrefix {
					f.st = rValue
				} else {
					f.st = rDone
				}
			}
			return ok
		case isWS(b):
			return space(f, b)
		case f.st == rValue:
			f.st, f.ws = rDone, 0
			if m.s.suffix != "" {
				f.st = rSuffix
			}
			return push
		}
		return rej
	}
	n := &m.s.nodes[f.node]
	switch n.kind {
	case kLiteral:
		if int(f.n) < len(n.lit) && n.lit[f.n] == b {
			f.n++
			if int(f.n) == len(n.lit) {
				return done
			}
			return ok
		}
		return rej
	case kString:
		if f.st == sOpen {
			if b == '"' {
				f.st = sIn
				return ok
			}
			return rej
		}
		if n.format != nil {
			// A string of a format: its automaton's state in kpos; its
			// bytes are ASCII, one character each.
			if b == '"' {
				if f.n >= n.minLen && n.format.accept[f.kpos] {
					return done
				}
				return rej
			}
			next := n.format.step(f.kpos, b)
			if next < 0 || ((n.minLen > 0 || n.maxLen >= 0) && !n.format.fits(f.n+1, next, n.minLen, n.maxLen)) {
				return rej
			}
			f.kpos = next
			f.n++
			return ok
		}
		if f.esc == 0 && f.utf == 0 && b == '"' {
			if f.n >= n.minLen {
				return done
			}
			return rej
		}
		// A character starts at a byte outside an escape that is not a
		// UTF-8 continuation; an escape sequence is one character.
		newChar := f.esc == 0 && (b == '\\' || b&0xC0 != 0x80)
		if !lexString(f, b) {
			return rej
		}
		if newChar {
			if n.maxLen >= 0 && f.n >= n.maxLen {
				return rej
			}
			f.n++
			if n.maxLen < 0 {
				f.n = min(f.n, n.minLen) // the count no longer matters: keep states equal for the cache
			}
		}
		return ok
	case kNumber, kInteger:
		if n.bounded {
			return boundedStep(f, n, b)
		}
		return numberStep(f, b, n.kind == kInteger)
	case kArray:
		return m.arrayStep(f, n, b)
	case kObject:
		return m.objectStep(f, n, b)
	}
	return rej
}

// escSurrogate is frame.esc after "\uD": 3 hex digits to go, the first
// of them below 8.
const escSurrogate = 6

// lexString advances the escape state over one content byte (not the
// closing quote) and reports whether it is valid.
func lexString(f *frame, b byte) bool {
	switch {
	case f.esc == 1:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			f.esc = 0
		case 'u':
			f.esc = 5
		default:
			return false
		}
	case f.esc == escSurrogate:
		// \uD8xx to \uDFxx are UTF-16 surrogates: a lone one is not a
		// character (strict parsers refuse it) and a pair is one
		// character written as two escapes, which the length count
		// would take for two; the model writes such a character as
		// UTF-8 instead.
		if !isHex(b) || b >= '8' {
			return false
		}
		f.esc = 3
	case f.esc > 1:
		if !isHex(b) {
			return false
		}
		if f.esc == 5 && (b == 'd' || b == 'D') {
			f.esc = escSurrogate
			return true
		}
		f.esc--
		if f.esc == 1 {
			f.esc = 0
		}
	case f.utf != 0:
		if lo, hi := utfRange(f.utf >> 2); b < lo || b > hi {
			return false
		}
		f.utf = f.utf&3 - 1
	case b < 0x20:
		return false
	case b == '\\':
		f.esc = 1
	case b >= 0x80:
		// The first byte of a UTF-8 sequence: how many follow, and the
		// range of the next (no overlong forms, surrogates or code
		// points past U+10FFFF), as utf8.Valid checks.
		switch {
		case b >= 0xC2 && b <= 0xDF:
			f.utf = 1
		case b == 0xE0:
			f.utf = 2 | 1<<2
		case b == 0xED:
			f.utf = 2 | 2<<2
		case b >= 0xE1 && b <= 0xEF:
			f.utf = 2
		case b == 0xF0:
			f.utf = 3 | 3<<2
		case b >= 0xF1 && b <= 0xF3:
			f.utf = 3
		case b == 0xF4:
			f.utf = 3 | 4<<2
		default:
			return false // a continuation byte, or one UTF-8 never uses
		}
	}
	return true
}

// utfRange is the range of a UTF-8 continuation byte by frame.utf's
// code: any, or the first after E0, ED, F0 and F4.
func utfRange(code uint8) (lo, hi byte) {
	switch code {
	case 1:
		return 0xA0, 0xBF
	case 2:
		return 0x80, 0x9F
	case 3:
		return 0x90, 0xBF
	case 4:
		return 0x80, 0x8F
	}
	return 0x80, 0xBF
}

func isHex(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

func numberStep(f *frame, b byte, integer bool) result {
	next := -1
	switch f.st {
	case nStart:
		switch {
		case b == '-':
			next = nMinus
		case b == '0':
			next = nZero
		case b >= '1' && b <= '9':
			next = nInt
		}
	case nMinus:
		switch {
		case b == '0':
			next = nZero
		case b >= '1' && b <= '9':
			next = nInt
		}
	case nZero, nInt:
		switch {
		case f.st == nInt && isDigit(b):
			next = nInt
		case b == '.' && !integer:
			next = nDot
		case (b == 'e' || b == 'E') && !integer:
			next = nE
		}
	case nDot, nFrac:
		switch {
		case isDigit(b):
			next = nFrac
		case f.st == nFrac && (b == 'e' || b == 'E'):
			next = nE
		}
	case nE:
		switch {
		case b == '+' || b == '-':
			next = nESign
		case isDigit(b):
			next, f.kpos = nExp, 0
		}
	case nESign:
		if isDigit(b) {
			next, f.kpos = nExp, 0
		}
	case nExp:
		// kpos: exponent digits after the first; two at most keep the
		// value within a float64 (1E700 parses in few languages).
		if isDigit(b) && f.kpos < maxExpDigits-1 {
			next = nExp
			f.kpos++
		}
	}
	if next < 0 {
		if numComplete(f.st) {
			return pass
		}
		return rej
	}
	if f.n >= maxNumber || integer && f.n >= maxInteger {
		return rej
	}
	f.n++
	f.st = uint8(next)
	return ok
}

func (m *Matcher) arrayStep(f *frame, n *node, b byte) result {
	if f.st == aOpen {
		if b == '[' {
			f.st = aFirst
			return ok
		}
		return rej
	}
	if isWS(b) {
		return space(f, b)
	}
	switch f.st {
	case aFirst, aNext:
		if f.st == aFirst && b == ']' {
			if n.minItems == 0 {
				return done
			}
			return rej
		}
		if n.maxItems == 0 {
			return rej
		}
		f.n++
		if n.maxItems < 0 {
			f.n = min(f.n, n.countCap())
		}
		f.st, f.ws = aAfter, 0
		return push
	case aAfter:
		switch {
		case b == ',' && (n.maxItems < 0 || f.n < n.maxItems):
			f.st, f.ws = aNext, 0
			return ok
		case b == ']' && f.n >= n.minItems:
			return done
		}
	}
	return rej
}

// keyOpen reports whether another key may start: an undeclared one, or a
// declared one not yet written.
func keyOpen(f *frame, n *node) bool {
	return n.additional >= 0 || f.seen != (uint64(1)<<len(n.names))-1
}

func (m *Matcher) objectStep(f *frame, n *node, b byte) result {
	if f.st == oOpen {
		if b == '{' {
			f.st = oFirst
			return ok
		}
		return rej
	}
	if f.st == oKey {
		return keyStep(f, n, b)
	}
	if isWS(b) {
		return space(f, b)
	}
	f.ws = 0
	switch {
	case (f.st == oFirst || f.st == oNext) && b == '"' && keyOpen(f, n):
		f.st, f.lo, f.hi, f.kpos, f.esc = oKey, 0, int32(len(n.names)), 0, 0
		return ok
	case (f.st == oFirst || f.st == oAfter) && b == '}' && f.seen&n.required == n.required:
		return done
	case f.st == oColon && b == ':':
		f.st = oValue
		return ok
	case f.st == oValue:
		f.st = oAfter
		return push
	case f.st == oAfter && b == ',' && keyOpen(f, n):
		f.st = oNext
		return ok
	}
	return rej
}

// keyStep matches one byte of a key: declared names are matched on their
// escaped bytes; an undeclared key (when additional properties are
// allowed) is any JSON string.
func keyStep(f *frame, n *node, b byte) result {
	if f.esc == 0 && f.utf == 0 && b == '"' {
		if f.lo < f.hi && int(f.kpos) == len(n.names[f.lo]) {
			if f.seen&(1<<f.lo) != 0 {
				return rej // a duplicate key
			}
			f.seen |= 1 << f.lo
			f.n, f.st = f.lo, oColon
			return ok
		}
		if n.additional >= 0 {
			f.n, f.st = -1, oColon
			return ok
		}
		return rej
	}
	if f.esc == 1 && (b == 'u' || b == '/') && n.additional >= 0 && len(n.names) > 0 {
		// Another spelling of a declared name ("\u0061" for "a") would
		// pass for an undeclared key: its value would escape the
		// declared schema, and the name could come twice. Declared
		// names are matched as written plain, so keys here are too.
		return rej
	}
	if !lexString(f, b) {
		return rej
	}
	lo, hi := f.lo, f.hi
	for lo < hi && (int(f.kpos) >= len(n.names[lo]) || n.names[lo][f.kpos] < b) {
		lo++
	}
	e := lo
	for e < hi && int(f.kpos) < len(n.names[e]) && n.names[e][f.kpos] == b {
		e++
	}
	f.lo, f.hi = lo, e
	f.kpos++
	if n.additional >= 0 {
		if f.lo >= f.hi {
			f.lo, f.hi, f.kpos = 0, 0, 0 // undeclared: keep the state independent of the bytes, for the cache
		}
		return ok
	}
	for i := f.lo; i < f.hi; i++ {
		if f.seen&(1<<i) == 0 {
			return ok
		}
	}
	return rej
}

// Vocab is a vocabulary prepared for masking: the tokens' bytes sorted, so
// that a mask walks shared prefixes once. Build it once per model; it is
// immutable and safe for concurrent use.
type Vocab struct {
	pieces []string
	eog    []int32
	isEOG  []bool
	order  []int32 // ids of the tokens that write something, by bytes
	lcp    []int32 // lcp[i]: bytes order[i] shares with order[i-1]
	maxLen int
	// Inside a string most tokens are plain text: no quote, backslash or
	// control byte. plainRunes[id] is such a token's character count (-1
	// for the others), and other/otherLCP list the others like order/lcp,
	// so a mask inside a string walks only them.
	plainRunes      []int32
	other, otherLCP []int32
}

// NewVocab prepares pieces (the bytes each token id writes) and the
// end-of-generation ids. Tokens that write nothing (control tokens) are
// never allowed by a mask; end-of-generation tokens only when the
// document is complete.
func NewVocab(pieces []string, eog []int32) *Vocab {
	v := &Vocab{pieces: pieces, eog: eog, isEOG: make([]bool, len(pieces))}
	for _, id := range eog {
		if id >= 0 && int(id) < len(pieces) {
			v.isEOG[id] = true
		}
	}
	for id, p := range pieces {
		if p != "" && !v.isEOG[id] {
			v.order = append(v.order, int32(id))
			v.maxLen = max(v.maxLen, len(p))
		}
	}
	sort.Slice(v.order, func(i, j int) bool { return pieces[v.order[i]] < pieces[v.order[j]] })
	v.lcp = prefixLengths(pieces, v.order)
	v.plainRunes = make([]int32, len(pieces))
	for _, id := range v.order {
		v.plainRunes[id] = plainRunes(pieces[id])
		if v.plainRunes[id] < 0 {
			v.other = append(v.other, id)
		}
	}
	for id, p := range pieces {
		if p == "" || v.isEOG[id] {
			v.plainRunes[id] = -1
		}
	}
	v.otherLCP = prefixLengths(pieces, v.other)
	return v
}

// prefixLengths returns, for each token of sorted ids, the bytes it shares
// with the previous one.
func prefixLengths(pieces []string, ids []int32) []int32 {
	lcp := make([]int32, len(ids))
	for i := 1; i < len(ids); i++ {
		a, b := pieces[ids[i-1]], pieces[ids[i]]
		k := 0
		for k < len(a) && k < len(b) && a[k] == b[k] {
			k++
		}
		lcp[i] = int32(k)
	}
	return lcp
}

// plainRunes counts the characters of p (one it begins counts), or
// returns -1 when p has a byte with a meaning inside a JSON string (quote,
// backslash, control) or is not UTF-8 that a string outside a character
// can take: it may end inside a character, not begin inside one (such
// tokens are walked).
func plainRunes(p string) int32 {
	var f frame
	n := int32(0)
	for i := 0; i < len(p); i++ {
		b := p[i]
		if b == '"' || b == '\\' || !lexString(&f, b) {
			return -1
		}
		if b&0xC0 != 0x80 {
			n++
		}
	}
	return n
}

// Accept advances past token id. An end-of-generation token is accepted
// only when the document is complete; a token that does not continue the
// document is an error wrapping ErrRejected, and the state is unchanged.
func (m *Matcher) Accept(id int32) error {
	if id < 0 || int(id) >= len(m.v.pieces) {
		return fmt.Errorf("%w: token id %d outside the vocabulary", ErrRejected, id)
	}
	if m.v.isEOG[id] {
		if !m.CanEnd() {
			return fmt.Errorf("%w: end of generation before the JSON document is complete", ErrRejected)
		}
		m.ended = true
		return nil
	}
	p := m.v.pieces[id]
	if p == "" {
		return fmt.Errorf("%w: token %d writes nothing", ErrRejected, id)
	}
	return m.Write([]byte(p))
}

// Mask sets the logits of the tokens that may not come next to -Inf.
func (m *Matcher) Mask(logits []float32) {
	bits := m.Allowed()
	end := m.CanEnd()
	inf := float32(math.Inf(-1))
	for i := range logits {
		if i >= len(m.v.pieces) || (bits[i>>6]>>(i&63)&1 == 0 && !(end && m.v.isEOG[i])) {
			logits[i] = inf
		}
	}
}

// Allowed returns the bitset of the token ids that may come next (bit i
// of word i/64), end-of-generation tokens excluded. The slice is the
// Matcher's cache: read it, do not modify it.
func (m *Matcher) Allowed() []uint64 {
	m.key = m.cur.appendKey(m.key[:0])
	if b, ok := m.cache[string(m.key)]; ok {
		return b
	}
	v := m.v
	bits := make([]uint64, (len(v.pieces)+63)/64)
	if len(m.depth) < v.maxLen+1 {
		m.depth = make([]state, v.maxLen+1)
	}
	order, lcp := v.order, v.lcp
	if room, ok := m.inString(); ok {
		// Plain text keeps the string going: allowed while it fits.
		for id, r := range v.plainRunes {
			if r >= 0 && (room < 0 || r <= room) {
				bits[id>>6] |= 1 << (id & 63)
			}
		}
		order, lcp = v.other, v.otherLCP
	}
	m.depth[0] = m.cur
	valid := 0
	for i := 0; i < len(order); {
		p := v.pieces[order[i]]
		d := min(valid, int(lcp[i]))
		for d < len(p) && m.step(&m.depth[d+1], &m.depth[d], p[d]) {
			d++
		}
		valid = d
		if d == len(p) {
			id := order[i]
			bits[id>>6] |= 1 << (id & 63)
			i++
			continue
		}
		// Rejected at byte d: so is every following token sharing p[:d+1].
		for i++; i < len(order) && int(lcp[i]) > d; i++ {
		}
	}
	m.depth[0] = state{}
	if len(m.cache) < maxCache {
		m.cache[string(m.key)] = bits
	}
	return bits
}

// inString reports whether the matcher is inside a string value outside
// an escape, with one thread, and how many more characters the string
// takes (-1: any number).
func (m *Matcher) inString() (room int32, ok bool) {
	if len(m.cur.ends) != 1 {
		return 0, false
	}
	f := m.cur.frames[len(m.cur.frames)-1]
	if f.node < 0 {
		return 0, false
	}
	n := &m.s.nodes[f.node]
	if n.kind != kString || f.st != sIn || f.esc != 0 || f.utf != 0 || n.format != nil {
		return 0, false // a format's string takes only its own bytes: walked
	}
	if n.maxLen < 0 {
		return -1, true
	}
	return n.maxLen - f.n, true
}

// appendKey encodes the state for the mask cache.
func (s *state) appendKey(b []byte) []byte {
	for _, e := range s.ends {
		b = binary.LittleEndian.AppendUint32(b, uint32(e))
	}
	b = append(b, 0xff)
	for _, f := range s.frames {
		b = binary.LittleEndian.AppendUint32(b, uint32(f.node))
		b = binary.LittleEndian.AppendUint32(b, uint32(f.n))
		b = append(b, f.st, f.ws, f.esc, f.utf)
		b = binary.LittleEndian.AppendUint64(b, f.seen)
		b = binary.LittleEndian.AppendUint32(b, uint32(f.lo))
		b = binary.LittleEndian.AppendUint32(b, uint32(f.hi))
		b = binary.LittleEndian.AppendUint32(b, uint32(f.kpos))
	}
	return b
}

package tokenizer

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// This file holds a small backtracking regular-expression engine for the
// pre-tokenizer split expressions that llama.cpp runs through std::regex
// (ECMAScript semantics: leftmost match, alternatives tried in order, greedy
// quantifiers with backtracking, lookahead). Go's regexp package has no
// lookahead, which most of these expressions need (`\s+(?!\S)`).
//
// Supported syntax, which covers every expression in llama-vocab.cpp that has
// no dedicated hand-written splitter: literals, `.`, escapes (\s \S \d \D \w
// \W \r \n \t \f \v \p{..} \P{..} and escaped punctuation), classes with
// ranges and negation, groups `(..)`, `(?:..)`, `(?i:..)` (ASCII case folding),
// lookahead `(?=..)`, `(?!..)`, anchors `^` `$`, and the greedy quantifiers
// `* + ? {n} {n,} {n,m}`. Matching is on code points with llama.cpp's
// category model: \p{L}, \p{Lu}, \p{Ll}, \p{Lt}, \p{Lm} and \p{Lo} all mean
// "letter" (as in llama.cpp's collapsed representation), \s is the Unicode
// White_Space property, \d and \w are ASCII-only (std::regex in the C locale).

var errRegex = errors.New("unsupported split expression")

// reText is the input the engine matches on: code points and their flags.
type reText struct {
	cpts  []rune
	flags []cptFlags
}

// reMatcher matches at position pos of t within the fragment [lo, hi) and
// calls k with each candidate end position, in preference order, until k
// returns true.
type reNode interface {
	match(c *reCtx, pos int, k func(int) bool) bool
}

type reCtx struct {
	t      *reText
	lo, hi int
}

// ---- nodes ----

type reItem struct {
	lo, hi rune     // code point range (when cat == 0)
	cat    cptFlags // category / whitespace flags (when non-zero)
	neg    bool     // negated category (\S, \P{..}, \D ...)
}

type reClass struct {
	items  []reItem
	negate bool
	fold   bool // ASCII case-insensitive
}

func (cl *reClass) matches(r rune, f cptFlags) bool {
	m := cl.test(r, f)
	if !m && cl.fold {
		if r >= 'a' && r <= 'z' {
			m = cl.test(r-32, flagsOf(r-32))
		} else if r >= 'A' && r <= 'Z' {
			m = cl.test(r+32, flagsOf(r+32))
		}
	}
	return m != cl.negate
}

func (cl *reClass) test(r rune, f cptFlags) bool {
	for _, it := range cl.items {
		if it.cat != 0 {
			if (f&it.cat != 0) != it.neg {
				return true
			}
		} else if r >= it.lo && r <= it.hi {
			return true
		}
	}
	return false
}

func (cl *reClass) match(c *reCtx, pos int, k func(int) bool) bool {
	if pos < c.hi && cl.matches(c.t.cpts[pos], c.t.flags[pos]) {
		return k(pos + 1)
	}
	return false
}

type reSeq []reNode

func (s reSeq) match(c *reCtx, pos int, k func(int) bool) bool {
	if len(s) == 0 {
		return k(pos)
	}
	return s[0].match(c, pos, func(p int) bool { return s[1:].match(c, p, k) })
}

type reAlt []reNode

func (a reAlt) match(c *reCtx, pos int, k func(int) bool) bool {
	for _, n := range a {
		if n.match(c, pos, k) {
			return true
		}
	}
	return false
}

type reRepeat struct {
	sub      reNode
	min, max int // max < 0: unbounded
}

// single is a node that always consumes exactly one code point, decided by
// that code point alone.
type single interface {
	reNode
	matches(r rune, f cptFlags) bool
}

// reAnd is a sequence of lookaheads on one-code-point classes followed by one
// class, such as `(?=[\p{L}])[^a-z]`: it is a single code-point test, which
// lets repetitions of it run without recursion.
type reAnd struct {
	pos, neg []*reClass
	cls      *reClass
}

func (a *reAnd) matches(r rune, f cptFlags) bool {
	for _, c := range a.pos {
		if !c.matches(r, f) {
			return false
		}
	}
	for _, c := range a.neg {
		if c.matches(r, f) {
			return false
		}
	}
	return a.cls.matches(r, f)
}

func (a *reAnd) match(c *reCtx, pos int, k func(int) bool) bool {
	if pos < c.hi && a.matches(c.t.cpts[pos], c.t.flags[pos]) {
		return k(pos + 1)
	}
	return false
}

// asSingle turns n into a single code-point test where that is exact.
func asSingle(n reNode) reNode {
	seq, ok := n.(reSeq)
	if !ok {
		return n
	}
	and := &reAnd{}
	for i, e := range seq {
		switch e := e.(type) {
		case *reLook:
			cl, ok := e.sub.(*reClass)
			if !ok || i == len(seq)-1 {
				return n
			}
			if e.neg {
				and.neg = append(and.neg, cl)
			} else {
				and.pos = append(and.pos, cl)
			}
		case *reClass:
			if i != len(seq)-1 {
				return n
			}
			and.cls = e
		default:
			return n
		}
	}
	if and.cls == nil {
		return n
	}
	return and
}

func (r *reRepeat) match(c *reCtx, pos int, k func(int) bool) bool {
	if cl, ok := r.sub.(single); ok {
		// Single-code-point body: count the run, then back off greedily.
		n := 0
		for pos+n < c.hi && (r.max < 0 || n < r.max) && cl.matches(c.t.cpts[pos+n], c.t.flags[pos+n]) {
			n++
		}
		for ; n >= r.min; n-- {
			if k(pos + n) {
				return true
			}
		}
		return false
	}
	var rec func(count, p int) bool
	rec = func(count, p int) bool {
		if r.max < 0 || count < r.max {
			if r.sub.match(c, p, func(q int) bool {
				if q == p { // an empty iteration cannot make progress
					return false
				}
				return rec(count+1, q)
			}) {
				return true
			}
		}
		return count >= r.min && k(p)
	}
	return rec(0, pos)
}

type reLook struct {
	sub reNode
	neg bool
}

func (l *reLook) match(c *reCtx, pos int, k func(int) bool) bool {
	ok := l.sub.match(c, pos, func(int) bool { return true })
	if ok != l.neg {
		return k(pos)
	}
	return false
}

type reAnchor bool // true: end ($), false: start (^)

func (a reAnchor) match(c *reCtx, pos int, k func(int) bool) bool {
	if (a && pos == c.hi) || (!a && pos == c.lo) {
		return k(pos)
	}
	return false
}

// ---- parser ----

type reParser struct {
	src  []rune
	i    int
	fold bool
}

// compileRegex parses expr into a matcher.
func compileRegex(expr string) (reNode, error) {
	if !utf8.ValidString(expr) {
		return nil, fmt.Errorf("%w: invalid UTF-8", errRegex)
	}
	p := &reParser{src: []rune(expr)}
	n, err := p.parseAlt()
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", errRegex, expr, err)
	}
	if p.i != len(p.src) {
		return nil, fmt.Errorf("%w: %q: unexpected %q at %d", errRegex, expr, p.src[p.i], p.i)
	}
	return n, nil
}

func (p *reParser) more() bool { return p.i < len(p.src) }
func (p *reParser) peek() rune { return p.src[p.i] }
func (p *reParser) has(s string) bool {
	rs := []rune(s)
	if p.i+len(rs) > len(p.src) {
		return false
	}
	for j, r := range rs {
		if p.src[p.i+j] != r {
			return false
		}
	}
	return true
}

func (p *reParser) parseAlt() (reNode, error) {
	var alts reAlt
	for {
		s, err := p.parseSeq()
		if err != nil {
			return nil, err
		}
		alts = append(alts, s)
		if p.more() && p.peek() == '|' {
			p.i++
			continue
		}
		break
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return alts, nil
}

func (p *reParser) parseSeq() (reNode, error) {
	var seq reSeq
	for p.more() && p.peek() != '|' && p.peek() != ')' {
		atom, err := p.parseAtom()
		if err != nil {
			return nil, err
		}
		atom, err = p.parseQuant(atom)
		if err != nil {
			return nil, err
		}
		seq = append(seq, atom)
	}
	if len(seq) == 1 {
		return seq[0], nil
	}
	return seq, nil
}

func (p *reParser) parseQuant(atom reNode) (reNode, error) {
	for p.more() {
		min, max := -1, -1
		switch p.peek() {
		case '*':
			min, max = 0, -1
			p.i++
		case '+':
			min, max = 1, -1
			p.i++
		case '?':
			min, max = 0, 1
			p.i++
		case '{':
			j := p.i + 1
			num := func() (int, bool) {
				v, ok := 0, false
				for j < len(p.src) && p.src[j] >= '0' && p.src[j] <= '9' {
					v = v*10 + int(p.src[j]-'0')
					ok = true
					j++
					if v > 1<<16 {
						return 0, false
					}
				}
				return v, ok
			}
			lo, ok := num()
			if !ok {
				return nil, errors.New("bad repetition")
			}
			hi := lo
			if j < len(p.src) && p.src[j] == ',' {
				j++
				if v, ok := num(); ok {
					hi = v
				} else {
					hi = -1
				}
			}
			if j >= len(p.src) || p.src[j] != '}' || (hi >= 0 && hi < lo) {
				return nil, errors.New("bad repetition")
			}
			p.i = j + 1
			min, max = lo, hi
		default:
			return atom, nil
		}
		if p.more() && (p.peek() == '?' || p.peek() == '+') {
			return nil, errors.New("lazy and possessive quantifiers are not supported")
		}
		if _, isLook := atom.(*reLook); isLook {
			return nil, errors.New("quantified lookahead")
		}
		atom = &reRepeat{sub: asSingle(atom), min: min, max: max}
	}
	return atom, nil
}

func (p *reParser) parseAtom() (reNode, error) {
	r := p.peek()
	switch r {
	case '(':
		p.i++
		save := p.fold
		var look *reLook
		switch {
		case p.has("?:"):
			p.i += 2
		case p.has("?i:"):
			p.i += 3
			p.fold = true
		case p.has("?="):
			p.i += 2
			look = &reLook{}
		case p.has("?!"):
			p.i += 2
			look = &reLook{neg: true}
		case p.has("?"):
			return nil, errors.New("unsupported group")
		}
		inner, err := p.parseAlt()
		p.fold = save
		if err != nil {
			return nil, err
		}
		if !p.more() || p.peek() != ')' {
			return nil, errors.New("missing )")
		}
		p.i++
		if look != nil {
			look.sub = inner
			return look, nil
		}
		return inner, nil
	case '[':
		return p.parseClass()
	case '.':
		p.i++
		return &reClass{items: []reItem{{lo: '\n', hi: '\n'}, {lo: '\r', hi: '\r'}}, negate: true}, nil
	case '^':
		p.i++
		return reAnchor(false), nil
	case '$':
		p.i++
		return reAnchor(true), nil
	case '\\':
		it, err := p.parseEscape()
		if err != nil {
			return nil, err
		}
		return &reClass{items: it, fold: p.fold}, nil
	case '*', '+', '?', '{', ')', ']', '}':
		return nil, fmt.Errorf("unexpected %q", r)
	}
	p.i++
	return &reClass{items: []reItem{{lo: r, hi: r}}, fold: p.fold}, nil
}

// parseEscape parses a backslash escape and returns the code points it stands for.
func (p *reParser) parseEscape() ([]reItem, error) {
	p.i++ // backslash
	if !p.more() {
		return nil, errors.New("trailing backslash")
	}
	r := p.peek()
	p.i++
	switch r {
	case 's':
		return []reItem{{cat: flagWhitespace}}, nil
	case 'S':
		return []reItem{{cat: flagWhitespace, neg: true}}, nil
	case 'd':
		return []reItem{{lo: '0', hi: '9'}}, nil
	case 'D':
		return []reItem{{lo: 0, hi: '0' - 1}, {lo: '9' + 1, hi: utf8.MaxRune}}, nil
	case 'w':
		return []reItem{{lo: '0', hi: '9'}, {lo: 'A', hi: 'Z'}, {lo: 'a', hi: 'z'}, {lo: '_', hi: '_'}}, nil
	case 'W':
		return []reItem{{lo: 0, hi: '0' - 1}, {lo: '9' + 1, hi: 'A' - 1}, {lo: 'Z' + 1, hi: '_' - 1},
			{lo: '`', hi: '`'}, {lo: 'z' + 1, hi: utf8.MaxRune}}, nil
	case 'r':
		return []reItem{{lo: '\r', hi: '\r'}}, nil
	case 'n':
		return []reItem{{lo: '\n', hi: '\n'}}, nil
	case 't':
		return []reItem{{lo: '\t', hi: '\t'}}, nil
	case 'f':
		return []reItem{{lo: '\f', hi: '\f'}}, nil
	case 'v':
		return []reItem{{lo: '\v', hi: '\v'}}, nil
	case 'p', 'P':
		if !p.more() || p.peek() != '{' {
			return nil, errors.New(`\p without {`)
		}
		end := p.i
		for end < len(p.src) && p.src[end] != '}' {
			end++
		}
		if end >= len(p.src) {
			return nil, errors.New(`unterminated \p{`)
		}
		name := string(p.src[p.i+1 : end])
		p.i = end + 1
		var f cptFlags
		switch name {
		case "L", "Lu", "Ll", "Lt", "Lm", "Lo":
			f = flagLetter
		case "N", "Nd", "Nl", "No":
			f = flagNumber
		case "P":
			f = flagPunctuation
		case "S":
			f = flagSymbol
		case "M":
			f = flagMark
		case "Z":
			f = flagSeparator
		case "C":
			f = flagControl
		default:
			return nil, fmt.Errorf(`unsupported \p{%s}`, name)
		}
		return []reItem{{cat: f, neg: r == 'P'}}, nil
	}
	if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
		return nil, fmt.Errorf(`unsupported escape \%c`, r)
	}
	return []reItem{{lo: r, hi: r}}, nil
}

func (p *reParser) parseClass() (reNode, error) {
	p.i++ // [
	cl := &reClass{fold: p.fold}
	if p.more() && p.peek() == '^' {
		cl.negate = true
		p.i++
	}
	first := true
	for {
		if !p.more() {
			return nil, errors.New("missing ]")
		}
		r := p.peek()
		if r == ']' && !first {
			p.i++
			break
		}
		first = false
		var lo rune
		if r == '\\' {
			its, err := p.parseEscape()
			if err != nil {
				return nil, err
			}
			if len(its) != 1 || its[0].cat != 0 || its[0].lo != its[0].hi {
				cl.items = append(cl.items, its...)
				continue
			}
			lo = its[0].lo
		} else {
			lo = r
			p.i++
		}
		// range?
		if p.i+1 < len(p.src) && p.peek() == '-' && p.src[p.i+1] != ']' {
			p.i++
			var hi rune
			if p.peek() == '\\' {
				its, err := p.parseEscape()
				if err != nil {
					return nil, err
				}
				if len(its) != 1 || its[0].cat != 0 || its[0].lo != its[0].hi {
					return nil, errors.New("bad class range")
				}
				hi = its[0].lo
			} else {
				hi = p.peek()
				p.i++
			}
			if hi < lo {
				return nil, errors.New("bad class range")
			}
			cl.items = append(cl.items, reItem{lo: lo, hi: hi})
			continue
		}
		cl.items = append(cl.items, reItem{lo: lo, hi: lo})
	}
	return cl, nil
}

// ---- splitting ----

// regexSplitter splits every fragment at the matches of one expression, as
// llama.cpp's unicode_regex_split_stl does: each match becomes a fragment, and
// so does each stretch of text between matches.
type regexSplitter struct {
	re reNode
}

func (s *regexSplitter) split(t *reText, offsets []int, out []int) []int {
	start := 0
	for _, length := range offsets {
		c := &reCtx{t: t, lo: start, hi: start + length}
		prev := start
		end := 0
		accept := func(e int) bool { end = e; return true }
		for pos := start; pos < c.hi; {
			if !s.re.match(c, pos, accept) {
				pos++
				continue
			}
			if pos > prev {
				out = append(out, pos-prev)
			}
			if end > pos {
				out = append(out, end-pos)
				prev = end
				pos = end
			} else { // empty match: split here, move on by one code point
				prev = pos
				pos++
			}
		}
		if c.hi > prev {
			out = append(out, c.hi-prev)
		}
		start += length
	}
	return out
}

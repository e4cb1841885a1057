package grammar

import (
	"encoding/json"
	"fmt"
	"math/big"
)

// boundKeywords are the keywords that bound a number (multipleOf: to
// its multiples).
var boundKeywords = []string{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}

// maxMagnitude is the largest integer the matcher writes: maxInteger-1
// digits (the sign takes a byte of maxInteger).
const maxMagnitude int64 = 1e16 - 1

// A number with bounds is written in fixed point, without an exponent: at
// most fixedDigits digits before the point and as many after it, so that
// its value in units of 10^-fixedDigits (fixedUnit per 1) is an int64,
// compared with the bounds exactly as an integer is. 9 and 9 hold what
// bounded fields hold (a price, a probability, a temperature).
const (
	fixedDigits       = 9
	fixedUnit   int64 = 1e9                     // 10^fixedDigits
	maxFixed    int64 = fixedUnit*fixedUnit - 1 // 999999999.999999999 in units
)

// numberBounds are a schema's bounds on numbers, exact (big.Rat); nil: none.
type numberBounds struct {
	lo, hi     *big.Rat
	loEx, hiEx bool     // exclusive
	mult       *big.Rat // multipleOf, > 0
}

// hasBounds reports whether s bounds numbers.
func hasBounds(s map[string]any) bool {
	for _, k := range boundKeywords {
		if _, ok := s[k]; ok {
			return true
		}
	}
	return false
}

// readBounds reads minimum, maximum, exclusiveMinimum and
// exclusiveMaximum (a number, as JSON Schema has written them since
// draft 6, or draft 4's boolean that makes minimum or maximum exclusive).
func readBounds(s map[string]any, path string) (*numberBounds, error) {
	if !hasBounds(s) {
		return nil, nil
	}
	var b numberBounds
	num := func(k string) (*big.Rat, error) {
		v, ok := s[k]
		if !ok {
			return nil, nil
		}
		n, ok := v.(json.Number)
		r, ok2 := new(big.Rat).SetString(string(n))
		if !ok || !ok2 {
			return nil, fmt.Errorf("%w: %s/%s must be a number", ErrBadSchema, path, k)
		}
		return r, nil
	}
	var err error
	if b.mult, err = num("multipleOf"); err != nil {
		return nil, err
	}
	if b.mult != nil && b.mult.Sign() <= 0 {
		return nil, fmt.Errorf("%w: %s/multipleOf must be greater than 0", ErrBadSchema, path)
	}
	if b.lo, err = num("minimum"); err != nil {
		return nil, err
	}
	if b.hi, err = num("maximum"); err != nil {
		return nil, err
	}
	for _, side := range []struct {
		key    string
		bound  **big.Rat
		ex     *bool
		keepLo bool // the stricter of minimum and exclusiveMinimum is the larger
	}{{"exclusiveMinimum", &b.lo, &b.loEx, true}, {"exclusiveMaximum", &b.hi, &b.hiEx, false}} {
		switch v := s[side.key].(type) {
		case nil:
			if _, ok := s[side.key]; ok {
				return nil, fmt.Errorf("%w: %s/%s must be a number", ErrBadSchema, path, side.key)
			}
		case bool: // draft 4: minimum (maximum) itself is exclusive
			*side.ex = v && *side.bound != nil
		default:
			r, err := num(side.key)
			if err != nil {
				return nil, err
			}
			c := 0
			if *side.bound != nil {
				c = r.Cmp(*side.bound)
			}
			if *side.bound == nil || (side.keepLo && c >= 0) || (!side.keepLo && c <= 0) {
				*side.bound, *side.ex = r, true
			}
		}
	}
	return &b, nil
}

// step returns, for values counted in units of 1/unit (1 for integers,
// fixedUnit for numbers in fixed point), the least k such that a value is
// a multiple of multipleOf exactly when its count of units is a multiple
// of k: with multipleOf p/q (reduced), v/unit = n·p/q for an integer n
// when v is a multiple of unit·p/gcd(unit·p, q). 0: no multipleOf; past
// limit, limit+1 (only 0 is a multiple).
func (b *numberBounds) step(unit, limit int64) int64 {
	if b.mult == nil {
		return 0
	}
	up := new(big.Int).Mul(big.NewInt(unit), b.mult.Num())
	k := new(big.Int).Quo(up, new(big.Int).GCD(nil, nil, up, b.mult.Denom()))
	if k.Cmp(big.NewInt(limit)) > 0 {
		return limit + 1
	}
	return k.Int64()
}

// contains reports whether the number r is within the bounds.
func (b *numberBounds) contains(r *big.Rat) bool {
	if b.mult != nil && !new(big.Rat).Quo(r, b.mult).IsInt() {
		return false
	}
	if b.lo != nil {
		if c := r.Cmp(b.lo); c < 0 || (c == 0 && b.loEx) {
			return false
		}
	}
	if b.hi != nil {
		if c := r.Cmp(b.hi); c > 0 || (c == 0 && b.hiEx) {
			return false
		}
	}
	return true
}

// scaled returns the bounds times k.
func (b *numberBounds) scaled(k int64) *numberBounds {
	out := *b
	r := new(big.Rat).SetInt64(k)
	if b.lo != nil {
		out.lo = new(big.Rat).Mul(b.lo, r)
	}
	if b.hi != nil {
		out.hi = new(big.Rat).Mul(b.hi, r)
	}
	return &out
}

// integers returns the range of integers within the bounds, clamped to
// ±limit; ok is false when none is.
func (b *numberBounds) integers(limit int64) (lo, hi int64, ok bool) {
	lo, hi = -limit, limit
	if b.lo != nil {
		// The least integer above lo (or at it, when inclusive).
		q := new(big.Int).Quo(b.lo.Num(), b.lo.Denom()) // truncated toward zero
		f := new(big.Rat).SetInt(q)
		if f.Cmp(b.lo) < 0 || (f.Cmp(b.lo) == 0 && b.loEx) {
			q.Add(q, big.NewInt(1))
		}
		if q.Cmp(big.NewInt(limit)) > 0 {
			return 0, 0, false
		}
		if q.Cmp(big.NewInt(lo)) > 0 {
			lo = q.Int64()
		}
	}
	if b.hi != nil {
		q := new(big.Int).Quo(b.hi.Num(), b.hi.Denom())
		f := new(big.Rat).SetInt(q)
		if f.Cmp(b.hi) > 0 || (f.Cmp(b.hi) == 0 && b.hiEx) {
			q.Sub(q, big.NewInt(1))
		}
		if q.Cmp(big.NewInt(-limit)) < 0 {
			return 0, 0, false
		}
		if q.Cmp(big.NewInt(hi)) < 0 {
			hi = q.Int64()
		}
	}
	return lo, hi, lo <= hi
}

// magnitudes returns the magnitudes an integer of sign neg may have
// within [lo, hi] (empty when a > b).
func magnitudes(lo, hi int64, neg bool) (a, b int64) {
	if neg {
		return max(-hi, 0), -lo
	}
	return max(lo, 0), hi
}

// reachable reports whether the number being written in f (sign in esc;
// in seen the magnitude so far, an integer's, or a number's in units of
// 10^-fixedDigits) can still end within the node's bounds, within the
// digits the matcher writes and without a leading zero.
func (n *node) reachable(f *frame) bool {
	a, b := magnitudes(n.lo, n.hi, f.esc == 1)
	if a > b {
		return false
	}
	m := int64(f.seen)
	// within reports whether [lo, hi] meets [a, b] at a multiple of mult.
	within := func(lo, hi int64) bool {
		lo, hi = max(lo, a), min(hi, b)
		return lo <= hi && (n.mult == 0 || (lo+n.mult-1)/n.mult*n.mult <= hi)
	}
	if n.kind == kInteger {
		switch f.st {
		case nMinus:
			return true // any magnitude is still possible
		case nZero:
			return a == 0
		}
		// m followed by j more digits: [m*10^j, m*10^j + 10^j - 1].
		for span := int64(1); ; span *= 10 {
			if within(m*span, m*span+span-1) {
				return true
			}
			if m*span > maxMagnitude/10 {
				return false // no room for another digit
			}
		}
	}
	switch f.st {
	case nMinus:
		return true
	case nZero, nDot:
		return within(m, m+fixedUnit-1) // the fraction is still to come
	case nFrac:
		span := int64(1)
		for range fixedDigits - f.kpos {
			span *= 10
		}
		return within(m, m+span-1)
	}
	// An integer part of k digits, m in units, followed by j more digits
	// and any fraction: [m*10^j, (m+1 unit)*10^j - 1].
	for span := int64(1); ; span *= 10 {
		if within(m*span, (m+fixedUnit)*span-1) {
			return true
		}
		if m*span > maxFixed/10 {
			return false
		}
	}
}

// anyValue reports whether some value is within the node's bounds (and
// a multiple of its multipleOf).
func (n *node) anyValue() bool {
	for _, neg := range []bool{false, true} {
		if a, b := magnitudes(n.lo, n.hi, neg); a <= b && (n.mult == 0 || (a+n.mult-1)/n.mult*n.mult <= b) {
			return true
		}
	}
	return false
}

// inRange reports whether the complete number in f is within the bounds.
func (n *node) inRange(f *frame) bool {
	a, b := magnitudes(n.lo, n.hi, f.esc == 1)
	m := int64(f.seen)
	return m >= a && m <= b && (n.mult == 0 || m%n.mult == 0)
}

// boundedStep is numberStep for a number with bounds: the sign goes to
// esc and the magnitude to seen (a number's in fixed point, its fraction
// digits counted in kpos), and a byte that leaves no value within the
// bounds, or an end outside them, is refused. A bounded number has no
// exponent and at most fixedDigits digits on each side of its point.
func boundedStep(f *frame, n *node, b byte) result {
	integer := n.kind == kInteger
	if !integer && (b == 'e' || b == 'E') {
		return rej
	}
	r := numberStep(f, b, integer)
	switch r {
	case pass:
		if !n.inRange(f) {
			return rej
		}
	case ok:
		d := uint64(b - '0')
		switch {
		case b == '-':
			f.esc = 1
		case b == '.':
			f.kpos = 0
		case integer:
			f.seen = f.seen*10 + d
		case f.st == nFrac:
			if f.kpos++; f.kpos > fixedDigits {
				return rej
			}
			unit := uint64(1)
			for range fixedDigits - f.kpos {
				unit *= 10
			}
			f.seen += d * unit
		default: // a digit of the integer part
			if f.seen*10+d*uint64(fixedUnit) > uint64(maxFixed) {
				return rej
			}
			f.seen = f.seen*10 + d*uint64(fixedUnit)
		}
		if !n.reachable(f) {
			return rej
		}
	}
	return r
}

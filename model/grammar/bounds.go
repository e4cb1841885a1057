package grammar

import (
	"encoding/json"
	"fmt"
	"math/big"
)

// boundKeywords are the keywords that bound a number.
var boundKeywords = []string{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}

// maxMagnitude is the largest integer the matcher writes: maxInteger-1
// digits (the sign takes a byte of maxInteger).
const maxMagnitude = 1e16 - 1

// numberBounds are a schema's bounds on numbers, exact (big.Rat); nil: none.
type numberBounds struct {
	lo, hi     *big.Rat
	loEx, hiEx bool // exclusive
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

// contains reports whether the number r is within the bounds.
func (b *numberBounds) contains(r *big.Rat) bool {
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

// integers returns the range of integers within the bounds, clamped to
// what the matcher writes; ok is false when none is.
func (b *numberBounds) integers() (lo, hi int64, ok bool) {
	lo, hi = -maxMagnitude, maxMagnitude
	if b.lo != nil {
		// The least integer above lo (or at it, when inclusive).
		q := new(big.Int).Quo(b.lo.Num(), b.lo.Denom()) // truncated toward zero
		f := new(big.Rat).SetInt(q)
		if f.Cmp(b.lo) < 0 || (f.Cmp(b.lo) == 0 && b.loEx) {
			q.Add(q, big.NewInt(1))
		}
		if q.Cmp(big.NewInt(maxMagnitude)) > 0 {
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
		if q.Cmp(big.NewInt(-maxMagnitude)) < 0 {
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

// reachable reports whether the integer being written in f (sign in esc,
// magnitude so far in seen) can still end within the node's bounds,
// within maxMagnitude and without a leading zero.
func (n *node) reachable(f *frame) bool {
	a, b := magnitudes(n.lo, n.hi, f.esc == 1)
	if a > b {
		return false
	}
	switch f.st {
	case nMinus:
		return true // any magnitude is still possible
	case nZero:
		return a == 0
	}
	m := int64(f.seen)
	if m >= a && m <= b {
		return true
	}
	// m followed by j more digits: [m*10^j, m*10^j + 10^j - 1].
	for span := int64(10); m*span <= maxMagnitude; span *= 10 {
		if m*span <= b && m*span+span-1 >= a {
			return true
		}
	}
	return false
}

// inRange reports whether the complete integer in f is within the bounds.
func (n *node) inRange(f *frame) bool {
	a, b := magnitudes(n.lo, n.hi, f.esc == 1)
	m := int64(f.seen)
	return m >= a && m <= b
}

// boundedIntStep is numberStep for an integer with bounds: the sign goes
// to esc and the magnitude to seen, and a digit that leaves no value
// within the bounds, or an end outside them, is refused.
func boundedIntStep(f *frame, n *node, b byte) result {
	r := numberStep(f, b, true)
	switch r {
	case pass:
		if !n.inRange(f) {
			return rej
		}
	case ok:
		if b == '-' {
			f.esc = 1
		} else {
			f.seen = f.seen*10 + uint64(b-'0')
		}
		if !n.reachable(f) {
			return rej
		}
	}
	return r
}

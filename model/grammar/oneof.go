package grammar

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"unicode/utf8"
)

// maxDisjointSteps bounds the work of proving oneOf members disjoint; a
// proof that needs more is taken as failed (the schema is refused).
const maxDisjointSteps = 1 << 20

// checkOneOf refuses a oneOf whose members are not provably disjoint. The
// matcher follows every member as anyOf does, so a value that two members
// match would be written although oneOf rejects it. Members are disjoint
// when no value can match both: different types, different literals
// (enum, const), string or array lengths that do not meet, or objects
// with a property one requires that the other requires with a disjoint
// value or does not allow (a discriminated union). Anything else is
// refused as unsupported, pointing at anyOf.
func (s *Schema) checkOneOf(list []oneOf) error {
	for _, o := range list {
		d := disjointness{s: s, memo: map[[2]int32]bool{}}
		for i := range o.members {
			for j := i + 1; j < len(o.members); j++ {
				if !d.nodes(o.members[i], o.members[j]) {
					if d.steps > maxDisjointSteps {
						return fmt.Errorf("%w: %s is too large to check that no value matches two of its members (as oneOf requires): use anyOf if either may match",
							ErrUnsupported, o.path)
					}
					return fmt.Errorf("%w: %s: members %d and %d can match the same value, which oneOf forbids and generation cannot rule out; "+
						"only oneOf members that no value matches twice are supported (other types, consts, or a required property with different consts): use anyOf if either may match",
						ErrUnsupported, o.path, o.index[i], o.index[j])
				}
			}
		}
	}
	return nil
}

// disjointness proves that no value matches two nodes.
type disjointness struct {
	s     *Schema
	memo  map[[2]int32]bool // a pair being proved is taken as not disjoint
	steps int
}

func (d *disjointness) nodes(a, b int32) bool {
	if a == b {
		return false
	}
	key := [2]int32{min(a, b), max(a, b)}
	if v, ok := d.memo[key]; ok {
		return v
	}
	d.memo[key] = false
	if d.steps++; d.steps > maxDisjointSteps {
		return false
	}
	ok := true
	for _, x := range d.s.leaves[a] {
		for _, y := range d.s.leaves[b] {
			if d.steps++; d.steps > maxDisjointSteps {
				ok = false
			} else {
				ok = d.leaves(x, y)
			}
			if !ok {
				break
			}
		}
		if !ok {
			break
		}
	}
	d.memo[key] = ok
	return ok
}

// class is the kind of JSON value a leaf matches: its first byte's.
func (d *disjointness) class(n *node) byte {
	switch n.kind {
	case kObject:
		return '{'
	case kArray:
		return '['
	case kString:
		return '"'
	case kNumber, kInteger:
		return '0'
	}
	switch c := n.lit[0]; c {
	case '{', '[', '"', 't', 'f', 'n':
		return c
	}
	return '0'
}

func (d *disjointness) leaves(a, b int32) bool {
	if a == b {
		return false
	}
	x, y := &d.s.nodes[a], &d.s.nodes[b]
	if d.class(x) != d.class(y) {
		return true
	}
	if y.kind == kLiteral && x.kind != kLiteral {
		x, y = y, x
	}
	switch {
	case x.kind == kLiteral && y.kind == kLiteral:
		if d.class(x) == '0' {
			// 1 and 1.0 are the same number.
			fx, err1 := strconv.ParseFloat(x.lit, 64)
			fy, err2 := strconv.ParseFloat(y.lit, 64)
			return err1 == nil && err2 == nil && fx != fy
		}
		if c := d.class(x); c == '{' || c == '[' {
			// Keys are written sorted, but 1 and 1.0 inside are equal.
			var vx, vy any
			return json.Unmarshal([]byte(x.lit), &vx) != nil || json.Unmarshal([]byte(y.lit), &vy) != nil || !reflect.DeepEqual(vx, vy)
		}
		return x.lit != y.lit
	case x.kind == kLiteral && y.kind == kString:
		var v string
		if err := json.Unmarshal([]byte(x.lit), &v); err != nil {
			return false
		}
		n := int32(utf8.RuneCountInString(v))
		return n < y.minLen || (y.maxLen >= 0 && n > y.maxLen) || (y.format != nil && !y.format.matches(v))
	case x.kind == kLiteral && y.kind == kInteger:
		f, err := strconv.ParseFloat(x.lit, 64)
		// Not a whole number (math.Trunc: a conversion through int64 is
		// undefined past 2^63, and 1e20 is an integer to JSON Schema).
		return err == nil && !math.IsInf(f, 0) && (f != math.Trunc(f) || (y.bounded && (f < float64(y.lo) || f > float64(y.hi))))
	case x.kind == kString && y.kind == kString:
		return (x.maxLen >= 0 && x.maxLen < y.minLen) || (y.maxLen >= 0 && y.maxLen < x.minLen)
	case x.kind == kArray && y.kind == kArray:
		if (x.maxItems >= 0 && x.maxItems < y.minItems) || (y.maxItems >= 0 && y.maxItems < x.minItems) {
			return true
		}
		// A position both must fill, with items no value matches twice.
		for i := int32(0); i < min(x.minItems, y.minItems) && int(i) <= max(len(x.prefix), len(y.prefix)); i++ {
			if d.nodes(x.item(i), y.item(i)) {
				return true
			}
		}
		return false
	case x.kind == kObject && y.kind == kObject:
		return d.objects(x, y) || d.objects(y, x)
	}
	return false
}

// objects reports whether x requires a property that y forbids or
// allows only with a value disjoint from x's.
func (d *disjointness) objects(x, y *node) bool {
	for i, name := range x.names {
		if x.required&(1<<i) == 0 {
			continue
		}
		if d.steps++; d.steps > maxDisjointSteps {
			return false
		}
		j, found := slices.BinarySearch(y.names, name) // names are sorted
		if !found {
			j = -1
		}
		switch {
		case j < 0 && y.additional < 0:
			return true
		case j < 0:
			if d.nodes(x.props[i], y.additional) {
				return true
			}
		case d.nodes(x.props[i], y.props[j]):
			// Where y has the property at all, its value is y's.
			return true
		}
	}
	return false
}

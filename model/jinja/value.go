package jinja

import (
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Values at render time are:
//
//	nil                none
//	undefined          Jinja's Undefined
//	bool, int64, float64, string
//	*list              list, or tuple when tuple is set
//	*dict              dict with insertion order
//	*namespace         namespace(...)
//	*macro             a macro (or a call block's caller)
//	builtinFunc        a global function (range, namespace, ...)
//	*method            a bound method (x.items, s.strip, loop.cycle ...)
//	*loopState         the loop variable
type undefined struct{ name string }

type list struct {
	items []any
	tuple bool
}

// dict keeps insertion order. Keys are normalized with hashKey; small
// dicts are searched linearly, larger ones through index.
type dict struct {
	keys  []any
	vals  []any
	index map[any]int
}

type namespace struct{ attrs *dict }

type macro struct {
	def     *macroDef
	closure *scope
	caller  *macro // the caller of a {% call %} block, if any
}

type builtinFunc string

type method struct {
	recv any
	name string
}

type loopState struct {
	items  []any
	index0 int
	depth  int
	cycle  int
}

const dictIndexAt = 8

func newDict(n int) *dict {
	return &dict{keys: make([]any, 0, n), vals: make([]any, 0, n)}
}

func (d *dict) len() int { return len(d.keys) }

// find returns the position of the normalized key k, or -1.
func (d *dict) find(k any) int {
	if d.index != nil {
		if i, ok := d.index[k]; ok {
			return i
		}
		return -1
	}
	for i, kk := range d.keys {
		if kk == k {
			return i
		}
	}
	return -1
}

func (d *dict) get(k any) (any, bool) {
	if i := d.find(k); i >= 0 {
		return d.vals[i], true
	}
	return nil, false
}

// set stores k (normalized) → v, keeping the first insertion's position.
func (d *dict) set(k, v any) {
	if i := d.find(k); i >= 0 {
		d.vals[i] = v
		return
	}
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	if d.index != nil {
		d.index[k] = len(d.keys) - 1
	} else if len(d.keys) > dictIndexAt {
		d.index = make(map[any]int, len(d.keys)*2)
		for i, kk := range d.keys {
			d.index[kk] = i
		}
	}
}

// hashKey normalizes a dict key the way Python hashes: 1, 1.0 and True are
// the same key. Only scalars may be keys.
func hashKey(v any) (any, bool) {
	switch x := v.(type) {
	case string, int64, nil:
		return x, true
	case bool:
		if x {
			return int64(1), true
		}
		return int64(0), true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<62 {
			return int64(x), true
		}
		return x, true
	}
	return nil, false
}

// typeName is the Python type name of v, for error messages.
func typeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "NoneType"
	case undefined:
		return "Undefined"
	case bool:
		return "bool"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case *list:
		if x.tuple {
			return "tuple"
		}
		return "list"
	case *dict:
		return "dict"
	case *namespace:
		return "Namespace"
	case *macro:
		return "Macro"
	case builtinFunc:
		return "builtin_function"
	case *method:
		return "method"
	case *loopState:
		return "LoopContext"
	}
	return "object"
}

// truthy is Python's bool(v).
func truthy(v any) bool {
	switch x := v.(type) {
	case nil, undefined:
		return false
	case bool:
		return x
	case int64:
		return x != 0
	case float64:
		return x != 0
	case string:
		return x != ""
	case *list:
		return len(x.items) > 0
	case *dict:
		return x.len() > 0
	}
	return true
}

// toNumber reports whether v is a number (int, float or bool, as Python's
// numbers.Number) and gives it as int64 (when isInt) and float64.
func toNumber(v any) (i int64, f float64, isInt, ok bool) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, 1, true, true
		}
		return 0, 0, true, true
	case int64:
		return x, float64(x), true, true
	case float64:
		return 0, x, false, true
	}
	return 0, 0, false, false
}

// formatFloat is Python's repr(float).
func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX, shortest
	mant, expS, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expS)
	neg := strings.HasPrefix(mant, "-")
	mant = strings.TrimPrefix(mant, "-")
	digits := strings.Replace(mant, ".", "", 1)
	var out string
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		sign := "+"
		if exp < 0 {
			sign = "-"
			exp = -exp
		}
		out = m + "e" + sign + padExp(exp)
	} else if exp < 0 {
		out = "0." + strings.Repeat("0", -exp-1) + digits
	} else if len(digits) <= exp+1 {
		out = digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	} else {
		out = digits[:exp+1] + "." + digits[exp+1:]
	}
	if neg {
		out = "-" + out
	}
	return out
}

func padExp(e int) string {
	if e < 10 {
		return "0" + strconv.Itoa(e)
	}
	return strconv.Itoa(e)
}

// reprString is Python's repr(str).
func reprString(s string) string {
	q := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		q = '"'
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte(q)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])|0x100, 16)[1:])
		case r == '\\':
			b.WriteString(`\\`)
		case r == rune(q):
			b.WriteByte('\\')
			b.WriteByte(q)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(r)|0x100, 16)[1:])
		case r >= 0x80 && r < 0xa0:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(r), 16))
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	b.WriteByte(q)
	return b.String()
}

// Conversion of Go data.

// fromGo converts render data into template values. depth bounds nesting
// (and catches cycles); the evaluator charges the allocations.
func (ev *evaluator) fromGo(v any, depth int) (any, error) {
	if depth > ev.b.MaxDepth {
		return nil, ev.limit(LimitDepth, int64(ev.b.MaxDepth), 0)
	}
	if err := ev.step(); err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case bool:
		return x, nil
	case string:
		return x, nil
	case int:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return float64(x), nil
		}
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return float64(x), nil
		}
		return int64(x), nil
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, errorf(0, "bad json.Number %q", string(x))
		}
		return f, nil
	case []any:
		if x == nil {
			return nil, nil
		}
		l := &list{items: make([]any, len(x))}
		if err := ev.alloc(int64(len(x)) * 16); err != nil {
			return nil, err
		}
		for i, e := range x {
			c, err := ev.fromGo(e, depth+1)
			if err != nil {
				return nil, err
			}
			l.items[i] = c
		}
		return l, nil
	case Object:
		d := newDict(len(x))
		if err := ev.alloc(int64(len(x)) * 48); err != nil {
			return nil, err
		}
		for _, kv := range x {
			c, err := ev.fromGo(kv.Value, depth+1)
			if err != nil {
				return nil, err
			}
			d.set(kv.Key, c)
		}
		return d, nil
	case map[string]any:
		if x == nil {
			return nil, nil
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		d := newDict(len(x))
		if err := ev.alloc(int64(len(x)) * 48); err != nil {
			return nil, err
		}
		for _, k := range keys {
			c, err := ev.fromGo(x[k], depth+1)
			if err != nil {
				return nil, err
			}
			d.set(k, c)
		}
		return d, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil, nil
		}
		n := rv.Len()
		if err := ev.alloc(int64(n) * 16); err != nil {
			return nil, err
		}
		l := &list{items: make([]any, n)}
		for i := range n {
			c, err := ev.fromGo(rv.Index(i).Interface(), depth+1)
			if err != nil {
				return nil, err
			}
			l.items[i] = c
		}
		return l, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			break
		}
		if rv.IsNil() {
			return nil, nil
		}
		keys := make([]string, 0, rv.Len())
		for _, k := range rv.MapKeys() {
			keys = append(keys, k.String())
		}
		slices.Sort(keys)
		if err := ev.alloc(int64(len(keys)) * 48); err != nil {
			return nil, err
		}
		d := newDict(len(keys))
		for _, k := range keys {
			c, err := ev.fromGo(rv.MapIndex(reflect.ValueOf(k).Convert(rv.Type().Key())).Interface(), depth+1)
			if err != nil {
				return nil, err
			}
			d.set(k, c)
		}
		return d, nil
	case reflect.Pointer:
		if rv.IsNil() {
			return nil, nil
		}
		return ev.fromGo(rv.Elem().Interface(), depth+1)
	case reflect.String:
		return rv.String(), nil
	case reflect.Bool:
		return rv.Bool(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), nil
	case reflect.Float32, reflect.Float64:
		return rv.Float(), nil
	}
	return nil, errorf(0, "unsupported data type %T", v)
}

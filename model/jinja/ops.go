package jinja

import (
	"math"
	"strconv"
	"strings"
)

func undefinedErr(ev *evaluator, u undefined) error {
	if u.name == "" {
		return ev.errf("undefined value used in an expression")
	}
	return ev.errf("'%s' is undefined", u.name)
}

func (ev *evaluator) negate(x any) (any, error) {
	switch v := x.(type) {
	case bool:
		if v {
			return int64(-1), nil
		}
		return int64(0), nil
	case int64:
		if v == math.MinInt64 {
			return nil, ev.errf("integer overflow")
		}
		return -v, nil
	case float64:
		return -v, nil
	case undefined:
		return nil, undefinedErr(ev, v)
	}
	return nil, ev.errf("bad operand type for unary -: '%s'", typeName(x))
}

func (ev *evaluator) opTypeErr(op string, l, r any) error {
	if u, ok := l.(undefined); ok {
		return undefinedErr(ev, u)
	}
	if u, ok := r.(undefined); ok {
		return undefinedErr(ev, u)
	}
	return ev.errf("unsupported operand type(s) for %s: '%s' and '%s'", op, typeName(l), typeName(r))
}

func addInt(a, b int64) (int64, bool) {
	s := a + b
	return s, (s > a) == (b > 0)
}

func mulInt(a, b int64) (int64, bool) {
	if a == 0 || b == 0 {
		return 0, true
	}
	if a == -1 && b == math.MinInt64 || b == -1 && a == math.MinInt64 {
		return 0, false
	}
	c := a * b
	return c, c/b == a
}

func (ev *evaluator) binary(op string, l, r any) (any, error) {
	li, lf, lInt, lNum := toNumber(l)
	ri, rf, rInt, rNum := toNumber(r)
	if lNum && rNum {
		return ev.arith(op, li, lf, lInt, ri, rf, rInt)
	}
	switch op {
	case "+":
		switch a := l.(type) {
		case string:
			if b, ok := r.(string); ok {
				if err := ev.newString(len(a) + len(b)); err != nil {
					return nil, err
				}
				return a + b, nil
			}
		case *list:
			if b, ok := r.(*list); ok && a.tuple == b.tuple {
				n := len(a.items) + len(b.items)
				if err := ev.newList(n); err != nil {
					return nil, err
				}
				items := make([]any, 0, n)
				items = append(items, a.items...)
				return &list{items: append(items, b.items...), tuple: a.tuple}, nil
			}
		}
	case "*":
		if lNum && lInt {
			l, r = r, l
			ri, rInt, rNum = li, lInt, lNum
		}
		if rNum && rInt {
			switch a := l.(type) {
			case string:
				return ev.repeatString(a, ri)
			case *list:
				if ri <= 0 || len(a.items) == 0 {
					return &list{tuple: a.tuple}, nil
				}
				if len(a.items) > 0 && ri > int64(ev.b.MaxString/16/len(a.items)) {
					return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
				}
				n := len(a.items) * int(ri)
				if err := ev.newList(n); err != nil {
					return nil, err
				}
				items := make([]any, 0, n)
				for range ri {
					items = append(items, a.items...)
				}
				return &list{items: items, tuple: a.tuple}, nil
			}
		}
	case "%":
		if s, ok := l.(string); ok {
			return ev.printf(s, r)
		}
	}
	return nil, ev.opTypeErr(op, l, r)
}

// repeatString is s * n, sized before it is built.
func (ev *evaluator) repeatString(s string, n int64) (any, error) {
	if n <= 0 || s == "" {
		return "", nil
	}
	if n > int64(ev.b.MaxString/len(s)) {
		return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
	}
	if err := ev.newString(len(s) * int(n)); err != nil {
		return nil, err
	}
	return strings.Repeat(s, int(n)), nil
}

func (ev *evaluator) arith(op string, li int64, lf float64, lInt bool, ri int64, rf float64, rInt bool) (any, error) {
	both := lInt && rInt
	overflow := func() (any, error) { return nil, ev.errf("integer overflow in %s", op) }
	switch op {
	case "+":
		if both {
			s, ok := addInt(li, ri)
			if !ok {
				return overflow()
			}
			return s, nil
		}
		return lf + rf, nil
	case "-":
		if both {
			if ri == math.MinInt64 {
				return overflow()
			}
			s, ok := addInt(li, -ri)
			if !ok {
				return overflow()
			}
			return s, nil
		}
		return lf - rf, nil
	case "*":
		if both {
			p, ok := mulInt(li, ri)
			if !ok {
				return overflow()
			}
			return p, nil
		}
		return lf * rf, nil
	case "/":
		if rf == 0 {
			return nil, ev.errf("division by zero")
		}
		return lf / rf, nil
	case "//":
		if both {
			if ri == 0 {
				return nil, ev.errf("integer division or modulo by zero")
			}
			if li == math.MinInt64 && ri == -1 {
				return overflow()
			}
			q := li / ri
			if li%ri != 0 && (li < 0) != (ri < 0) {
				q--
			}
			return q, nil
		}
		if rf == 0 {
			return nil, ev.errf("float floor division by zero")
		}
		return math.Floor(lf / rf), nil
	case "%":
		if both {
			if ri == 0 {
				return nil, ev.errf("integer division or modulo by zero")
			}
			if ri == -1 {
				return int64(0), nil
			}
			m := li % ri
			if m != 0 && (m < 0) != (ri < 0) {
				m += ri
			}
			return m, nil
		}
		if rf == 0 {
			return nil, ev.errf("float modulo")
		}
		m := math.Mod(lf, rf)
		if m != 0 && (m < 0) != (rf < 0) {
			m += rf
		}
		return m, nil
	case "**":
		if both && ri >= 0 {
			result, base, e := int64(1), li, ri
			for e > 0 {
				if err := ev.step(); err != nil {
					return nil, err
				}
				if e&1 == 1 {
					var ok bool
					if result, ok = mulInt(result, base); !ok {
						return overflow()
					}
				}
				e >>= 1
				if e > 0 {
					var ok bool
					if base, ok = mulInt(base, base); !ok {
						return overflow()
					}
				}
			}
			return result, nil
		}
		if lf == 0 && rf < 0 {
			return nil, ev.errf("0.0 cannot be raised to a negative power")
		}
		return math.Pow(lf, rf), nil
	}
	return nil, ev.errf("unknown operator %s", op)
}

func (ev *evaluator) compareOp(op string, l, r any) (bool, error) {
	switch op {
	case "==":
		return ev.equal(l, r, 0)
	case "!=":
		eq, err := ev.equal(l, r, 0)
		return !eq, err
	case "in":
		return ev.contains(r, l)
	case "not in":
		in, err := ev.contains(r, l)
		return !in, err
	}
	c, err := ev.compare(l, r, op, 0)
	if err != nil {
		return false, err
	}
	switch op {
	case "<":
		return c < 0, nil
	case "<=":
		return c <= 0, nil
	case ">":
		return c > 0, nil
	default:
		return c >= 0, nil
	}
}

// equal is Python's ==; depth bounds the walk of nested values.
func (ev *evaluator) equal(a, b any, depth int) (bool, error) {
	if ev.depth+depth > ev.b.MaxDepth {
		return false, ev.limit(LimitDepth, int64(ev.b.MaxDepth), 0)
	}
	if _, af, aInt, aNum := toNumber(a); aNum {
		_, bf, bInt, bNum := toNumber(b)
		if !bNum {
			return false, nil
		}
		if aInt && bInt {
			ai, _, _, _ := toNumber(a)
			bi, _, _, _ := toNumber(b)
			return ai == bi, nil
		}
		return af == bf, nil
	}
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		if !ok {
			return false, nil
		}
		if err := ev.work(min(len(x), len(y))); err != nil {
			return false, err
		}
		return x == y, nil
	case nil:
		return b == nil, nil
	case undefined:
		_, ok := b.(undefined)
		return ok, nil
	case *list:
		y, ok := b.(*list)
		if !ok || x.tuple != y.tuple || len(x.items) != len(y.items) {
			return false, nil
		}
		if x == y {
			return true, nil
		}
		for i := range x.items {
			if err := ev.step(); err != nil {
				return false, err
			}
			eq, err := ev.equal(x.items[i], y.items[i], depth+1)
			if err != nil || !eq {
				return false, err
			}
		}
		return true, nil
	case *dict:
		y, ok := b.(*dict)
		if !ok || x.len() != y.len() {
			return false, nil
		}
		if x == y {
			return true, nil
		}
		for i, k := range x.keys {
			if err := ev.step(); err != nil {
				return false, err
			}
			yv, ok := y.get(k)
			if !ok {
				return false, nil
			}
			eq, err := ev.equal(x.vals[i], yv, depth+1)
			if err != nil || !eq {
				return false, err
			}
		}
		return true, nil
	case builtinFunc:
		y, ok := b.(builtinFunc)
		return ok && x == y, nil
	case *method:
		y, ok := b.(*method)
		return ok && x == y, nil
	}
	return a == b, nil // pointers: identity
}

// compare orders a and b for <, <=, >, >= (and sort): numbers, strings,
// and lists or tuples of comparable items.
func (ev *evaluator) compare(a, b any, op string, depth int) (int, error) {
	if ev.depth+depth > ev.b.MaxDepth {
		return 0, ev.limit(LimitDepth, int64(ev.b.MaxDepth), 0)
	}
	ai, af, aInt, aNum := toNumber(a)
	bi, bf, bInt, bNum := toNumber(b)
	switch {
	case aNum && bNum:
		if aInt && bInt {
			return cmp3(ai, bi), nil
		}
		switch {
		case af < bf:
			return -1, nil
		case af > bf:
			return 1, nil
		}
		return 0, nil
	}
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			if err := ev.work(min(len(x), len(y))); err != nil {
				return 0, err
			}
			return strings.Compare(x, y), nil
		}
	case *list:
		if y, ok := b.(*list); ok && x.tuple == y.tuple {
			for i := 0; i < len(x.items) && i < len(y.items); i++ {
				if err := ev.step(); err != nil {
					return 0, err
				}
				eq, err := ev.equal(x.items[i], y.items[i], depth+1)
				if err != nil {
					return 0, err
				}
				if !eq {
					return ev.compare(x.items[i], y.items[i], op, depth+1)
				}
			}
			return cmp3(int64(len(x.items)), int64(len(y.items))), nil
		}
	}
	if u, ok := a.(undefined); ok {
		return 0, undefinedErr(ev, u)
	}
	if u, ok := b.(undefined); ok {
		return 0, undefinedErr(ev, u)
	}
	return 0, ev.errf("'%s' not supported between instances of '%s' and '%s'", op, typeName(a), typeName(b))
}

func cmp3(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// contains is Python's "item in container".
func (ev *evaluator) contains(container, item any) (bool, error) {
	switch c := container.(type) {
	case string:
		s, ok := item.(string)
		if !ok {
			return false, ev.errf("'in <string>' requires string as left operand, not %s", typeName(item))
		}
		if err := ev.work(len(c)); err != nil {
			return false, err
		}
		return strings.Contains(c, s), nil
	case *list:
		for _, x := range c.items {
			if err := ev.step(); err != nil {
				return false, err
			}
			eq, err := ev.equal(item, x, 0)
			if err != nil || eq {
				return eq, err
			}
		}
		return false, nil
	case *dict:
		if err := ev.keyCost(item); err != nil {
			return false, err
		}
		hk, ok := hashKey(item)
		if !ok {
			return false, nil
		}
		_, found := c.get(hk)
		return found, nil
	case *namespace:
		hk, ok := hashKey(item)
		if !ok {
			return false, nil
		}
		_, found := c.attrs.get(hk)
		return found, nil
	case undefined:
		return false, nil
	}
	return false, ev.errf("argument of type '%s' is not iterable", typeName(container))
}

// Text conversion.

// sbuf builds text of at most MaxString bytes, charging the work.
type sbuf struct {
	ev *evaluator
	b  []byte
}

func (s *sbuf) write(str string) error {
	if len(str) > s.ev.b.MaxString-len(s.b) {
		return s.ev.limit(LimitString, int64(s.ev.b.MaxString), 0)
	}
	if err := s.ev.work(len(str)); err != nil {
		return err
	}
	s.b = append(s.b, str...)
	return nil
}

func (s *sbuf) string() (string, error) {
	if err := s.ev.alloc(int64(len(s.b))); err != nil {
		return "", err
	}
	return string(s.b), nil
}

// toStr is Python's str(v) as Jinja prints it ({{ v }}): none prints
// "None", undefined prints nothing.
func (ev *evaluator) toStr(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case undefined:
		return "", nil
	case nil:
		return "None", nil
	case bool:
		if x {
			return "True", nil
		}
		return "False", nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return formatFloat(x), nil
	}
	b := &sbuf{ev: ev}
	if err := ev.writeRepr(b, v, 0); err != nil {
		return "", err
	}
	return b.string()
}

// writeRepr writes Python's repr(v).
func (ev *evaluator) writeRepr(b *sbuf, v any, depth int) error {
	if ev.depth+depth > ev.b.MaxDepth {
		return ev.limit(LimitDepth, int64(ev.b.MaxDepth), 0)
	}
	if err := ev.step(); err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		if err := ev.work(len(x)); err != nil {
			return err
		}
		return b.write(reprString(x))
	case undefined:
		return b.write("Undefined")
	case nil, bool, int64, float64:
		s, _ := ev.toStr(x)
		return b.write(s)
	case *list:
		open, close := "[", "]"
		if x.tuple {
			open, close = "(", ")"
		}
		if err := b.write(open); err != nil {
			return err
		}
		for i, it := range x.items {
			if i > 0 {
				if err := b.write(", "); err != nil {
					return err
				}
			}
			if err := ev.writeRepr(b, it, depth+1); err != nil {
				return err
			}
		}
		if x.tuple && len(x.items) == 1 {
			if err := b.write(","); err != nil {
				return err
			}
		}
		return b.write(close)
	case *dict:
		return ev.writeDictRepr(b, x, depth)
	case *namespace:
		if err := b.write("<Namespace "); err != nil {
			return err
		}
		if err := ev.writeDictRepr(b, x.attrs, depth); err != nil {
			return err
		}
		return b.write(">")
	case *macro:
		return b.write("<Macro '" + x.def.name + "'>")
	case builtinFunc:
		return b.write("<built-in function " + string(x) + ">")
	case *method:
		return b.write("<built-in method " + x.name + ">")
	case *loopState:
		return b.write("<LoopContext " + strconv.Itoa(x.index0+1) + "/" + strconv.Itoa(len(x.items)) + ">")
	}
	return b.write("<object>")
}

func (ev *evaluator) writeDictRepr(b *sbuf, d *dict, depth int) error {
	if err := b.write("{"); err != nil {
		return err
	}
	for i, k := range d.keys {
		if i > 0 {
			if err := b.write(", "); err != nil {
				return err
			}
		}
		if err := ev.writeRepr(b, k, depth+1); err != nil {
			return err
		}
		if err := b.write(": "); err != nil {
			return err
		}
		if err := ev.writeRepr(b, d.vals[i], depth+1); err != nil {
			return err
		}
	}
	return b.write("}")
}

// printf is Python's "format" % args for the common conversions: s, r, d,
// i, f, F, e, E, g, G, x, X, o, c and %%, with flags -, 0, +, space, a
// width and a precision.
func (ev *evaluator) printf(format string, arg any) (any, error) {
	var argv []any
	if l, ok := arg.(*list); ok && l.tuple {
		argv = l.items
	} else {
		argv = []any{arg}
	}
	b := &sbuf{ev: ev}
	next := 0
	for i := 0; i < len(format); {
		j := strings.IndexByte(format[i:], '%')
		if j < 0 {
			if err := b.write(format[i:]); err != nil {
				return nil, err
			}
			break
		}
		if err := b.write(format[i : i+j]); err != nil {
			return nil, err
		}
		i += j + 1
		var flags string
		for i < len(format) && strings.IndexByte("-0+ #", format[i]) >= 0 {
			flags += format[i : i+1]
			i++
		}
		width, prec := 0, -1
		for i < len(format) && format[i] >= '0' && format[i] <= '9' {
			width = width*10 + int(format[i]-'0')
			if width > ev.b.MaxString {
				return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
			}
			i++
		}
		if i < len(format) && format[i] == '.' {
			i++
			prec = 0
			for i < len(format) && format[i] >= '0' && format[i] <= '9' {
				prec = prec*10 + int(format[i]-'0')
				if prec > 100 {
					return nil, ev.errf("format precision too large")
				}
				i++
			}
		}
		if i >= len(format) {
			return nil, ev.errf("incomplete format")
		}
		verb := format[i]
		i++
		if verb == '%' {
			if err := b.write("%"); err != nil {
				return nil, err
			}
			continue
		}
		if next >= len(argv) {
			return nil, ev.errf("not enough arguments for format string")
		}
		a := argv[next]
		next++
		var s string
		var err error
		switch verb {
		case 's':
			s, err = ev.toStr(a)
			if err == nil && prec >= 0 && prec < len(s) {
				s = s[:prec]
			}
		case 'r':
			rb := &sbuf{ev: ev}
			if err = ev.writeRepr(rb, a, 0); err == nil {
				s = string(rb.b)
			}
		case 'd', 'i', 'x', 'X', 'o', 'c':
			n, f, isInt, ok := toNumber(a)
			if !ok {
				return nil, ev.errf("%%%c format: a number is required, not %s", verb, typeName(a))
			}
			if !isInt {
				n = int64(f)
			}
			switch verb {
			case 'x':
				s = strconv.FormatInt(n, 16)
			case 'X':
				s = strings.ToUpper(strconv.FormatInt(n, 16))
			case 'o':
				s = strconv.FormatInt(n, 8)
			case 'c':
				s = string(rune(n))
			default:
				s = strconv.FormatInt(n, 10)
			}
			if n >= 0 && verb != 'c' {
				if strings.Contains(flags, "+") {
					s = "+" + s
				} else if strings.Contains(flags, " ") {
					s = " " + s
				}
			}
		case 'f', 'F', 'e', 'E', 'g', 'G':
			_, f, _, ok := toNumber(a)
			if !ok {
				return nil, ev.errf("%%%c format: a real number is required, not %s", verb, typeName(a))
			}
			if prec < 0 {
				prec = 6
			}
			s = strconv.FormatFloat(f, verb|0x20, prec, 64)
			if verb < 'a' {
				s = strings.ToUpper(s)
			}
			if f >= 0 && strings.Contains(flags, "+") {
				s = "+" + s
			}
		default:
			return nil, ev.errf("unsupported format character '%c'", verb)
		}
		if err != nil {
			return nil, err
		}
		if pad := width - len([]rune(s)); pad > 0 {
			if err := ev.newString(pad); err != nil {
				return nil, err
			}
			switch {
			case strings.Contains(flags, "-"):
				s += strings.Repeat(" ", pad)
			case strings.Contains(flags, "0") && verb != 's' && verb != 'r':
				sign := ""
				if s != "" && (s[0] == '-' || s[0] == '+' || s[0] == ' ') {
					sign, s = s[:1], s[1:]
				}
				s = sign + strings.Repeat("0", pad) + s
			default:
				s = strings.Repeat(" ", pad) + s
			}
		}
		if err := b.write(s); err != nil {
			return nil, err
		}
	}
	if next < len(argv) && len(argv) > 1 {
		return nil, ev.errf("not all arguments converted during string formatting")
	}
	return b.string()
}

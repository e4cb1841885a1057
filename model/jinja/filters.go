package jinja

import (
	"cmp"
	"math"
	"math/big"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

type filterFunc func(ev *evaluator, v any, a *args) (any, error)

// lookupFilter returns the filter called name, or nil. A switch rather than
// a map: the package keeps no mutable state.
func lookupFilter(name string) filterFunc {
	switch name {
	case "abs":
		return fAbs
	case "attr":
		return fAttr
	case "batch":
		return fBatch
	case "capitalize":
		return fCapitalize
	case "center":
		return fCenter
	case "count", "length":
		return fLength
	case "d", "default":
		return fDefault
	case "dictsort":
		return fDictsort
	case "e", "escape", "forceescape":
		return fEscape
	case "first":
		return fFirst
	case "float":
		return fFloat
	case "format":
		return fFormat
	case "indent":
		return fIndent
	case "int":
		return fInt
	case "items":
		return fItems
	case "join":
		return fJoin
	case "last":
		return fLast
	case "list":
		return fList
	case "lower":
		return fLower
	case "map":
		return fMap
	case "max":
		return fMax
	case "min":
		return fMin
	case "reject":
		return fReject
	case "rejectattr":
		return fRejectattr
	case "replace":
		return fReplace
	case "reverse":
		return fReverse
	case "round":
		return fRound
	case "safe":
		return fSafe
	case "select":
		return fSelect
	case "selectattr":
		return fSelectattr
	case "sort":
		return fSort
	case "string":
		return fString
	case "sum":
		return fSum
	case "title":
		return fTitle
	case "tojson":
		return fTojson
	case "trim":
		return fTrim
	case "truncate":
		return fTruncate
	case "unique":
		return fUnique
	case "upper":
		return fUpper
	case "wordcount":
		return fWordcount
	}
	return nil
}

func fSafe(_ *evaluator, v any, _ *args) (any, error) { return v, nil }

func fString(ev *evaluator, v any, _ *args) (any, error) { return ev.toStr(v) }

func fAbs(ev *evaluator, v any, _ *args) (any, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return int64(1), nil
		}
		return int64(0), nil
	case int64:
		if x == math.MinInt64 {
			return nil, ev.errf("integer overflow in abs")
		}
		if x < 0 {
			return -x, nil
		}
		return x, nil
	case float64:
		return math.Abs(x), nil
	}
	return nil, ev.errf("bad operand type for abs(): '%s'", typeName(v))
}

func fAttr(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "attr", "name")
	if err != nil {
		return nil, err
	}
	name, ok := p[0].(string)
	if !ok {
		return nil, ev.errf("attr() name must be a string")
	}
	return ev.getAttr(v, name), nil
}

func fDefault(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "default", "default_value", "boolean")
	if err != nil {
		return nil, err
	}
	def := p[0]
	if !has(def) {
		def = ""
	}
	_, undef := v.(undefined)
	if undef || has(p[1]) && truthy(p[1]) && !truthy(v) {
		return def, nil
	}
	return v, nil
}

func (ev *evaluator) length(v any) (int64, error) {
	switch x := v.(type) {
	case string:
		if err := ev.work(len(x)); err != nil {
			return 0, err
		}
		return int64(utf8.RuneCountInString(x)), nil
	case *list:
		return int64(len(x.items)), nil
	case *dict:
		return int64(x.len()), nil
	case *namespace:
		return int64(x.attrs.len()), nil
	case undefined:
		return 0, nil
	}
	return 0, ev.errf("object of type '%s' has no len()", typeName(v))
}

func fLength(ev *evaluator, v any, _ *args) (any, error) { return ev.length(v) }

func fFirst(ev *evaluator, v any, _ *args) (any, error) {
	if s, ok := v.(string); ok {
		r, n := utf8.DecodeRuneInString(s)
		if n == 0 {
			return undefined{name: "first"}, nil
		}
		return string(r), nil
	}
	items, err := ev.iterate(v)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return undefined{name: "first"}, nil
	}
	return items[0], nil
}

func fLast(ev *evaluator, v any, _ *args) (any, error) {
	if s, ok := v.(string); ok {
		r, n := utf8.DecodeLastRuneInString(s)
		if n == 0 {
			return undefined{name: "last"}, nil
		}
		return string(r), nil
	}
	items, err := ev.iterate(v)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return undefined{name: "last"}, nil
	}
	return items[len(items)-1], nil
}

func fList(ev *evaluator, v any, _ *args) (any, error) {
	items, err := ev.iterate(v)
	if err != nil {
		return nil, err
	}
	if _, isStr := v.(string); isStr {
		return &list{items: items}, nil // already a fresh list
	}
	if err := ev.newList(len(items)); err != nil {
		return nil, err
	}
	return &list{items: append([]any(nil), items...)}, nil
}

// strArg converts v to a string the way Jinja's string filters do.
func (ev *evaluator) strArg(v any) (string, error) { return ev.toStr(v) }

func (ev *evaluator) mapString(v any, f func(string) string) (any, error) {
	s, err := ev.strArg(v)
	if err != nil {
		return nil, err
	}
	if err := ev.newString(len(s) * 2); err != nil { // case mapping may grow
		return nil, err
	}
	return f(s), nil
}

func fUpper(ev *evaluator, v any, _ *args) (any, error) { return ev.mapString(v, strings.ToUpper) }
func fLower(ev *evaluator, v any, _ *args) (any, error) { return ev.mapString(v, strings.ToLower) }
func fTitle(ev *evaluator, v any, _ *args) (any, error) { return ev.mapString(v, jinjaTitle) }
func fCapitalize(ev *evaluator, v any, _ *args) (any, error) {
	return ev.mapString(v, pyCapitalize)
}

// jinjaTitle is Jinja's title filter: each word (split at whitespace, '-',
// and opening brackets) gets its first character upper-cased and the rest
// lower-cased.
func jinjaTitle(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	start := true
	for _, r := range s {
		if pyIsSpace(r) || strings.ContainsRune("-({[<", r) {
			b.WriteRune(r)
			start = true
			continue
		}
		if start {
			b.WriteRune(unicode.ToUpper(r))
			start = false
		} else {
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

func fTrim(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "trim", "chars")
	if err != nil {
		return nil, err
	}
	s, err := ev.strArg(v)
	if err != nil {
		return nil, err
	}
	if err := ev.work(len(s)); err != nil {
		return nil, err
	}
	chars, set, err := ev.optString(p[0], "trim")
	if err != nil {
		return nil, err
	}
	if set {
		return strings.Trim(s, chars), nil
	}
	return pyStrip(s), nil
}

func fCenter(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "center", "width")
	if err != nil {
		return nil, err
	}
	s, err := ev.strArg(v)
	if err != nil {
		return nil, err
	}
	w := int64(80)
	if has(p[0]) {
		if w, err = ev.intArg(p[0], "center() width"); err != nil {
			return nil, err
		}
	}
	return ev.pad(s, w, " ", "center")
}

func fEscape(ev *evaluator, v any, _ *args) (any, error) {
	s, err := ev.strArg(v)
	if err != nil {
		return nil, err
	}
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '&', '<', '>', '"', '\'':
			n += 4
		}
	}
	if err := ev.newString(n); err != nil {
		return nil, err
	}
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s), nil
}

func fReplace(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "replace", "old", "new", "count")
	if err != nil {
		return nil, err
	}
	s, err := ev.strArg(v)
	if err != nil {
		return nil, err
	}
	if !has(p[0]) || !has(p[1]) {
		return nil, ev.errf("replace() needs old and new")
	}
	old, err := ev.toStr(p[0])
	if err != nil {
		return nil, err
	}
	nw, err := ev.toStr(p[1])
	if err != nil {
		return nil, err
	}
	count := int64(-1)
	if has(p[2]) && p[2] != nil {
		if count, err = ev.intArg(p[2], "replace() count"); err != nil {
			return nil, err
		}
	}
	if err := ev.work(len(s)); err != nil {
		return nil, err
	}
	return ev.replace(s, old, nw, count)
}

func fInt(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "int", "default", "base")
	if err != nil {
		return nil, err
	}
	def := p[0]
	if !has(def) {
		def = int64(0)
	}
	base := int64(10)
	if has(p[1]) {
		if base, err = ev.intArg(p[1], "int() base"); err != nil {
			return nil, err
		}
	}
	switch x := v.(type) {
	case bool, int64:
		n, _, _, _ := toNumber(x)
		return n, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) || math.Abs(x) >= 1<<63 {
			return def, nil
		}
		return int64(x), nil
	case string:
		if err := ev.work(len(x)); err != nil {
			return nil, err
		}
		t := strings.ReplaceAll(pyStrip(x), "_", "")
		if base >= 2 && base <= 36 {
			if n, err := strconv.ParseInt(t, int(base), 64); err == nil {
				return n, nil
			}
		}
		if f, ok := parsePyFloat(x); ok && !math.IsNaN(f) && !math.IsInf(f, 0) && math.Abs(f) < 1<<63 {
			return int64(f), nil
		}
	}
	return def, nil
}

// parsePyFloat parses what Python's float(str) accepts.
func parsePyFloat(s string) (float64, bool) {
	t := strings.ToLower(strings.ReplaceAll(pyStrip(s), "_", ""))
	switch strings.TrimLeft(t, "+-") {
	case "inf", "infinity", "nan":
	default:
		if t == "" || strings.ContainsAny(t, "xp") {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil && !isRangeErr(err) {
		return 0, false
	}
	return f, true
}

func fFloat(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "float", "default")
	if err != nil {
		return nil, err
	}
	def := p[0]
	if !has(def) {
		def = 0.0
	}
	switch x := v.(type) {
	case bool, int64, float64:
		_, f, _, _ := toNumber(x)
		return f, nil
	case string:
		if err := ev.work(len(x)); err != nil {
			return nil, err
		}
		if f, ok := parsePyFloat(x); ok {
			return f, nil
		}
	}
	return def, nil
}

// roundInt is Python's round(n, -digits) for an int (digits > 0): the
// nearest multiple of 10**digits, ties to the even multiple, an int
// (round(15, -1) is 20, round(25, -1) is 20). ok false: past int64.
func roundInt(n, digits int64) (int64, bool) {
	s := new(big.Int).Exp(big.NewInt(10), big.NewInt(digits), nil)
	q, r := new(big.Int).QuoRem(big.NewInt(n), s, new(big.Int))
	if r.Sign() < 0 { // floor division, as Python's
		r.Add(r, s)
		q.Sub(q, big.NewInt(1))
	}
	if c := new(big.Int).Lsh(r, 1).Cmp(s); c > 0 || c == 0 && q.Bit(0) == 1 {
		q.Add(q, big.NewInt(1))
	}
	q.Mul(q, s)
	return q.Int64(), q.IsInt64()
}

func fRound(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "round", "precision", "method")
	if err != nil {
		return nil, err
	}
	prec := int64(0)
	if has(p[0]) {
		if prec, err = ev.intArg(p[0], "round() precision"); err != nil {
			return nil, err
		}
	}
	method := "common"
	if has(p[1]) {
		m, ok := p[1].(string)
		if !ok || m != "common" && m != "ceil" && m != "floor" {
			return nil, ev.errf("method must be 'common', 'ceil' or 'floor'")
		}
		method = m
	}
	if prec < -308 || prec > 308 {
		return nil, ev.errf("round() precision out of range")
	}
	n, f, isInt, ok := toNumber(v)
	if !ok {
		return nil, ev.errf("type %s doesn't define __round__ method", typeName(v))
	}
	if method == "common" {
		if isInt && prec >= 0 {
			return n, nil
		}
		if isInt {
			r, ok := roundInt(n, -prec)
			if !ok {
				return nil, ev.errf("integer overflow in round()")
			}
			return r, nil
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return f, nil
		}
		if prec >= 0 {
			r, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', int(prec), 64), 64)
			return r, nil
		}
		scale := math.Pow(10, float64(-prec))
		return math.RoundToEven(f/scale) * scale, nil
	}
	scale := math.Pow(10, float64(prec))
	if method == "ceil" {
		return math.Ceil(f*scale) / scale, nil
	}
	return math.Floor(f*scale) / scale, nil
}

func fFormat(ev *evaluator, v any, a *args) (any, error) {
	s, ok := v.(string)
	if !ok {
		var err error
		if s, err = ev.toStr(v); err != nil {
			return nil, err
		}
	}
	if len(a.kwNames) > 0 && len(a.pos) > 0 {
		return nil, ev.errf("can't handle positional and keyword arguments at the same time")
	}
	if len(a.kwNames) > 0 {
		return nil, ev.errf("format with keyword arguments is not supported")
	}
	return ev.printf(s, &list{items: a.pos, tuple: true})
}

func fIndent(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "indent", "width", "first", "blank")
	if err != nil {
		return nil, err
	}
	s, err := ev.strArg(v)
	if err != nil {
		return nil, err
	}
	ind := "    "
	if has(p[0]) {
		switch w := p[0].(type) {
		case string:
			ind = w
		default:
			n, err := ev.intArg(w, "indent() width")
			if err != nil {
				return nil, err
			}
			if n > int64(ev.b.MaxString) {
				return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
			}
			ind = strings.Repeat(" ", int(max(n, 0)))
		}
	}
	first := has(p[1]) && truthy(p[1])
	blank := has(p[2]) && truthy(p[2])
	if err := ev.work(len(s)); err != nil {
		return nil, err
	}
	// Size the result before splitting: every line may get ind.
	nlines := countLines(s) + 1
	if len(ind) > 0 && nlines > (ev.b.MaxString-len(s))/len(ind) {
		return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
	}
	size := len(s) + nlines*len(ind)
	if err := ev.newString(size); err != nil {
		return nil, err
	}
	if err := ev.newList(nlines); err != nil {
		return nil, err
	}
	lines := splitLines(s+"\n", false)
	var b strings.Builder
	b.Grow(size)
	if first {
		b.WriteString(ind)
	}
	for i, line := range lines {
		if i > 0 {
			b.WriteByte('\n')
			if blank || line != "" {
				b.WriteString(ind)
			}
		}
		b.WriteString(line)
	}
	return b.String(), nil
}

func fTruncate(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "truncate", "length", "killwords", "end", "leeway")
	if err != nil {
		return nil, err
	}
	s, err := ev.strArg(v)
	if err != nil {
		return nil, err
	}
	length := int64(255)
	if has(p[0]) {
		if length, err = ev.intArg(p[0], "truncate() length"); err != nil {
			return nil, err
		}
	}
	end := "..."
	if has(p[2]) {
		if end, err = ev.toStr(p[2]); err != nil {
			return nil, err
		}
	}
	leeway := int64(5)
	if has(p[3]) && p[3] != nil {
		if leeway, err = ev.intArg(p[3], "truncate() leeway"); err != nil {
			return nil, err
		}
	}
	rs, err := ev.runes(s)
	if err != nil {
		return nil, err
	}
	endN := int64(utf8.RuneCountInString(end))
	if length < endN {
		return nil, ev.errf("expected length >= %d, got %d", endN, length)
	}
	if leeway < 0 {
		return nil, ev.errf("expected leeway >= 0, got %d", leeway)
	}
	if n := int64(len(rs)); n <= length || n-length <= leeway {
		return s, nil
	}
	cut := string(rs[:length-endN])
	if has(p[1]) && truthy(p[1]) {
		return cut + end, nil
	}
	if i := strings.LastIndexByte(cut, ' '); i >= 0 {
		cut = cut[:i]
	}
	return cut + end, nil
}

func fWordcount(ev *evaluator, v any, _ *args) (any, error) {
	s, err := ev.strArg(v)
	if err != nil {
		return nil, err
	}
	if err := ev.work(len(s)); err != nil {
		return nil, err
	}
	n, in := int64(0), false
	for _, r := range s {
		w := r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
		if w && !in {
			n++
		}
		in = w
	}
	return n, nil
}

func fItems(ev *evaluator, v any, _ *args) (any, error) {
	switch x := v.(type) {
	case undefined:
		return &list{}, nil
	case *dict:
		return ev.dictMethod(x, "items", nil)
	}
	return nil, ev.errf("can only get item pairs from a mapping, not %s", typeName(v))
}

func fJoin(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "join", "d", "attribute")
	if err != nil {
		return nil, err
	}
	sep := ""
	if has(p[0]) {
		if sep, err = ev.toStr(p[0]); err != nil {
			return nil, err
		}
	}
	items, err := ev.iterate(v)
	if err != nil {
		return nil, err
	}
	parts := make([]string, len(items))
	for i, it := range items {
		if has(p[1]) && p[1] != nil {
			if it, err = ev.attrPath(it, p[1]); err != nil {
				return nil, err
			}
		}
		if parts[i], err = ev.toStr(it); err != nil {
			return nil, err
		}
	}
	return ev.joinStrings(parts, sep)
}

// attrPath is Jinja's attribute getter: "a.b.0" walks item/attribute
// lookups, digits indexing.
func (ev *evaluator) attrPath(v, attr any) (any, error) {
	name, ok := attr.(string)
	if !ok {
		if n, _, isInt, ok := toNumber(attr); ok && isInt {
			return ev.getItem(v, n)
		}
		return nil, ev.errf("attribute must be a string")
	}
	for _, part := range strings.Split(name, ".") {
		var key any = part
		if n, err := strconv.ParseInt(part, 10, 64); err == nil {
			key = n
		}
		var err error
		if v, err = ev.getItem(v, key); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func fMap(ev *evaluator, v any, a *args) (any, error) {
	// map can apply map: count the nesting like any call.
	if err := ev.enter(ev.line); err != nil {
		return nil, err
	}
	defer ev.leave()
	items, err := ev.iterateTruthy(v)
	if err != nil {
		return nil, err
	}
	if err := ev.newList(len(items)); err != nil {
		return nil, err
	}
	out := make([]any, len(items))
	var attr any = noArg{}
	def := any(noArg{})
	for i, k := range a.kwNames {
		switch k {
		case "attribute":
			attr = a.kwVals[i]
		case "default":
			def = a.kwVals[i]
		default:
			return nil, ev.errf("map() got an unexpected keyword argument '%s'", k)
		}
	}
	if has(attr) {
		for i, it := range items {
			if err := ev.step(); err != nil {
				return nil, err
			}
			x, err := ev.attrPath(it, attr)
			if err != nil {
				return nil, err
			}
			if _, undef := x.(undefined); undef && has(def) {
				x = def
			}
			out[i] = x
		}
		return &list{items: out}, nil
	}
	if len(a.pos) == 0 {
		return nil, ev.errf("map() needs a filter name or attribute=")
	}
	name, ok := a.pos[0].(string)
	if !ok {
		return nil, ev.errf("map() filter name must be a string")
	}
	f := lookupFilter(name)
	if f == nil {
		return nil, ev.errf("no filter named '%s'", name)
	}
	rest := &args{pos: a.pos[1:]}
	for i, it := range items {
		if err := ev.step(); err != nil {
			return nil, err
		}
		if out[i], err = f(ev, it, rest); err != nil {
			return nil, err
		}
	}
	return &list{items: out}, nil
}

// selectItems implements select, reject, selectattr and rejectattr.
func (ev *evaluator) selectItems(v any, a *args, byAttr, keep bool) (any, error) {
	if err := ev.enter(ev.line); err != nil {
		return nil, err
	}
	defer ev.leave()
	items, err := ev.iterateTruthy(v)
	if err != nil {
		return nil, err
	}
	pos := a.pos
	var attr any
	if byAttr {
		if len(pos) == 0 {
			return nil, ev.errf("missing attribute argument")
		}
		attr, pos = pos[0], pos[1:]
	}
	var test testFunc
	var testArgs *args
	if len(pos) > 0 {
		name, ok := pos[0].(string)
		if !ok {
			return nil, ev.errf("test name must be a string")
		}
		if test = lookupTest(name); test == nil {
			return nil, ev.errf("no test named '%s'", name)
		}
		testArgs = &args{pos: pos[1:], kwNames: a.kwNames, kwVals: a.kwVals}
	}
	if err := ev.newList(len(items)); err != nil {
		return nil, err
	}
	out := make([]any, 0, len(items))
	for _, it := range items {
		if err := ev.step(); err != nil {
			return nil, err
		}
		x := it
		if byAttr {
			if x, err = ev.attrPath(it, attr); err != nil {
				return nil, err
			}
		}
		var ok bool
		if test == nil {
			ok = truthy(x)
		} else if ok, err = test(ev, x, testArgs); err != nil {
			return nil, err
		}
		if ok == keep {
			out = append(out, it)
		}
	}
	return &list{items: out}, nil
}

func fSelect(ev *evaluator, v any, a *args) (any, error) { return ev.selectItems(v, a, false, true) }
func fReject(ev *evaluator, v any, a *args) (any, error) { return ev.selectItems(v, a, false, false) }
func fSelectattr(ev *evaluator, v any, a *args) (any, error) {
	return ev.selectItems(v, a, true, true)
}
func fRejectattr(ev *evaluator, v any, a *args) (any, error) {
	return ev.selectItems(v, a, true, false)
}

// iterateTruthy is iterate for the filters Jinja2 runs only over a true
// value (map, select, reject, selectattr, rejectattr: "if value: for item
// in value"): none, false or 0 gives no items where iterate fails
// (functionary's template selects from tools that are none).
func (ev *evaluator) iterateTruthy(v any) ([]any, error) {
	if !truthy(v) {
		return nil, nil
	}
	return ev.iterate(v)
}

func fReverse(ev *evaluator, v any, _ *args) (any, error) {
	if s, ok := v.(string); ok {
		if err := ev.newString(len(s) * 5); err != nil { // runes, then the string
			return nil, err
		}
		return reverseString(s), nil
	}
	items, err := ev.iterate(v)
	if err != nil {
		return nil, err
	}
	if err := ev.newList(len(items)); err != nil {
		return nil, err
	}
	out := make([]any, len(items))
	for i, it := range items {
		out[len(items)-1-i] = it
	}
	return &list{items: out}, nil
}

// sortKey returns what sort, unique, min and max compare for an item.
func (ev *evaluator) sortKey(it, attr any, caseSensitive bool) (any, error) {
	if has(attr) && attr != nil {
		var err error
		if it, err = ev.attrPath(it, attr); err != nil {
			return nil, err
		}
	}
	if s, ok := it.(string); ok && !caseSensitive {
		if err := ev.work(len(s)); err != nil {
			return nil, err
		}
		return strings.ToLower(s), nil
	}
	return it, nil
}

// sortItems sorts items (a fresh slice) stably by key.
func (ev *evaluator) sortItems(items []any, keys []any, reverse bool) error {
	// n log n comparisons (string and list comparisons charge more).
	if err := ev.cost(int64(len(items)) * int64(bits.Len(uint(len(items))))); err != nil {
		return err
	}
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	var cmpErr error
	slices.SortStableFunc(idx, func(i, j int) int {
		if cmpErr != nil {
			return 0
		}
		c, err := ev.compare(keys[i], keys[j], "<", 0)
		if err != nil {
			cmpErr = err
			return 0
		}
		if reverse {
			return -c
		}
		return c
	})
	if cmpErr != nil {
		return cmpErr
	}
	sorted := make([]any, len(items))
	for k, i := range idx {
		sorted[k] = items[i]
	}
	copy(items, sorted)
	return nil
}

func (ev *evaluator) keyedCopy(v any, attr any, caseSensitive bool) ([]any, []any, error) {
	items, err := ev.iterate(v)
	if err != nil {
		return nil, nil, err
	}
	if err := ev.newList(len(items) * 3); err != nil {
		return nil, nil, err
	}
	items = append([]any(nil), items...)
	keys := make([]any, len(items))
	for i, it := range items {
		if err := ev.step(); err != nil {
			return nil, nil, err
		}
		if keys[i], err = ev.sortKey(it, attr, caseSensitive); err != nil {
			return nil, nil, err
		}
	}
	return items, keys, nil
}

func fSort(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "sort", "reverse", "case_sensitive", "attribute")
	if err != nil {
		return nil, err
	}
	items, keys, err := ev.keyedCopy(v, p[2], has(p[1]) && truthy(p[1]))
	if err != nil {
		return nil, err
	}
	if err := ev.sortItems(items, keys, has(p[0]) && truthy(p[0])); err != nil {
		return nil, err
	}
	return &list{items: items}, nil
}

func fDictsort(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "dictsort", "case_sensitive", "by", "reverse")
	if err != nil {
		return nil, err
	}
	d, ok := v.(*dict)
	if !ok {
		if _, undef := v.(undefined); undef {
			return &list{}, nil
		}
		return nil, ev.errf("dictsort() needs a mapping, not %s", typeName(v))
	}
	by := 0
	if has(p[1]) {
		switch p[1] {
		case "key":
		case "value":
			by = 1
		default:
			return nil, ev.errf("You can only sort by either 'key' or 'value'")
		}
	}
	pairs, err := ev.dictMethod(d, "items", nil)
	if err != nil {
		return nil, err
	}
	items := pairs.(*list).items
	keys := make([]any, len(items))
	cs := has(p[0]) && truthy(p[0])
	for i, it := range items {
		if keys[i], err = ev.sortKey(it.(*list).items[by], noArg{}, cs); err != nil {
			return nil, err
		}
	}
	if err := ev.sortItems(items, keys, has(p[2]) && truthy(p[2])); err != nil {
		return nil, err
	}
	return pairs, nil
}

func fUnique(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "unique", "case_sensitive", "attribute")
	if err != nil {
		return nil, err
	}
	items, keys, err := ev.keyedCopy(v, p[1], has(p[0]) && truthy(p[0]))
	if err != nil {
		return nil, err
	}
	seen := newDict(0)
	var seenOther []any
	out := make([]any, 0, len(items))
	for i, it := range items {
		if err := ev.keyCost(keys[i]); err != nil {
			return nil, err
		}
		if hk, ok := hashKey(keys[i]); ok {
			if _, dup := seen.get(hk); dup {
				continue
			}
			seen.set(hk, true)
		} else {
			dup := false
			for _, o := range seenOther {
				if err := ev.step(); err != nil {
					return nil, err
				}
				eq, err := ev.equal(o, keys[i], 0)
				if err != nil {
					return nil, err
				}
				if eq {
					dup = true
					break
				}
			}
			if dup {
				continue
			}
			seenOther = append(seenOther, keys[i])
		}
		out = append(out, it)
	}
	return &list{items: out}, nil
}

func (ev *evaluator) minMax(v any, a *args, fname string, want int) (any, error) {
	p, err := a.bind(ev, fname, "case_sensitive", "attribute")
	if err != nil {
		return nil, err
	}
	items, keys, err := ev.keyedCopy(v, p[1], has(p[0]) && truthy(p[0]))
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return undefined{name: fname}, nil
	}
	best := 0
	for i := 1; i < len(items); i++ {
		c, err := ev.compare(keys[i], keys[best], "<", 0)
		if err != nil {
			return nil, err
		}
		if cmp.Compare(c, 0) == want {
			best = i
		}
	}
	return items[best], nil
}

func fMin(ev *evaluator, v any, a *args) (any, error) { return ev.minMax(v, a, "min", -1) }
func fMax(ev *evaluator, v any, a *args) (any, error) { return ev.minMax(v, a, "max", 1) }

func fSum(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "sum", "attribute", "start")
	if err != nil {
		return nil, err
	}
	items, err := ev.iterate(v)
	if err != nil {
		return nil, err
	}
	var total any = int64(0)
	if has(p[1]) {
		total = p[1]
	}
	for _, it := range items {
		if has(p[0]) && p[0] != nil {
			if it, err = ev.attrPath(it, p[0]); err != nil {
				return nil, err
			}
		}
		if total, err = ev.binary("+", total, it); err != nil {
			return nil, err
		}
	}
	return total, nil
}

func fBatch(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "batch", "linecount", "fill_with")
	if err != nil {
		return nil, err
	}
	n, err := ev.intArg(p[0], "batch() linecount")
	if err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, ev.errf("batch() linecount must be positive")
	}
	items, err := ev.iterate(v)
	if err != nil {
		return nil, err
	}
	fill := has(p[1]) && p[1] != nil
	if fill && n > int64(len(items)) {
		if err := ev.newList(int(min(n, int64(ev.b.MaxString)+1))); err != nil {
			return nil, err
		}
	}
	step := int(min(n, int64(max(len(items), 1))))
	if err := ev.newList(len(items) + len(items)/step + int(n%int64(step)) + 1); err != nil {
		return nil, err
	}
	var out []any
	for i := 0; i < len(items); i += step {
		row := append([]any(nil), items[i:min(i+step, len(items))]...)
		for fill && int64(len(row)) < n {
			row = append(row, p[1])
		}
		out = append(out, &list{items: row})
	}
	return &list{items: out}, nil
}

func fTojson(ev *evaluator, v any, a *args) (any, error) {
	p, err := a.bind(ev, "tojson", "ensure_ascii", "indent", "separators", "sort_keys")
	if err != nil {
		return nil, err
	}
	o := jsonOpts{itemSep: ", ", keySep: ": "}
	o.ascii = has(p[0]) && truthy(p[0])
	o.sortKeys = has(p[3]) && truthy(p[3])
	if has(p[1]) && p[1] != nil {
		o.indented = true
		o.itemSep = ","
		switch w := p[1].(type) {
		case string:
			o.indent = w
		default:
			n, err := ev.intArg(w, "tojson() indent")
			if err != nil {
				return nil, err
			}
			if n > int64(ev.b.MaxString) {
				return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
			}
			o.indent = strings.Repeat(" ", int(max(n, 0)))
		}
	}
	if has(p[2]) && p[2] != nil {
		sep, ok := p[2].(*list)
		if !ok || len(sep.items) != 2 {
			return nil, ev.errf("tojson() separators must be a pair of strings")
		}
		is, ok1 := sep.items[0].(string)
		ks, ok2 := sep.items[1].(string)
		if !ok1 || !ok2 {
			return nil, ev.errf("tojson() separators must be a pair of strings")
		}
		o.itemSep, o.keySep = is, ks
	}
	b := &sbuf{ev: ev}
	if err := ev.writeJSON(b, v, &o, 0); err != nil {
		return nil, err
	}
	return b.string()
}

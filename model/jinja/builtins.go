package jinja

import (
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Global functions.

func (ev *evaluator) callGlobal(name string, a *args) (any, error) {
	switch name {
	case "range":
		return ev.rangeFn(a)
	case "namespace", "dict":
		d := newDict(len(a.kwNames))
		if len(a.pos) > 1 {
			return nil, ev.errf("%s() takes at most 1 positional argument", name)
		}
		if len(a.pos) == 1 {
			src, ok := a.pos[0].(*dict)
			if !ok {
				return nil, ev.errf("%s() argument must be a mapping, not %s", name, typeName(a.pos[0]))
			}
			for i, k := range src.keys {
				d.set(k, src.vals[i])
			}
		}
		for i, k := range a.kwNames {
			d.set(k, a.kwVals[i])
		}
		if err := ev.alloc(int64(d.len())*48 + 64); err != nil {
			return nil, err
		}
		if name == "dict" {
			return d, nil
		}
		return &namespace{attrs: d}, nil
	case "raise_exception":
		msg := "raise_exception called"
		if len(a.pos) > 0 {
			s, err := ev.toStr(a.pos[0])
			if err != nil {
				return nil, err
			}
			msg = s
		}
		return nil, ev.errf("%s", msg)
	case "strftime_now":
		v, err := a.bind(ev, name, "format")
		if err != nil {
			return nil, err
		}
		f, ok := v[0].(string)
		if !ok {
			return nil, ev.errf("strftime_now() argument must be a string")
		}
		if err := ev.work(len(f)); err != nil {
			return nil, err
		}
		return strftime(time.Now(), f), nil
	}
	return nil, ev.errf("'%s' is not callable", name)
}

func (ev *evaluator) intArg(v any, what string) (int64, error) {
	n, _, isInt, ok := toNumber(v)
	if !ok || !isInt {
		if u, isU := v.(undefined); isU {
			return 0, undefinedErr(ev, u)
		}
		return 0, ev.errf("%s must be an integer, not %s", what, typeName(v))
	}
	return n, nil
}

// rangeFn is range(stop) or range(start, stop[, step]). It refuses to build
// more than MaxLoop numbers.
func (ev *evaluator) rangeFn(a *args) (any, error) {
	if len(a.kwNames) > 0 || len(a.pos) == 0 || len(a.pos) > 3 {
		return nil, ev.errf("range() takes 1 to 3 positional arguments")
	}
	nums := make([]int64, len(a.pos))
	for i, v := range a.pos {
		n, err := ev.intArg(v, "range() argument")
		if err != nil {
			return nil, err
		}
		nums[i] = n
	}
	start, stop, step := int64(0), nums[0], int64(1)
	if len(nums) >= 2 {
		start, stop = nums[0], nums[1]
	}
	if len(nums) == 3 {
		step = nums[2]
	}
	if step == 0 {
		return nil, ev.errf("range() arg 3 must not be zero")
	}
	// Count in uint64, where the span and |step| cannot overflow.
	var count uint64
	if step > 0 && stop > start {
		count = (uint64(stop)-uint64(start)-1)/uint64(step) + 1
	} else if step < 0 && start > stop {
		count = (uint64(start)-uint64(stop)-1)/(-uint64(step)) + 1
	}
	if count > uint64(ev.b.MaxLoop) {
		return nil, ev.limit(LimitLoop, int64(ev.b.MaxLoop), 0)
	}
	if err := ev.newList(int(count)); err != nil {
		return nil, err
	}
	items := make([]any, count)
	for i := range items {
		items[i] = start + int64(i)*step
	}
	return &list{items: items}, nil
}

// Methods.

func isDictMethod(name string) bool {
	switch name {
	case "items", "keys", "values", "get", "copy":
		return true
	}
	return false
}

func isListMethod(name string) bool {
	switch name {
	case "append", "extend", "pop", "index", "count", "copy", "insert":
		return true
	}
	return false
}

func isStrMethod(name string) bool {
	switch name {
	case "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith",
		"upper", "lower", "title", "capitalize", "swapcase", "replace", "join", "find", "rfind",
		"index", "rindex", "count", "format", "isdigit", "isnumeric", "isdecimal", "isalpha", "isalnum",
		"isspace", "islower", "isupper", "istitle", "center", "ljust", "rjust", "zfill",
		"removeprefix", "removesuffix", "partition", "rpartition":
		return true
	}
	return false
}

func (ev *evaluator) callMethod(m *method, a *args) (any, error) {
	if err := ev.step(); err != nil {
		return nil, err
	}
	switch r := m.recv.(type) {
	case string:
		return ev.strMethod(r, m.name, a)
	case *dict:
		return ev.dictMethod(r, m.name, a)
	case *list:
		return ev.listMethod(r, m.name, a)
	case *loopState:
		if m.name == "cycle" {
			if len(a.pos) == 0 {
				return nil, ev.errf("no items for cycling given")
			}
			return a.pos[r.index0%len(a.pos)], nil
		}
	}
	return nil, ev.errf("'%s' object has no method '%s'", typeName(m.recv), m.name)
}

func (ev *evaluator) dictMethod(d *dict, name string, a *args) (any, error) {
	switch name {
	case "items":
		if err := ev.newList(d.len()); err != nil {
			return nil, err
		}
		if err := ev.alloc(int64(d.len()) * 64); err != nil {
			return nil, err
		}
		items := make([]any, d.len())
		for i, k := range d.keys {
			items[i] = &list{items: []any{k, d.vals[i]}, tuple: true}
		}
		return &list{items: items}, nil
	case "keys", "values":
		if err := ev.newList(d.len()); err != nil {
			return nil, err
		}
		src := d.keys
		if name == "values" {
			src = d.vals
		}
		return &list{items: append([]any(nil), src...)}, nil
	case "get":
		v, err := a.bind(ev, "get", "key", "default")
		if err != nil {
			return nil, err
		}
		if !has(v[0]) {
			return nil, ev.errf("get() missing the key")
		}
		if hk, ok := hashKey(v[0]); ok {
			if val, ok := d.get(hk); ok {
				return val, nil
			}
		}
		if has(v[1]) {
			return v[1], nil
		}
		return nil, nil
	case "copy":
		if err := ev.alloc(int64(d.len())*48 + 64); err != nil {
			return nil, err
		}
		c := newDict(d.len())
		for i, k := range d.keys {
			c.set(k, d.vals[i])
		}
		return c, nil
	}
	return nil, ev.errf("'dict' object has no method '%s'", name)
}

func (ev *evaluator) listMethod(l *list, name string, a *args) (any, error) {
	if l.tuple && name != "index" && name != "count" {
		return nil, ev.errf("'tuple' object has no method '%s'", name)
	}
	switch name {
	case "append":
		if len(a.pos) != 1 {
			return nil, ev.errf("append() takes exactly one argument")
		}
		if err := ev.growList(len(l.items), 1); err != nil {
			return nil, err
		}
		l.items = append(l.items, a.pos[0])
		return nil, nil
	case "extend":
		if len(a.pos) != 1 {
			return nil, ev.errf("extend() takes exactly one argument")
		}
		more, err := ev.iterate(a.pos[0])
		if err != nil {
			return nil, err
		}
		if err := ev.growList(len(l.items), len(more)); err != nil {
			return nil, err
		}
		l.items = append(l.items, more...)
		return nil, nil
	case "insert":
		if len(a.pos) != 2 {
			return nil, ev.errf("insert() takes exactly 2 arguments")
		}
		i, err := ev.intArg(a.pos[0], "insert() index")
		if err != nil {
			return nil, err
		}
		if err := ev.growList(len(l.items), 1); err != nil {
			return nil, err
		}
		n := int64(len(l.items))
		if i < 0 {
			i = max(i+n, 0)
		}
		i = min(i, n)
		l.items = append(l.items, nil)
		copy(l.items[i+1:], l.items[i:])
		l.items[i] = a.pos[1]
		return nil, nil
	case "pop":
		if len(l.items) == 0 {
			return nil, ev.errf("pop from empty list")
		}
		i := int64(len(l.items) - 1)
		if len(a.pos) > 0 {
			var err error
			if i, err = ev.intArg(a.pos[0], "pop() index"); err != nil {
				return nil, err
			}
			if i < 0 {
				i += int64(len(l.items))
			}
			if i < 0 || i >= int64(len(l.items)) {
				return nil, ev.errf("pop index out of range")
			}
		}
		v := l.items[i]
		l.items = append(l.items[:i], l.items[i+1:]...)
		return v, nil
	case "index", "count":
		if len(a.pos) != 1 {
			return nil, ev.errf("%s() takes exactly one argument", name)
		}
		n := int64(0)
		for i, x := range l.items {
			if err := ev.step(); err != nil {
				return nil, err
			}
			eq, err := ev.equal(x, a.pos[0], 0)
			if err != nil {
				return nil, err
			}
			if eq {
				if name == "index" {
					return int64(i), nil
				}
				n++
			}
		}
		if name == "index" {
			return nil, ev.errf("value is not in list")
		}
		return n, nil
	case "copy":
		if err := ev.newList(len(l.items)); err != nil {
			return nil, err
		}
		return &list{items: append([]any(nil), l.items...)}, nil
	}
	return nil, ev.errf("'list' object has no method '%s'", name)
}

// pyIsSpace is Python's str.isspace for one character.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }

func pyStrip(s string) string { return strings.TrimFunc(s, pyIsSpace) }

func (ev *evaluator) optString(v any, fname string) (string, bool, error) {
	switch x := v.(type) {
	case noArg, nil:
		return "", false, nil
	case string:
		return x, true, nil
	}
	return "", false, ev.errf("%s arg must be None or str, not %s", fname, typeName(v))
}

// pyTitle is Python's str.title.
func pyTitle(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	prevCased := false
	for _, r := range s {
		cased := unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r)
		if prevCased {
			b.WriteRune(unicode.ToLower(r))
		} else {
			b.WriteRune(unicode.ToTitle(r))
		}
		prevCased = cased
	}
	return b.String()
}

func pyCapitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToTitle(r)) + strings.ToLower(s[n:])
}

// splitWhitespace is Python's str.split() without a separator: after
// maxsplit splits the rest is one item, blanks before it skipped and
// those after it kept ("  a  b  ".split(None, 1) is ['a', 'b  ']).
func splitWhitespace(s string, maxsplit int) []string {
	var out []string
	i := 0
	for {
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if !pyIsSpace(r) {
				break
			}
			i += n
		}
		if i >= len(s) {
			return out
		}
		if maxsplit >= 0 && len(out) == maxsplit {
			return append(out, s[i:])
		}
		j := i
		for j < len(s) {
			r, n := utf8.DecodeRuneInString(s[j:])
			if pyIsSpace(r) {
				break
			}
			j += n
		}
		out = append(out, s[i:j])
		i = j
	}
}

// isLineBreak reports the characters Python's str.splitlines splits at.
func isLineBreak(r rune) bool {
	switch r {
	case '\n', '\r', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
		return true
	}
	return false
}

// countLines counts the line breaks splitLines would split s at.
func countLines(s string) int {
	n := 0
	for i, r := range s {
		if isLineBreak(r) && !(r == '\n' && i > 0 && s[i-1] == '\r') {
			n++
		}
	}
	return n
}

// countFields bounds how many fields splitting s at whitespace gives.
func countFields(s string) int {
	n, in := 0, false
	for _, r := range s {
		sp := pyIsSpace(r)
		if !sp && !in {
			n++
		}
		in = !sp
	}
	return n
}

// splitLines is Python's str.splitlines.
func splitLines(s string, keepends bool) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if isLineBreak(r) {
			end := i + n
			if r == '\r' && end < len(s) && s[end] == '\n' {
				end++
			}
			if keepends {
				out = append(out, s[start:end])
			} else {
				out = append(out, s[start:i])
			}
			start = end
			i = end
			continue
		}
		i += n
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

func (ev *evaluator) strList(parts []string) (any, error) {
	if err := ev.newList(len(parts)); err != nil {
		return nil, err
	}
	if err := ev.alloc(int64(len(parts)) * 16); err != nil {
		return nil, err
	}
	items := make([]any, len(parts))
	for i, p := range parts {
		items[i] = p
	}
	return &list{items: items}, nil
}

func (ev *evaluator) strMethod(s, name string, a *args) (any, error) {
	if err := ev.work(len(s)); err != nil {
		return nil, err
	}
	switch name {
	case "strip", "lstrip", "rstrip":
		v, err := a.bind(ev, name, "chars")
		if err != nil {
			return nil, err
		}
		chars, set, err := ev.optString(v[0], name)
		if err != nil {
			return nil, err
		}
		switch {
		case !set && name == "strip":
			return pyStrip(s), nil
		case !set && name == "lstrip":
			return strings.TrimLeftFunc(s, pyIsSpace), nil
		case !set:
			return strings.TrimRightFunc(s, pyIsSpace), nil
		case name == "strip":
			return strings.Trim(s, chars), nil
		case name == "lstrip":
			return strings.TrimLeft(s, chars), nil
		}
		return strings.TrimRight(s, chars), nil
	case "split", "rsplit":
		v, err := a.bind(ev, name, "sep", "maxsplit")
		if err != nil {
			return nil, err
		}
		sep, set, err := ev.optString(v[0], name)
		if err != nil {
			return nil, err
		}
		maxsplit := int64(-1)
		if has(v[1]) {
			if maxsplit, err = ev.intArg(v[1], "maxsplit"); err != nil {
				return nil, err
			}
		}
		// Size the result before splitting.
		count := 0
		if set {
			if sep == "" {
				return nil, ev.errf("empty separator")
			}
			count = strings.Count(s, sep) + 1
		} else {
			count = countFields(s)
		}
		if maxsplit >= 0 && int64(count) > maxsplit+1 {
			count = int(maxsplit) + 1
		}
		if err := ev.newList(count); err != nil {
			return nil, err
		}
		if !set {
			if name == "rsplit" && maxsplit >= 0 {
				if err := ev.newString(len(s) * 8); err != nil { // the reversals' runes
					return nil, err
				}
				parts := splitWhitespace(reverseString(s), int(maxsplit))
				for i, p := range parts {
					parts[i] = reverseString(p)
				}
				for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
					parts[i], parts[j] = parts[j], parts[i]
				}
				return ev.strList(parts)
			}
			return ev.strList(splitWhitespace(s, int(maxsplit)))
		}
		if sep == "" {
			return nil, ev.errf("empty separator")
		}
		if maxsplit < 0 || maxsplit > int64(len(s)) {
			maxsplit = -1
		}
		if name == "split" || maxsplit < 0 {
			n := -1
			if maxsplit >= 0 {
				n = int(maxsplit) + 1
			}
			return ev.strList(strings.SplitN(s, sep, n))
		}
		var parts []string
		rest := s
		for int64(len(parts)) < maxsplit {
			i := strings.LastIndex(rest, sep)
			if i < 0 {
				break
			}
			parts = append(parts, rest[i+len(sep):])
			rest = rest[:i]
		}
		parts = append(parts, rest)
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
		return ev.strList(parts)
	case "splitlines":
		v, err := a.bind(ev, name, "keepends")
		if err != nil {
			return nil, err
		}
		if err := ev.newList(countLines(s) + 1); err != nil {
			return nil, err
		}
		return ev.strList(splitLines(s, has(v[0]) && truthy(v[0])))
	case "startswith", "endswith":
		v, err := a.bind(ev, name, "prefix")
		if err != nil {
			return nil, err
		}
		var cands []any
		switch p := v[0].(type) {
		case string:
			cands = []any{p}
		case *list:
			if !p.tuple {
				return nil, ev.errf("%s first arg must be str or a tuple of str, not list", name)
			}
			cands = p.items
		default:
			return nil, ev.errf("%s first arg must be str or a tuple of str, not %s", name, typeName(v[0]))
		}
		for _, c := range cands {
			cs, ok := c.(string)
			if !ok {
				return nil, ev.errf("%s tuple items must be str", name)
			}
			if name == "startswith" && strings.HasPrefix(s, cs) || name == "endswith" && strings.HasSuffix(s, cs) {
				return true, nil
			}
		}
		return false, nil
	case "upper", "lower", "title", "capitalize", "swapcase":
		if err := ev.newString(len(s) * 2); err != nil {
			return nil, err
		}
		switch name {
		case "upper":
			return strings.ToUpper(s), nil
		case "lower":
			return strings.ToLower(s), nil
		case "title":
			return pyTitle(s), nil
		case "capitalize":
			return pyCapitalize(s), nil
		}
		return strings.Map(func(r rune) rune {
			if unicode.IsUpper(r) {
				return unicode.ToLower(r)
			}
			return unicode.ToUpper(r)
		}, s), nil
	case "replace":
		v, err := a.bind(ev, name, "old", "new", "count")
		if err != nil {
			return nil, err
		}
		old, ok1 := v[0].(string)
		nw, ok2 := v[1].(string)
		if !ok1 || !ok2 {
			return nil, ev.errf("replace() arguments must be str")
		}
		count := int64(-1)
		if has(v[2]) {
			if count, err = ev.intArg(v[2], "count"); err != nil {
				return nil, err
			}
		}
		return ev.replace(s, old, nw, count)
	case "join":
		if len(a.pos) != 1 {
			return nil, ev.errf("join() takes exactly one argument")
		}
		items, err := ev.iterate(a.pos[0])
		if err != nil {
			return nil, err
		}
		parts := make([]string, len(items))
		for i, it := range items {
			str, ok := it.(string)
			if !ok {
				return nil, ev.errf("sequence item %d: expected str instance, %s found", i, typeName(it))
			}
			parts[i] = str
		}
		return ev.joinStrings(parts, s)
	case "find", "rfind", "index", "rindex", "count":
		if len(a.pos) < 1 {
			return nil, ev.errf("%s() takes at least 1 argument", name)
		}
		sub, ok := a.pos[0].(string)
		if !ok {
			return nil, ev.errf("must be str, not %s", typeName(a.pos[0]))
		}
		if name == "count" {
			if sub == "" {
				return int64(utf8.RuneCountInString(s) + 1), nil
			}
			return int64(strings.Count(s, sub)), nil
		}
		var i int
		if name == "find" || name == "index" {
			i = strings.Index(s, sub)
		} else {
			i = strings.LastIndex(s, sub)
		}
		if i < 0 {
			if name == "index" || name == "rindex" {
				return nil, ev.errf("substring not found")
			}
			return int64(-1), nil
		}
		return int64(utf8.RuneCountInString(s[:i])), nil
	case "format":
		return ev.strFormat(s, a)
	case "isdigit", "isnumeric", "isdecimal", "isalpha", "isalnum", "isspace":
		if s == "" {
			return false, nil
		}
		for _, r := range s {
			var ok bool
			switch name {
			case "isdigit", "isnumeric", "isdecimal":
				ok = unicode.IsDigit(r) || name == "isnumeric" && unicode.IsNumber(r)
			case "isalpha":
				ok = unicode.IsLetter(r)
			case "isalnum":
				ok = unicode.IsLetter(r) || unicode.IsNumber(r)
			case "isspace":
				ok = pyIsSpace(r)
			}
			if !ok {
				return false, nil
			}
		}
		return true, nil
	case "islower", "isupper":
		return isCase(s, name == "islower"), nil
	case "istitle":
		return s != "" && pyTitle(s) == s && strings.ContainsFunc(s, unicode.IsLetter), nil
	case "center", "ljust", "rjust", "zfill":
		names := []string{"width", "fillchar"}
		if name == "zfill" {
			names = names[:1]
		}
		v, err := a.bind(ev, name, names...)
		if err != nil {
			return nil, err
		}
		w, err := ev.intArg(v[0], name+"() width")
		if err != nil {
			return nil, err
		}
		fill := " "
		if name == "zfill" {
			fill = "0"
		} else if len(v) > 1 && has(v[1]) {
			f, ok := v[1].(string)
			if !ok || utf8.RuneCountInString(f) != 1 {
				return nil, ev.errf("the fill character must be exactly one character long")
			}
			fill = f
		}
		return ev.pad(s, w, fill, name)
	case "removeprefix", "removesuffix":
		if len(a.pos) != 1 {
			return nil, ev.errf("%s() takes exactly one argument", name)
		}
		x, ok := a.pos[0].(string)
		if !ok {
			return nil, ev.errf("%s() argument must be str", name)
		}
		if name == "removeprefix" {
			return strings.TrimPrefix(s, x), nil
		}
		return strings.TrimSuffix(s, x), nil
	case "partition", "rpartition":
		if len(a.pos) != 1 {
			return nil, ev.errf("%s() takes exactly one argument", name)
		}
		sep, ok := a.pos[0].(string)
		if !ok || sep == "" {
			return nil, ev.errf("%s() separator must be a non-empty str", name)
		}
		if err := ev.alloc(96); err != nil {
			return nil, err
		}
		var i int
		if name == "partition" {
			i = strings.Index(s, sep)
		} else {
			i = strings.LastIndex(s, sep)
		}
		if i < 0 {
			if name == "partition" {
				return &list{items: []any{s, "", ""}, tuple: true}, nil
			}
			return &list{items: []any{"", "", s}, tuple: true}, nil
		}
		return &list{items: []any{s[:i], sep, s[i+len(sep):]}, tuple: true}, nil
	}
	return nil, ev.errf("'str' object has no method '%s'", name)
}

func isCase(s string, lower bool) bool {
	cased := false
	for _, r := range s {
		if unicode.IsUpper(r) || unicode.IsTitle(r) {
			if lower {
				return false
			}
			cased = true
		} else if unicode.IsLower(r) {
			if !lower {
				return false
			}
			cased = true
		}
	}
	return cased
}

func reverseString(s string) string {
	rs := []rune(s)
	for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
		rs[i], rs[j] = rs[j], rs[i]
	}
	return string(rs)
}

// pad is center/ljust/rjust/zfill with Python's placement of the padding.
func (ev *evaluator) pad(s string, width int64, fill, how string) (any, error) {
	n := int64(utf8.RuneCountInString(s))
	if width <= n {
		return s, nil
	}
	padN := width - n
	if padN > int64(ev.b.MaxString) || int64(len(s))+padN*int64(len(fill)) > int64(ev.b.MaxString) {
		return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
	}
	if err := ev.newString(len(s) + int(padN)*len(fill)); err != nil {
		return nil, err
	}
	var left int64
	switch how {
	case "center":
		left = padN/2 + (padN & width & 1)
	case "rjust", "zfill":
		left = padN
	}
	if how == "zfill" && s != "" && (s[0] == '-' || s[0] == '+') {
		return s[:1] + strings.Repeat(fill, int(left)) + s[1:], nil
	}
	return strings.Repeat(fill, int(left)) + s + strings.Repeat(fill, int(padN-left)), nil
}

// replace is str.replace, sized before it is built.
func (ev *evaluator) replace(s, old, nw string, count int64) (any, error) {
	n := int64(strings.Count(s, old))
	if old == "" {
		n = int64(utf8.RuneCountInString(s) + 1)
	}
	if count >= 0 && count < n {
		n = count
	}
	size := int64(len(s)) + n*(int64(len(nw))-int64(len(old)))
	if size > int64(ev.b.MaxString) {
		return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
	}
	if err := ev.newString(int(size)); err != nil {
		return nil, err
	}
	return strings.Replace(s, old, nw, int(n)), nil
}

// joinStrings joins parts with sep, sized before it is built.
func (ev *evaluator) joinStrings(parts []string, sep string) (any, error) {
	size := 0
	for i, p := range parts {
		if i > 0 {
			size += len(sep)
		}
		size += len(p)
		if size > ev.b.MaxString {
			return nil, ev.limit(LimitString, int64(ev.b.MaxString), 0)
		}
	}
	if err := ev.cost(int64(len(parts))); err != nil {
		return nil, err
	}
	if err := ev.newString(size); err != nil {
		return nil, err
	}
	return strings.Join(parts, sep), nil
}

// strFormat is str.format with positional ({}, {0}) and named ({name})
// fields, attribute/index lookups off them not supported, no format spec
// beyond an empty one, and !s / !r conversions.
func (ev *evaluator) strFormat(s string, a *args) (any, error) {
	b := &sbuf{ev: ev}
	auto := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '{' && i+1 < len(s) && s[i+1] == '{':
			if err := b.write("{"); err != nil {
				return nil, err
			}
			i += 2
		case c == '}' && i+1 < len(s) && s[i+1] == '}':
			if err := b.write("}"); err != nil {
				return nil, err
			}
			i += 2
		case c == '{':
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return nil, ev.errf("single '{' encountered in format string")
			}
			field := s[i+1 : i+j]
			i += j + 1
			conv := byte('s')
			if k := strings.IndexByte(field, '!'); k >= 0 {
				if k+1 < len(field) {
					conv = field[k+1]
				}
				field = field[:k]
			}
			if k := strings.IndexByte(field, ':'); k >= 0 {
				if k+1 < len(field) {
					return nil, ev.errf("format specs are not supported in str.format")
				}
				field = field[:k]
			}
			var v any
			if field == "" {
				if auto >= len(a.pos) {
					return nil, ev.errf("replacement index %d out of range", auto)
				}
				v = a.pos[auto]
				auto++
			} else if n, err := strconv.Atoi(field); err == nil {
				if n < 0 || n >= len(a.pos) {
					return nil, ev.errf("replacement index %d out of range", n)
				}
				v = a.pos[n]
			} else {
				found := false
				for k, name := range a.kwNames {
					if name == field {
						v, found = a.kwVals[k], true
					}
				}
				if !found {
					return nil, ev.errf("format key '%s' not given", field)
				}
			}
			var str string
			var err error
			if conv == 'r' {
				rb := &sbuf{ev: ev}
				err = ev.writeRepr(rb, v, 0)
				str = string(rb.b)
			} else {
				str, err = ev.toStr(v)
			}
			if err != nil {
				return nil, err
			}
			if err := b.write(str); err != nil {
				return nil, err
			}
		case c == '}':
			return nil, ev.errf("single '}' encountered in format string")
		default:
			j := strings.IndexAny(s[i:], "{}")
			if j < 0 {
				j = len(s) - i
			}
			if err := b.write(s[i : i+j]); err != nil {
				return nil, err
			}
			i += j
		}
	}
	return b.string()
}

package jinja

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// jsonOpts are json.dumps' options as Hugging Face's tojson passes them:
// ensure_ascii (default False), indent, separators, sort_keys.
type jsonOpts struct {
	ascii    bool
	indented bool
	indent   string
	itemSep  string
	keySep   string
	sortKeys bool
}

// writeJSON writes v as Python's json.dumps does.
func (ev *evaluator) writeJSON(b *sbuf, v any, o *jsonOpts, depth int) error {
	if ev.depth+depth > ev.b.MaxDepth {
		return ev.limit(LimitDepth, int64(ev.b.MaxDepth), 0)
	}
	if err := ev.step(); err != nil {
		return err
	}
	switch x := v.(type) {
	case nil:
		return b.write("null")
	case bool:
		if x {
			return b.write("true")
		}
		return b.write("false")
	case int64:
		return b.write(strconv.FormatInt(x, 10))
	case float64:
		return b.write(jsonFloat(x))
	case string:
		if err := ev.work(len(x)); err != nil {
			return err
		}
		return b.write(jsonString(x, o.ascii))
	case *list:
		if len(x.items) == 0 {
			return b.write("[]")
		}
		if err := b.write("["); err != nil {
			return err
		}
		for i, it := range x.items {
			if i > 0 {
				if err := b.write(o.itemSep); err != nil {
					return err
				}
			}
			if err := ev.jsonNewline(b, o, depth+1); err != nil {
				return err
			}
			if err := ev.writeJSON(b, it, o, depth+1); err != nil {
				return err
			}
		}
		if err := ev.jsonNewline(b, o, depth); err != nil {
			return err
		}
		return b.write("]")
	case *dict:
		if x.len() == 0 {
			return b.write("{}")
		}
		keys := make([]string, x.len())
		for i, k := range x.keys {
			switch kk := k.(type) {
			case string:
				keys[i] = kk
			case nil:
				keys[i] = "null"
			case int64:
				keys[i] = strconv.FormatInt(kk, 10)
			case float64:
				keys[i] = jsonFloat(kk)
			default:
				return ev.errf("keys must be str, int, float, bool or None, not %s", typeName(k))
			}
		}
		order := make([]int, len(keys))
		for i := range order {
			order[i] = i
		}
		if o.sortKeys {
			if err := ev.cost(int64(len(keys))); err != nil {
				return err
			}
			slices.SortStableFunc(order, func(i, j int) int { return strings.Compare(keys[i], keys[j]) })
		}
		if err := b.write("{"); err != nil {
			return err
		}
		for n, i := range order {
			if n > 0 {
				if err := b.write(o.itemSep); err != nil {
					return err
				}
			}
			if err := ev.jsonNewline(b, o, depth+1); err != nil {
				return err
			}
			if err := b.write(jsonString(keys[i], o.ascii)); err != nil {
				return err
			}
			if err := b.write(o.keySep); err != nil {
				return err
			}
			if err := ev.writeJSON(b, x.vals[i], o, depth+1); err != nil {
				return err
			}
		}
		if err := ev.jsonNewline(b, o, depth); err != nil {
			return err
		}
		return b.write("}")
	}
	return ev.errf("Object of type %s is not JSON serializable", typeName(v))
}

func (ev *evaluator) jsonNewline(b *sbuf, o *jsonOpts, depth int) error {
	if !o.indented {
		return nil
	}
	if err := b.write("\n"); err != nil {
		return err
	}
	if len(o.indent) > 0 && depth > (ev.b.MaxString-len(b.b))/len(o.indent) {
		return ev.limit(LimitString, int64(ev.b.MaxString), 0)
	}
	for range depth {
		if err := b.write(o.indent); err != nil {
			return err
		}
	}
	return nil
}

func jsonFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return formatFloat(f)
}

// jsonString quotes s as json.dumps does; ascii escapes every non-ASCII
// character (ensure_ascii=True).
func jsonString(s string, ascii bool) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch c {
			case '"':
				b.WriteString(`\"`)
			case '\\':
				b.WriteString(`\\`)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			case '\b':
				b.WriteString(`\b`)
			case '\f':
				b.WriteString(`\f`)
			default:
				if c < 0x20 {
					b.WriteString(`\u00`)
					b.WriteByte("0123456789abcdef"[c>>4])
					b.WriteByte("0123456789abcdef"[c&0xf])
				} else {
					b.WriteByte(c)
				}
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if !ascii {
			b.WriteString(s[i : i+n])
		} else if r >= 0x10000 {
			r -= 0x10000
			writeU4(&b, 0xd800+(r>>10))
			writeU4(&b, 0xdc00+(r&0x3ff))
		} else {
			writeU4(&b, r)
		}
		i += n
	}
	b.WriteByte('"')
	return b.String()
}

func writeU4(b *strings.Builder, r rune) {
	const hex = "0123456789abcdef"
	b.WriteString(`\u`)
	b.WriteByte(hex[r>>12&0xf])
	b.WriteByte(hex[r>>8&0xf])
	b.WriteByte(hex[r>>4&0xf])
	b.WriteByte(hex[r&0xf])
}

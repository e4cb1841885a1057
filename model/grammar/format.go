package grammar

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// String formats: the values of the format keyword the matcher enforces,
// each an exact automaton over the bytes of the string's content. They are
// llama.cpp's json-schema-to-grammar formats, as RFC 3339 (full-date,
// full-time, date-time), RFC 9562 (uuid) and RFC 2673 and 4291 (ipv4;
// ipv6 in its full form) define them, and RFC 3339's duration in days and
// time (see duration), within what a
// grammar can check: years 0001-9999, months 01-12, the days of each
// month (February 29 in leap years), hours 00-23, minutes and seconds
// 00-59 (no leap second), an optional fraction of 1 to 6 digits, and Z or
// a ±hh:mm offset. The model writes them plain,
// without escapes, in upper case ("T", "Z"; a uuid's hex digits in either
// case), which every reader of these formats takes.
var stringFormats = sync.OnceValue(func() map[string]*byteDFA {
	return map[string]*byteDFA{
		"date":      buildDFA(func(b *dfaBuilder, s []int16) []int16 { return b.date(s) }),
		"time":      buildDFA(func(b *dfaBuilder, s []int16) []int16 { return b.time(s) }),
		"date-time": buildDFA(func(b *dfaBuilder, s []int16) []int16 { return b.time(b.lit(b.date(s), "T")) }),
		"duration":  buildDFA(func(b *dfaBuilder, s []int16) []int16 { return b.duration(s) }),
		"ipv4": buildDFA(func(b *dfaBuilder, s []int16) []int16 {
			for i := range 4 {
				if i > 0 {
					s = b.lit(s, ".")
				}
				s = b.octet(s)
			}
			return s
		}),
		// IPv6 in its full form, eight groups of 1 to 4 hex digits (no
		// "::" shortening): an address every reader takes.
		"ipv6": buildDFA(func(b *dfaBuilder, s []int16) []int16 {
			for i := range 8 {
				if i > 0 {
					s = b.lit(s, ":")
				}
				s = b.repeat(s, 1, 4, "0-9", "a-f", "A-F")
			}
			return s
		}),
		"uuid": buildDFA(func(b *dfaBuilder, s []int16) []int16 {
			for i, n := range []int{8, 4, 4, 4, 12} {
				if i > 0 {
					s = b.lit(s, "-")
				}
				s = b.repeat(s, n, n, "0-9", "a-f", "A-F")
			}
			return s
		}),
	}
})

// anyStringFormats are formats that every string has: OpenAPI's hints
// for a client (password: mask the field; binary: any octets), which
// Pydantic writes for SecretStr and bytes and validates as any string.
var anyStringFormats = []string{"password", "binary"}

// formatNames lists the supported formats, for errors.
func formatNames() string {
	return strings.Join(slices.Sorted(slices.Values(slices.Concat(slices.Collect(maps.Keys(stringFormats())), anyStringFormats))), ", ")
}

// stringFormat reads the format keyword of s: nil when absent. A format
// outside stringFormats (email, hostname, ipv4, uri, ...) is refused as
// unsupported, naming it, whatever the type: the matcher could not keep
// the model from writing a string the format rejects.
func stringFormat(s map[string]any, path string) (*byteDFA, error) {
	v, ok := s["format"]
	if !ok {
		return nil, nil
	}
	name, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("%w: %s/format must be a string", ErrBadSchema, path)
	}
	if slices.Contains(anyStringFormats, name) {
		return nil, nil
	}
	d, ok := stringFormats()[name]
	if !ok {
		return nil, fmt.Errorf("%w: format %q at %s (supported formats: %s)", ErrUnsupported, name, path, formatNames())
	}
	return d, nil
}

// byteDFA is a deterministic automaton over bytes: the content of a
// string of a format. State 0 is the start. It is immutable.
type byteDFA struct {
	next   []int16 // next[state<<8|byte]: the following state, -1: none
	accept []bool
	// rem[state]: bit r set when some string of r more bytes ends
	// accepted from there (the formats' strings are under 64 bytes).
	rem []uint64
}

// fits reports whether, with k bytes written and the automaton in state
// st, some accepted string has a length within [minLen, maxLen] (maxLen
// -1: any), so that a string of a format with length bounds never
// reaches a prefix it cannot finish.
func (d *byteDFA) fits(k, st, minLen, maxLen int32) bool {
	lo, hi := max(0, minLen-k), int32(63)
	if maxLen >= 0 {
		hi = min(hi, maxLen-k)
	}
	if hi < lo {
		return false
	}
	mask := (^uint64(0) >> (63 - hi)) &^ (uint64(1)<<lo - 1)
	return d.rem[st]&mask != 0
}

// step returns the state after b from state st, or -1.
func (d *byteDFA) step(st int32, b byte) int32 {
	return int32(d.next[st<<8|int32(b)])
}

// matches reports whether the whole of s is accepted.
func (d *byteDFA) matches(s string) bool {
	st := int32(0)
	for i := 0; i < len(s) && st >= 0; i++ {
		st = d.step(st, s[i])
	}
	return st >= 0 && d.accept[st]
}

// dfaBuilder builds a byteDFA from a sequence of byte classes; every
// method takes the states a piece starts from and returns those it ends
// in. Pieces must keep it deterministic (two branches from one state
// never share a first byte); a conflict is a bug in a format's definition
// and panics when the formats are first built.
type dfaBuilder struct{ d byteDFA }

func buildDFA(f func(b *dfaBuilder, start []int16) []int16) *byteDFA {
	b := &dfaBuilder{}
	start := b.state()
	for _, s := range f(b, []int16{start}) {
		b.d.accept[s] = true
	}
	// The lengths left from each state: a fixpoint over the steps (the
	// automata have no loops, so as many rounds as states suffice).
	d := &b.d
	d.rem = make([]uint64, len(d.accept))
	for range d.accept {
		for st := range d.accept {
			var r uint64
			if d.accept[st] {
				r = 1
			}
			for x := range 256 {
				if t := d.next[st<<8|x]; t >= 0 {
					if d.rem[t]>>63 != 0 {
						panic("grammar: a format's strings must be shorter than 64 bytes")
					}
					r |= d.rem[t] << 1
				}
			}
			d.rem[st] = r
		}
	}
	return d
}

func (b *dfaBuilder) state() int16 {
	b.d.next = append(b.d.next, make([]int16, 256)...)
	for i := len(b.d.next) - 256; i < len(b.d.next); i++ {
		b.d.next[i] = -1
	}
	b.d.accept = append(b.d.accept, false)
	return int16(len(b.d.accept) - 1)
}

// class steps from every state of from on the bytes of the classes (one
// byte, or a range "a-z") to one new state.
func (b *dfaBuilder) class(from []int16, classes ...string) []int16 {
	to := b.state()
	b.link(from, to, classes...)
	return []int16{to}
}

// one is class from a single state.
func (b *dfaBuilder) one(from int16, classes ...string) int16 {
	return b.class([]int16{from}, classes...)[0]
}

// link adds the steps from every state of from on the bytes of the
// classes to the state to.
func (b *dfaBuilder) link(from []int16, to int16, classes ...string) {
	for _, c := range classes {
		lo, hi := c[0], c[0]
		if len(c) == 3 && c[1] == '-' {
			hi = c[2]
		}
		for _, s := range from {
			for x := int(lo); x <= int(hi); x++ {
				if at := &b.d.next[int(s)<<8|x]; *at >= 0 && *at != to {
					panic(fmt.Sprintf("grammar: format automaton is not deterministic at byte %q", byte(x)))
				}
				b.d.next[int(s)<<8|x] = to
			}
		}
	}
}

// lit steps through the bytes of s.
func (b *dfaBuilder) lit(from []int16, s string) []int16 {
	for i := range len(s) {
		from = b.class(from, s[i:i+1])
	}
	return from
}

// repeat takes min to max bytes of the classes.
func (b *dfaBuilder) repeat(from []int16, min, max int, classes ...string) []int16 {
	var ends []int16
	if min == 0 {
		ends = slices.Clone(from)
	}
	for i := 1; i <= max; i++ {
		from = b.class(from, classes...)
		if i >= min {
			ends = append(ends, from...)
		}
	}
	return ends
}

// alt is any one of the branches.
func (b *dfaBuilder) alt(from []int16, branches ...func([]int16) []int16) []int16 {
	var ends []int16
	for _, br := range branches {
		ends = append(ends, br(from)...)
	}
	return ends
}

// two is a two-digit number: first digit in first, then a digit in second
// (lo-hi) for each of them.
func (b *dfaBuilder) two(from []int16, pairs ...[2]string) []int16 {
	var branches []func([]int16) []int16
	for _, p := range pairs {
		branches = append(branches, func(s []int16) []int16 { return b.class(b.class(s, p[0]), p[1]) })
	}
	return b.alt(from, branches...)
}

// date is RFC 3339's full-date, a day of the Gregorian calendar:
// YYYY-MM-DD, years 0001-9999 (year 0 is no year to most date libraries,
// Python's among them), months 01-12, and days as the month has them
// (February 29 in leap years alone).
func (b *dfaBuilder) date(from []int16) []int16 {
	leap, common := b.year(from)
	// The month: the paths of leap and common years meet where the
	// month is not February.
	m30, m31, ten := b.state(), b.state(), b.state()
	var feb [2]int16
	for i, y := range []int16{leap, common} {
		dash := b.one(y, "-")
		zero := b.one(dash, "0")
		feb[i] = b.one(zero, "2")
		b.link([]int16{zero}, m31, "1", "3", "5", "7", "8")
		b.link([]int16{zero}, m30, "4", "6", "9")
		b.link([]int16{dash}, ten, "1")
	}
	b.link([]int16{ten}, m31, "0", "2")
	b.link([]int16{ten}, m30, "1")
	day := func(month int16, pairs ...[2]string) []int16 {
		return b.two([]int16{b.one(month, "-")}, slices.Concat([][2]string{{"0", "1-9"}}, pairs)...)
	}
	return slices.Concat(
		day(m31, [2]string{"1-2", "0-9"}, [2]string{"3", "0-1"}),
		day(m30, [2]string{"1-2", "0-9"}, [2]string{"3", "0"}),
		day(feb[0], [2]string{"1-2", "0-9"}),
		day(feb[1], [2]string{"1", "0-9"}, [2]string{"2", "0-8"}))
}

// year is four digits, 0001-9999, ending in one state for leap years and
// one for the others. A year is leap when its last two digits are a
// multiple of 4 other than 00, or when they are 00 and the first two are
// a multiple of 4 (the year of 400): so the automaton keeps the first two
// digits mod 4, then whether the third is 0, even or odd.
func (b *dfaBuilder) year(from []int16) (leap, common int16) {
	digit := func(d int) string { return string(rune('0' + d)) }
	var y1 [2]int16    // first digit even, odd (not all zeros so far)
	var y2 [4]int16    // first two digits mod 4
	var y3 [4][3]int16 // and the third: 0, even, odd
	var zeros [3]int16 // "0", "00", "000"
	for i := range y1 {
		y1[i] = b.state()
	}
	for i := range y2 {
		y2[i] = b.state()
		for k := range y3[i] {
			y3[i][k] = b.state()
		}
	}
	for i := range zeros {
		zeros[i] = b.state()
	}
	leap, common = b.state(), b.state()
	third := func(d int) int {
		switch {
		case d == 0:
			return 0
		case d%2 == 0:
			return 1
		}
		return 2
	}
	b.link(from, zeros[0], "0")
	for d := 1; d <= 9; d++ {
		b.link(from, y1[d%2], digit(d))
	}
	b.link(zeros[:1], zeros[1], "0")
	b.link(zeros[1:2], zeros[2], "0")
	for d := range 10 {
		for p := range y1 {
			b.link(y1[p:p+1], y2[(2*p+d)%4], digit(d))
		}
		if d > 0 {
			b.link(zeros[:1], y2[d%4], digit(d))
			b.link(zeros[1:2], y3[0][third(d)], digit(d))
		}
		for c := range y2 {
			b.link(y2[c:c+1], y3[c][third(d)], digit(d))
		}
	}
	for c := range y3 {
		for k := range y3[c] {
			for d := range 10 {
				// The last two digits mod 4: 10*d3 + d4 ≡ 2*d3 + d4.
				isLeap := (2*(k/2)+d)%4 == 0
				if k == 0 && d == 0 {
					isLeap = c == 0
				}
				to := common
				if isLeap {
					to = leap
				}
				from := []int16{y3[c][k]}
				if c == 0 && k == 0 && d > 0 {
					from = append(from, zeros[2]) // "000" and a digit
				}
				b.link(from, to, digit(d))
			}
		}
	}
	return leap, common
}

// hour is 00-23; minute (and second) 00-59.
func (b *dfaBuilder) hour(s []int16) []int16 {
	return b.two(s, [2]string{"0-1", "0-9"}, [2]string{"2", "0-3"})
}

func (b *dfaBuilder) minute(s []int16) []int16 { return b.class(b.class(s, "0-5"), "0-9") }

// maxFraction bounds the digits of a fraction of a second: microseconds,
// what Python's datetime (so Pydantic) holds and most libraries write.
const maxFraction = 6

// time is RFC 3339's full-time: hh:mm:ss, an optional fraction of 1 to
// maxFraction digits, and Z or a numeric offset ±hh:mm.
func (b *dfaBuilder) time(s []int16) []int16 {
	s = b.minute(b.lit(b.minute(b.lit(b.hour(s), ":")), ":"))
	s = append(s, b.repeat(b.lit(s, "."), 1, maxFraction, "0-9")...)
	return b.alt(s,
		func(s []int16) []int16 { return b.lit(s, "Z") },
		func(s []int16) []int16 { return b.minute(b.lit(b.hour(b.class(s, "+", "-")), ":")) })
}

// maxDurationDigits bounds each number of a duration: 9 digits of days
// stay within Python's timedelta (999999999 days), as do 9 of hours.
const maxDurationDigits = 9

// duration is RFC 3339's duration (Appendix A) in days and time, the part
// every reader takes the same way (Pydantic's timedelta among them; years
// and months have no fixed length): P, then days ("nD"), a time ("T" and
// hours, minutes and seconds in that order, each optional as the grammar
// says: "nH" ["nM" ["nS"]], "nM" ["nS"], or "nS"), or both.
func (b *dfaBuilder) duration(s []int16) []int16 {
	s = b.lit(s, "P")
	num := func(s []int16) []int16 { return b.repeat(s, 1, maxDurationDigits, "0-9") }
	days := b.lit(num(s), "D")
	t := b.lit(append(slices.Clone(s), days...), "T")
	digits := num(t)
	hours, minutes, seconds := b.class(digits, "H"), b.class(digits, "M"), b.class(digits, "S")
	minutes2 := b.class(num(hours), "M")
	seconds2 := b.class(num(append(minutes, minutes2...)), "S")
	return slices.Concat(days, hours, minutes, seconds, minutes2, seconds2)
}

// octet is a decimal octet of an IPv4 address, 0-255, without a leading
// zero (which some readers take for octal, and Python refuses).
func (b *dfaBuilder) octet(s []int16) []int16 {
	zero := b.class(s, "0")
	one := b.class(s, "1")      // 1, 1d, 1dd
	two := b.class(s, "2")      // 2, 2d, 2[0-4]d, 25[0-5]
	other := b.class(s, "3-9")  // d, dd
	oneD := b.class(one, "0-9") // 1d
	twoLow := b.class(two, "0-4")
	twoFive := b.class(two, "5")
	return slices.Concat(zero, one, oneD, b.class(oneD, "0-9"), two, twoLow, b.class(twoLow, "0-9"), twoFive, b.class(twoFive, "0-5"),
		b.class(two, "6-9"), other, b.class(other, "0-9"))
}

package jinja

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

type tokKind uint8

const (
	tEOF        tokKind = iota
	tText               // literal template text
	tVarBegin           // {{
	tVarEnd             // }}
	tBlockBegin         // {%
	tBlockEnd           // %}
	tName               // identifier or keyword
	tString             // string literal, val unescaped
	tInt                // integer literal, ival
	tFloat              // float literal, fval
	tOp                 // operator or punctuation, val
)

type token struct {
	kind tokKind
	val  string
	ival int64
	fval float64
	line int
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of template"
	case tText:
		return "template text"
	case tVarBegin:
		return "'{{'"
	case tVarEnd:
		return "'}}'"
	case tBlockBegin:
		return "'{%'"
	case tBlockEnd:
		return "'%}'"
	case tString:
		return "string literal"
	case tInt, tFloat:
		return "number"
	}
	return "'" + t.val + "'"
}

// lexer splits a template into text and tag tokens with Jinja's whitespace
// control as Hugging Face configures it: trim_blocks (the first newline
// after a block or comment tag is dropped), lstrip_blocks (spaces and tabs
// before a block or comment tag at the start of a line are dropped), "-"
// on either side of a tag strips all whitespace on that side, "+" disables
// lstrip_blocks/trim_blocks for that tag. Newlines are normalized to "\n"
// and one trailing newline is dropped (keep_trailing_newline=False).
type lexer struct {
	src          string
	pos          int
	line         int
	lineStarting bool
	toks         []token
}

func lex(src string) ([]token, error) {
	if strings.IndexByte(src, '\r') >= 0 {
		src = strings.ReplaceAll(src, "\r\n", "\n")
		src = strings.ReplaceAll(src, "\r", "\n")
	}
	src = strings.TrimSuffix(src, "\n")
	lx := &lexer{src: src, line: 1, lineStarting: true}
	if err := lx.run(); err != nil {
		return nil, err
	}
	lx.toks = append(lx.toks, token{kind: tEOF, line: lx.line})
	return lx.toks, nil
}

// nextTag finds the next "{{", "{%" or "{#" at or after pos.
func (lx *lexer) nextTag(pos int) int {
	for {
		i := strings.IndexByte(lx.src[pos:], '{')
		if i < 0 {
			return -1
		}
		i += pos
		if i+1 < len(lx.src) {
			switch lx.src[i+1] {
			case '{', '%', '#':
				return i
			}
		}
		pos = i + 1
	}
}

func (lx *lexer) emitText(s string) {
	if s != "" {
		lx.toks = append(lx.toks, token{kind: tText, val: s, line: lx.line})
	}
	lx.line += strings.Count(s, "\n")
}

func isSpaceTab(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' && s[i] != '\t' {
			return false
		}
	}
	return true
}

// trimLeftSpace drops leading whitespace as Python's \s does.
func trimLeftSpace(s string) string { return strings.TrimLeftFunc(s, unicode.IsSpace) }

func (lx *lexer) run() error {
	src := lx.src
	for lx.pos < len(src) {
		i := lx.nextTag(lx.pos)
		if i < 0 {
			lx.emitText(src[lx.pos:])
			lx.pos = len(src)
			return nil
		}
		text := src[lx.pos:i]
		kind := src[i+1]
		var mod byte
		if i+2 < len(src) && (src[i+2] == '-' || src[i+2] == '+') {
			mod = src[i+2]
		}
		// Count the lines of the text as written, before stripping.
		skipped := strings.Count(text, "\n")
		switch {
		case mod == '-':
			text = strings.TrimRightFunc(text, unicode.IsSpace)
		case mod != '+' && kind != '{':
			// lstrip_blocks
			l := strings.LastIndexByte(text, '\n') + 1
			if (l > 0 || lx.lineStarting) && isSpaceTab(text[l:]) {
				text = text[:l]
			}
		}
		if text != "" {
			lx.toks = append(lx.toks, token{kind: tText, val: text, line: lx.line})
		}
		lx.line += skipped
		lx.pos = i + 2
		if mod != 0 {
			lx.pos++
		}
		var err error
		switch kind {
		case '#':
			err = lx.comment()
		case '{':
			lx.toks = append(lx.toks, token{kind: tVarBegin, line: lx.line})
			err = lx.tag(false)
		case '%':
			lx.toks = append(lx.toks, token{kind: tBlockBegin, line: lx.line})
			err = lx.tag(true)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// afterTag applies the right-hand whitespace control of a tag whose end
// (ending just before lx.pos) carried modifier mod.
func (lx *lexer) afterTag(mod byte, block bool) {
	rest := lx.src[lx.pos:]
	switch {
	case mod == '-':
		t := trimLeftSpace(rest)
		skipped := rest[:len(rest)-len(t)]
		lx.line += strings.Count(skipped, "\n")
		lx.pos += len(skipped)
	case mod != '+' && block && strings.HasPrefix(rest, "\n"):
		lx.pos++
		lx.line++
	}
	lx.lineStarting = lx.pos > 0 && lx.src[lx.pos-1] == '\n'
}

func (lx *lexer) comment() error {
	start := lx.line
	rest := lx.src[lx.pos:]
	j := strings.Index(rest, "#}")
	if j < 0 {
		return errorf(start, "missing end of comment tag")
	}
	var mod byte
	if j > 0 && (rest[j-1] == '-' || rest[j-1] == '+') {
		mod = rest[j-1]
	}
	lx.line += strings.Count(rest[:j], "\n")
	lx.pos += j + 2
	lx.afterTag(mod, true)
	return nil
}

// tag lexes the expression tokens of a {{ }} or {% %} tag up to its end.
func (lx *lexer) tag(block bool) error {
	src := lx.src
	startLine := lx.line
	first := len(lx.toks)
	var stack []byte // open brackets
	for {
		// skip whitespace
		for lx.pos < len(src) {
			c := src[lx.pos]
			if c == '\n' {
				lx.line++
			} else if c != ' ' && c != '\t' && c != '\r' && c != '\f' && c != '\v' {
				break
			}
			lx.pos++
		}
		if lx.pos >= len(src) {
			if block {
				return errorf(startLine, "unexpected end of template: missing '%%}'")
			}
			return errorf(startLine, "unexpected end of template: missing '}}'")
		}
		rest := src[lx.pos:]
		if len(stack) == 0 {
			end, mod, n := tagEnd(rest, block)
			if end {
				lx.pos += n
				k := tVarEnd
				if block {
					k = tBlockEnd
				}
				lx.toks = append(lx.toks, token{kind: k, line: lx.line})
				// {% raw %}: everything up to {% endraw %} is text.
				if block && len(lx.toks)-first == 2 && lx.toks[first].kind == tName && lx.toks[first].val == "raw" {
					lx.toks = lx.toks[:first-1] // drop {% raw %}
					return lx.raw(mod)
				}
				lx.afterTag(mod, block)
				return nil
			}
		}
		c := rest[0]
		switch {
		case c == '_' || c < utf8.RuneSelf && unicode.IsLetter(rune(c)):
			n := 1
			for n < len(rest) && (rest[n] == '_' || rest[n] < utf8.RuneSelf && (unicode.IsLetter(rune(rest[n])) || unicode.IsDigit(rune(rest[n])))) {
				n++
			}
			lx.toks = append(lx.toks, token{kind: tName, val: rest[:n], line: lx.line})
			lx.pos += n
		case c >= '0' && c <= '9':
			afterDot := lx.pos > 0 && src[lx.pos-1] == '.'
			tok, n, err := lexNumber(rest, afterDot)
			if err != nil {
				return errorf(lx.line, "%s", err.Error())
			}
			tok.line = lx.line
			lx.toks = append(lx.toks, tok)
			lx.pos += n
		case c == '\'' || c == '"':
			s, n, nl, err := lexString(rest)
			if err != nil {
				return errorf(lx.line, "%s", err.Error())
			}
			lx.toks = append(lx.toks, token{kind: tString, val: s, line: lx.line})
			lx.line += nl
			lx.pos += n
		default:
			op := lexOp(rest)
			if op == "" {
				r, _ := utf8.DecodeRuneInString(rest)
				return errorf(lx.line, "unexpected character %q", r)
			}
			switch op {
			case "(", "[", "{":
				stack = append(stack, op[0])
			case ")", "]", "}":
				want := byte('(')
				if op == "]" {
					want = '['
				} else if op == "}" {
					want = '{'
				}
				if len(stack) == 0 || stack[len(stack)-1] != want {
					return errorf(lx.line, "unexpected '%s'", op)
				}
				stack = stack[:len(stack)-1]
			}
			lx.toks = append(lx.toks, token{kind: tOp, val: op, line: lx.line})
			lx.pos += len(op)
		}
	}
}

// tagEnd reports whether rest starts with the end of the current tag, its
// whitespace modifier and its length.
func tagEnd(rest string, block bool) (bool, byte, int) {
	closer := "}}"
	if block {
		closer = "%}"
	}
	if strings.HasPrefix(rest, closer) {
		return true, 0, 2
	}
	if len(rest) >= 3 && (rest[0] == '-' || rest[0] == '+' && block) && rest[1:3] == closer {
		return true, rest[0], 3
	}
	return false, 0, 0
}

// raw reads the text of a {% raw %} block up to its {% endraw %}.
func (lx *lexer) raw(mod byte) error {
	start := lx.line
	if mod == '-' {
		rest := lx.src[lx.pos:]
		t := trimLeftSpace(rest)
		lx.line += strings.Count(rest[:len(rest)-len(t)], "\n")
		lx.pos += len(rest) - len(t)
	} else if mod != '+' && strings.HasPrefix(lx.src[lx.pos:], "\n") {
		lx.pos++
		lx.line++
	}
	rest := lx.src[lx.pos:]
	for off := 0; ; {
		i := strings.Index(rest[off:], "{%")
		if i < 0 {
			return errorf(start, "missing {%% endraw %%}")
		}
		i += off
		j := i + 2
		var lmod byte
		if j < len(rest) && (rest[j] == '-' || rest[j] == '+') {
			lmod = rest[j]
			j++
		}
		for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t' || rest[j] == '\n') {
			j++
		}
		if !strings.HasPrefix(rest[j:], "endraw") {
			off = i + 2
			continue
		}
		j += len("endraw")
		for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t' || rest[j] == '\n') {
			j++
		}
		end, rmod, n := tagEnd(rest[j:], true)
		if !end {
			off = i + 2
			continue
		}
		text := rest[:i]
		if lmod == '-' {
			text = strings.TrimRightFunc(text, unicode.IsSpace)
		} else if lmod != '+' {
			l := strings.LastIndexByte(text, '\n') + 1
			if isSpaceTab(text[l:]) && (l > 0 || lx.lineStarting) {
				text = text[:l]
			}
		}
		if text != "" {
			lx.toks = append(lx.toks, token{kind: tText, val: text, line: lx.line})
		}
		lx.line += strings.Count(rest[:j+n], "\n")
		lx.pos += j + n
		lx.afterTag(rmod, true)
		return nil
	}
}

// lexOp returns the operator at the start of s, longest first.
func lexOp(s string) string {
	if len(s) >= 2 {
		switch s[:2] {
		case "//", "**", "==", "!=", "<=", ">=":
			return s[:2]
		}
	}
	switch s[0] {
	case '+', '-', '*', '/', '%', '~', '<', '>', '=', '(', ')', '[', ']', '{', '}', ',', '.', ':', '|':
		return s[:1]
	}
	return ""
}

type lexErr string

func (e lexErr) Error() string { return string(e) }

// lexNumber lexes an integer or float literal (underscores allowed between
// digits; 0x, 0o and 0b integers as Jinja2 lexes them). After a '.', only
// an integer is read, so x.0.1 is two lookups.
func lexNumber(s string, afterDot bool) (token, int, error) {
	if !afterDot {
		if n := radixLiteral(s); n > 0 {
			// Go's base-0 syntax is Python's for these (prefix,
			// underscores before digits).
			v, err := strconv.ParseInt(s[:n], 0, 64)
			if err != nil {
				return token{}, 0, lexErr("integer literal out of range: " + s[:n])
			}
			return token{kind: tInt, ival: v, val: s[:n]}, n, nil
		}
	}
	isDigit := func(i int) bool { return i < len(s) && s[i] >= '0' && s[i] <= '9' }
	digits := func(i int) int {
		for isDigit(i) || i > 0 && s[i-1] != '_' && i < len(s) && s[i] == '_' && isDigit(i+1) {
			i++
		}
		return i
	}
	n := digits(0)
	isFloat := false
	if !afterDot {
		if n+1 < len(s) && s[n] == '.' && s[n+1] >= '0' && s[n+1] <= '9' {
			n = digits(n + 1)
			isFloat = true
		}
		if n < len(s) && (s[n] == 'e' || s[n] == 'E') {
			m := n + 1
			if m < len(s) && (s[m] == '+' || s[m] == '-') {
				m++
			}
			if m < len(s) && s[m] >= '0' && s[m] <= '9' {
				n = digits(m)
				isFloat = true
			}
		}
	}
	lit := strings.ReplaceAll(s[:n], "_", "")
	if isFloat {
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil && !isRangeErr(err) {
			return token{}, 0, lexErr("bad float literal " + s[:n])
		}
		return token{kind: tFloat, fval: f, val: s[:n]}, n, nil
	}
	v, err := strconv.ParseInt(lit, 10, 64)
	if err != nil {
		return token{}, 0, lexErr("integer literal out of range: " + s[:n])
	}
	return token{kind: tInt, ival: v, val: s[:n]}, n, nil
}

// radixLiteral returns the length of the 0x, 0o or 0b integer literal s
// starts with (Jinja2's 0[xX](_?[0-9a-fA-F])+ and its octal and binary
// forms), 0 if it starts with none.
func radixLiteral(s string) int {
	if len(s) < 3 || s[0] != '0' {
		return 0
	}
	var digit func(c byte) bool
	switch s[1] {
	case 'x', 'X':
		digit = func(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
	case 'o', 'O':
		digit = func(c byte) bool { return c >= '0' && c <= '7' }
	case 'b', 'B':
		digit = func(c byte) bool { return c == '0' || c == '1' }
	default:
		return 0
	}
	n := 2
	for {
		m := n
		if m < len(s) && s[m] == '_' {
			m++
		}
		if m >= len(s) || !digit(s[m]) {
			break
		}
		n = m + 1
	}
	if n == 2 {
		return 0
	}
	return n
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// lexString lexes a quoted string literal with Python's escapes. It returns
// the value, the literal's length and the number of newlines in it.
func lexString(s string) (string, int, int, error) {
	q := s[0]
	var b strings.Builder
	nl := 0
	for i := 1; i < len(s); {
		c := s[i]
		switch {
		case c == q:
			return b.String(), i + 1, nl, nil
		case c == '\n':
			nl++
			b.WriteByte(c)
			i++
		case c != '\\':
			b.WriteByte(c)
			i++
		default:
			if i+1 >= len(s) {
				return "", 0, 0, lexErr("unterminated string literal")
			}
			e := s[i+1]
			i += 2
			switch e {
			case '\n':
				nl++ // line continuation
			case '\\', '\'', '"':
				b.WriteByte(e)
			case 'a':
				b.WriteByte('\a')
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'v':
				b.WriteByte('\v')
			case '0', '1', '2', '3', '4', '5', '6', '7':
				v := int(e - '0')
				for k := 0; k < 2 && i < len(s) && s[i] >= '0' && s[i] <= '7'; k++ {
					v = v*8 + int(s[i]-'0')
					i++
				}
				b.WriteRune(rune(v))
			case 'x', 'u', 'U':
				n := 2
				if e == 'u' {
					n = 4
				} else if e == 'U' {
					n = 8
				}
				if i+n > len(s) {
					return "", 0, 0, lexErr("truncated \\" + string(e) + " escape")
				}
				v, err := strconv.ParseUint(s[i:i+n], 16, 32)
				if err != nil || v > unicode.MaxRune {
					return "", 0, 0, lexErr("bad \\" + string(e) + " escape")
				}
				b.WriteRune(rune(v))
				i += n
			default:
				b.WriteByte('\\')
				b.WriteByte(e)
			}
		}
	}
	return "", 0, 0, lexErr("unterminated string literal")
}

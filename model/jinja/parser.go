package jinja

import (
	"slices"
	"strings"
)

// parser builds the AST from the token stream. Every construct that nests
// (blocks, parentheses, unary operators, operator and postfix chains) counts
// against maxDepth, so the parser's recursion, and the depth of the tree it
// builds, stay bounded whatever the source.
type parser struct {
	toks     []token
	pos      int
	depth    int
	maxDepth int
	loops    int // enclosing for loops (in the current macro), for break/continue
}

func (p *parser) peek() token { return p.toks[p.pos] }

func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tEOF {
		p.pos++
	}
	return t
}

func (p *parser) enter(line int) error {
	p.depth++
	if p.depth > p.maxDepth {
		return &LimitError{Limit: LimitDepth, Max: int64(p.maxDepth), Line: line}
	}
	return nil
}

func (p *parser) isOp(op string) bool {
	t := p.toks[p.pos]
	return t.kind == tOp && t.val == op
}

func (p *parser) isName(name string) bool {
	t := p.toks[p.pos]
	return t.kind == tName && t.val == name
}

func (p *parser) errUnexpected(what string) error {
	t := p.peek()
	return errorf(t.line, "unexpected %s, expected %s", t, what)
}

func (p *parser) expectOp(op string) error {
	if !p.isOp(op) {
		return p.errUnexpected("'" + op + "'")
	}
	p.next()
	return nil
}

func (p *parser) expectName() (string, error) {
	t := p.peek()
	if t.kind != tName {
		return "", p.errUnexpected("a name")
	}
	p.next()
	return t.val, nil
}

func (p *parser) expectKind(k tokKind, what string) error {
	if p.peek().kind != k {
		return p.errUnexpected(what)
	}
	p.next()
	return nil
}

func (p *parser) blockEnd() error { return p.expectKind(tBlockEnd, "'%}'") }

func (p *parser) parseTemplate() ([]stmt, error) {
	body, end, err := p.parseBody(nil, 0)
	if err != nil {
		return nil, err
	}
	if end != "" {
		return nil, errorf(p.peek().line, "unexpected '%s'", end)
	}
	return body, nil
}

// parseBody parses statements up to one of the block tags in ends (whose
// name it consumes and returns; the caller parses the rest of that tag) or
// the end of the template (only allowed when ends is empty).
func (p *parser) parseBody(ends []string, openLine int) ([]stmt, string, error) {
	var body []stmt
	for {
		t := p.peek()
		switch t.kind {
		case tEOF:
			if len(ends) > 0 {
				return nil, "", errorf(t.line, "unexpected end of template: expected '%s' to close the tag at line %d", strings.Join(ends, "' or '"), openLine)
			}
			return body, "", nil
		case tText:
			p.next()
			body = append(body, &textStmt{s: t.val, line: t.line})
		case tVarBegin:
			p.next()
			x, err := p.parseTuple(true)
			if err != nil {
				return nil, "", err
			}
			if err := p.expectKind(tVarEnd, "'}}'"); err != nil {
				return nil, "", err
			}
			body = append(body, &outputStmt{x: x, line: t.line})
		case tBlockBegin:
			p.next()
			nt := p.peek()
			if nt.kind != tName {
				return nil, "", p.errUnexpected("a tag name")
			}
			p.next()
			if slices.Contains(ends, nt.val) {
				return body, nt.val, nil
			}
			if err := p.enter(nt.line); err != nil {
				return nil, "", err
			}
			s, err := p.parseStatement(nt.val, nt.line)
			p.depth--
			if err != nil {
				return nil, "", err
			}
			if s != nil {
				body = append(body, s)
			}
		default:
			return nil, "", p.errUnexpected("template text or a tag")
		}
	}
}

// endTag finishes an end tag whose name parseBody consumed, tolerating a
// trailing name ({% endmacro name %}).
func (p *parser) endTag() error {
	if p.peek().kind == tName {
		p.next()
	}
	return p.blockEnd()
}

func (p *parser) parseStatement(name string, line int) (stmt, error) {
	switch name {
	case "if":
		return p.parseIf(line)
	case "for":
		return p.parseFor(line)
	case "set":
		return p.parseSet(line)
	case "macro":
		return p.parseMacro(line)
	case "call":
		return p.parseCallBlock(line)
	case "filter":
		fs, err := p.parseFilterChain()
		if err != nil {
			return nil, err
		}
		if err := p.blockEnd(); err != nil {
			return nil, err
		}
		body, _, err := p.parseBody([]string{"endfilter"}, line)
		if err != nil {
			return nil, err
		}
		return &filterBlockStmt{filters: fs, body: body, line: line}, p.endTag()
	case "with":
		return p.parseWith(line)
	case "do":
		x, err := p.parseTuple(true)
		if err != nil {
			return nil, err
		}
		return &doStmt{x: x, line: line}, p.blockEnd()
	case "break", "continue":
		if p.loops == 0 {
			return nil, errorf(line, "'%s' outside of a loop", name)
		}
		if err := p.blockEnd(); err != nil {
			return nil, err
		}
		if name == "break" {
			return &breakStmt{line: line}, nil
		}
		return &continueStmt{line: line}, nil
	case "generation":
		if err := p.blockEnd(); err != nil {
			return nil, err
		}
		body, _, err := p.parseBody([]string{"endgeneration"}, line)
		if err != nil {
			return nil, err
		}
		return &blockStmt{body: body, line: line}, p.endTag()
	case "include", "import", "from", "extends", "block":
		return nil, errorf(line, "the '%s' tag is not supported in chat templates", name)
	case "elif", "else", "endif", "endfor", "endset", "endmacro", "endcall", "endfilter", "endwith", "endgeneration", "endraw":
		return nil, errorf(line, "unexpected '%s'", name)
	}
	return nil, errorf(line, "unknown tag '%s'", name)
}

func (p *parser) parseIf(line int) (stmt, error) {
	s := &ifStmt{line: line}
	for {
		cond, err := p.parseTuple(true)
		if err != nil {
			return nil, err
		}
		if err := p.blockEnd(); err != nil {
			return nil, err
		}
		body, end, err := p.parseBody([]string{"elif", "else", "endif"}, line)
		if err != nil {
			return nil, err
		}
		s.conds = append(s.conds, cond)
		s.bodies = append(s.bodies, body)
		switch end {
		case "elif":
			continue
		case "else":
			if err := p.blockEnd(); err != nil {
				return nil, err
			}
			s.els, _, err = p.parseBody([]string{"endif"}, line)
			if err != nil {
				return nil, err
			}
		}
		return s, p.endTag()
	}
}

// parseTargets parses assignment targets: a name, or names separated by
// commas, optionally in parentheses.
func (p *parser) parseTargets() ([]string, error) {
	paren := p.isOp("(")
	if paren {
		p.next()
	}
	var names []string
	for {
		n, err := p.expectName()
		if err != nil {
			return nil, err
		}
		names = append(names, n)
		if !p.isOp(",") {
			break
		}
		p.next()
		if paren && p.isOp(")") || !paren && p.peek().kind != tName {
			break // trailing comma
		}
	}
	if paren {
		if err := p.expectOp(")"); err != nil {
			return nil, err
		}
	}
	return names, nil
}

func (p *parser) parseFor(line int) (stmt, error) {
	targets, err := p.parseTargets()
	if err != nil {
		return nil, err
	}
	if !p.isName("in") {
		return nil, p.errUnexpected("'in'")
	}
	p.next()
	s := &forStmt{targets: targets, line: line}
	if s.iter, err = p.parseTuple(false); err != nil {
		return nil, err
	}
	if p.isName("if") {
		p.next()
		if s.filter, err = p.parseExpression(true); err != nil {
			return nil, err
		}
	}
	if p.isName("recursive") {
		return nil, errorf(line, "recursive for loops are not supported")
	}
	if err := p.blockEnd(); err != nil {
		return nil, err
	}
	p.loops++
	body, end, err := p.parseBody([]string{"else", "endfor"}, line)
	p.loops--
	if err != nil {
		return nil, err
	}
	s.body = body
	if end == "else" {
		if err := p.blockEnd(); err != nil {
			return nil, err
		}
		if s.els, _, err = p.parseBody([]string{"endfor"}, line); err != nil {
			return nil, err
		}
	}
	return s, p.endTag()
}

func (p *parser) parseSet(line int) (stmt, error) {
	first, err := p.expectName()
	if err != nil {
		return nil, err
	}
	var names []string
	var nsName, attr string
	switch {
	case p.isOp("."):
		p.next()
		nsName = first
		if attr, err = p.expectName(); err != nil {
			return nil, err
		}
	case p.isOp(","):
		p.pos-- // re-read the names as a target list
		if names, err = p.parseTargets(); err != nil {
			return nil, err
		}
	default:
		names = []string{first}
	}
	if p.isOp("=") {
		p.next()
		v, err := p.parseTuple(true)
		if err != nil {
			return nil, err
		}
		return &setStmt{names: names, nsName: nsName, attr: attr, value: v, line: line}, p.blockEnd()
	}
	if len(names) > 1 {
		return nil, p.errUnexpected("'='")
	}
	s := &setBlockStmt{nsName: nsName, attr: attr, line: line}
	if len(names) == 1 {
		s.name = names[0]
	}
	if p.isOp("|") {
		if s.filters, err = p.parseFilterChain(); err != nil {
			return nil, err
		}
	}
	if err := p.blockEnd(); err != nil {
		return nil, err
	}
	if s.body, _, err = p.parseBody([]string{"endset"}, line); err != nil {
		return nil, err
	}
	return s, p.endTag()
}

// parseParams parses a macro's "(a, b=default, ...)".
func (p *parser) parseParams(m *macroDef) error {
	if err := p.expectOp("("); err != nil {
		return err
	}
	for !p.isOp(")") {
		if len(m.params) > 0 {
			if err := p.expectOp(","); err != nil {
				return err
			}
			if p.isOp(")") {
				break
			}
		}
		name, err := p.expectName()
		if err != nil {
			return err
		}
		var def expr
		if p.isOp("=") {
			p.next()
			if def, err = p.parseExpression(true); err != nil {
				return err
			}
		}
		m.params = append(m.params, name)
		m.defaults = append(m.defaults, def)
	}
	p.next()
	return nil
}

// parseMacroBody parses a macro's body up to end; break/continue cannot
// reach loops outside it.
func (p *parser) parseMacroBody(m *macroDef, end string, line int) error {
	loops := p.loops
	p.loops = 0
	body, _, err := p.parseBody([]string{end}, line)
	p.loops = loops
	m.body = body
	return err
}

func (p *parser) parseMacro(line int) (stmt, error) {
	name, err := p.expectName()
	if err != nil {
		return nil, err
	}
	m := &macroDef{name: name}
	if err := p.parseParams(m); err != nil {
		return nil, err
	}
	if err := p.blockEnd(); err != nil {
		return nil, err
	}
	if err := p.parseMacroBody(m, "endmacro", line); err != nil {
		return nil, err
	}
	return &macroStmt{name: name, mac: m, line: line}, p.endTag()
}

func (p *parser) parseCallBlock(line int) (stmt, error) {
	caller := &macroDef{name: "caller"}
	if p.isOp("(") {
		if err := p.parseParams(caller); err != nil {
			return nil, err
		}
	}
	x, err := p.parseExpression(true)
	if err != nil {
		return nil, err
	}
	call, ok := x.(*callExpr)
	if !ok {
		return nil, errorf(line, "expected a macro call after 'call'")
	}
	if err := p.blockEnd(); err != nil {
		return nil, err
	}
	if err := p.parseMacroBody(caller, "endcall", line); err != nil {
		return nil, err
	}
	return &callBlockStmt{call: call, caller: caller, line: line}, p.endTag()
}

func (p *parser) parseWith(line int) (stmt, error) {
	s := &withStmt{line: line}
	for p.peek().kind != tBlockEnd {
		if len(s.names) > 0 {
			if err := p.expectOp(","); err != nil {
				return nil, err
			}
		}
		name, err := p.expectName()
		if err != nil {
			return nil, err
		}
		if err := p.expectOp("="); err != nil {
			return nil, err
		}
		v, err := p.parseExpression(true)
		if err != nil {
			return nil, err
		}
		s.names = append(s.names, name)
		s.values = append(s.values, v)
	}
	p.next()
	var err error
	if s.body, _, err = p.parseBody([]string{"endwith"}, line); err != nil {
		return nil, err
	}
	return s, p.endTag()
}

// parseFilterChain parses "name(args) | name ..." of a filter block or a
// set block (after its "|").
func (p *parser) parseFilterChain() ([]*filterExpr, error) {
	var fs []*filterExpr
	if p.isOp("|") {
		p.next()
	}
	for {
		f, err := p.parseFilter(nil)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
		if !p.isOp("|") {
			return fs, nil
		}
		p.next()
	}
}

// Expressions.

// parseTuple parses an expression or a comma-separated tuple of them.
func (p *parser) parseTuple(withCond bool) (expr, error) {
	line := p.peek().line
	x, err := p.parseExpression(withCond)
	if err != nil {
		return nil, err
	}
	if !p.isOp(",") {
		return x, nil
	}
	items := []expr{x}
	for p.isOp(",") {
		p.next()
		if p.tupleEnd() {
			break
		}
		y, err := p.parseExpression(withCond)
		if err != nil {
			return nil, err
		}
		items = append(items, y)
	}
	return &listExpr{items: items, tuple: true, line: line}, nil
}

func (p *parser) tupleEnd() bool {
	t := p.peek()
	switch t.kind {
	case tVarEnd, tBlockEnd, tEOF:
		return true
	case tOp:
		return t.val == ")" || t.val == "]" || t.val == "}"
	case tName:
		return t.val == "if" || t.val == "recursive"
	}
	return false
}

func (p *parser) parseExpression(withCond bool) (expr, error) {
	line := p.peek().line
	if err := p.enter(line); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	x, err := p.parseOr()
	if err != nil || !withCond {
		return x, err
	}
	n := 0
	defer func() { p.depth -= n }()
	for p.isName("if") {
		p.next()
		n++
		if err := p.enter(line); err != nil {
			return nil, err
		}
		cond, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		var els expr
		if p.isName("else") {
			p.next()
			if els, err = p.parseExpression(true); err != nil {
				return nil, err
			}
		}
		x = &condExpr{cond: cond, then: x, els: els, line: line}
	}
	return x, nil
}

// binaryChain parses left-associative operators accepted by match, with
// operands from sub; each link of the chain counts one level of depth.
func (p *parser) binaryChain(sub func() (expr, error), match func() string) (expr, error) {
	x, err := sub()
	if err != nil {
		return nil, err
	}
	n := 0
	defer func() { p.depth -= n }()
	for {
		op := match()
		if op == "" {
			return x, nil
		}
		t := p.next()
		if op == "not in" {
			p.next()
		}
		n++
		if err := p.enter(t.line); err != nil {
			return nil, err
		}
		r, err := sub()
		if err != nil {
			return nil, err
		}
		x = &binExpr{op: op, l: x, r: r, line: t.line}
	}
}

func (p *parser) parseOr() (expr, error) {
	return p.binaryChain(p.parseAnd, func() string {
		if p.isName("or") {
			return "or"
		}
		return ""
	})
}

func (p *parser) parseAnd() (expr, error) {
	return p.binaryChain(p.parseNot, func() string {
		if p.isName("and") {
			return "and"
		}
		return ""
	})
}

func (p *parser) parseNot() (expr, error) {
	if !p.isName("not") {
		return p.parseCompare()
	}
	t := p.next()
	if err := p.enter(t.line); err != nil {
		return nil, err
	}
	x, err := p.parseNot()
	p.depth--
	if err != nil {
		return nil, err
	}
	return &unaryExpr{op: "not", x: x, line: t.line}, nil
}

func (p *parser) compareOp() string {
	t := p.peek()
	switch t.kind {
	case tOp:
		switch t.val {
		case "==", "!=", "<", "<=", ">", ">=":
			return t.val
		}
	case tName:
		if t.val == "in" {
			return "in"
		}
		if t.val == "not" {
			if n := p.toks[p.pos+1]; n.kind == tName && n.val == "in" {
				return "not in"
			}
		}
	}
	return ""
}

func (p *parser) parseCompare() (expr, error) {
	line := p.peek().line
	x, err := p.parseMath1()
	if err != nil {
		return nil, err
	}
	var c *compareExpr
	for {
		op := p.compareOp()
		if op == "" {
			break
		}
		p.next()
		if op == "not in" {
			p.next()
		}
		r, err := p.parseMath1()
		if err != nil {
			return nil, err
		}
		if c == nil {
			c = &compareExpr{first: x, line: line}
		}
		c.ops = append(c.ops, op)
		c.rest = append(c.rest, r)
	}
	if c == nil {
		return x, nil
	}
	return c, nil
}

func (p *parser) opMatcher(ops ...string) func() string {
	return func() string {
		t := p.peek()
		if t.kind == tOp && slices.Contains(ops, t.val) {
			return t.val
		}
		return ""
	}
}

func (p *parser) parseMath1() (expr, error) {
	return p.binaryChain(p.parseConcat, p.opMatcher("+", "-"))
}

func (p *parser) parseConcat() (expr, error) {
	line := p.peek().line
	x, err := p.parseMath2()
	if err != nil || !p.isOp("~") {
		return x, err
	}
	c := &concatExpr{items: []expr{x}, line: line}
	for p.isOp("~") {
		p.next()
		y, err := p.parseMath2()
		if err != nil {
			return nil, err
		}
		c.items = append(c.items, y)
	}
	return c, nil
}

func (p *parser) parseMath2() (expr, error) {
	return p.binaryChain(p.parsePow, p.opMatcher("*", "/", "//", "%"))
}

func (p *parser) parsePow() (expr, error) {
	return p.binaryChain(func() (expr, error) { return p.parseUnary(true) }, p.opMatcher("**"))
}

func (p *parser) parseUnary(withFilter bool) (expr, error) {
	t := p.peek()
	var x expr
	var err error
	if t.kind == tOp && (t.val == "-" || t.val == "+") {
		p.next()
		if err := p.enter(t.line); err != nil {
			return nil, err
		}
		x, err = p.parseUnary(false)
		p.depth--
		if err != nil {
			return nil, err
		}
		x = &unaryExpr{op: t.val, x: x, line: t.line}
	} else if x, err = p.parsePrimary(); err != nil {
		return nil, err
	}
	n := 0
	defer func() { p.depth -= n }()
	if x, err = p.parsePostfix(x, &n); err != nil {
		return nil, err
	}
	if withFilter {
		return p.parseFilterExpr(x, &n)
	}
	return x, nil
}

func (p *parser) parsePrimary() (expr, error) {
	t := p.peek()
	switch t.kind {
	case tName:
		p.next()
		switch t.val {
		case "true", "True":
			return &constExpr{v: true, line: t.line}, nil
		case "false", "False":
			return &constExpr{v: false, line: t.line}, nil
		case "none", "None":
			return &constExpr{v: nil, line: t.line}, nil
		}
		return &nameExpr{name: t.val, line: t.line}, nil
	case tString:
		p.next()
		s := t.val
		if p.peek().kind == tString { // adjacent literals concatenate
			var b strings.Builder
			b.WriteString(s)
			for p.peek().kind == tString {
				b.WriteString(p.next().val)
			}
			s = b.String()
		}
		return &constExpr{v: s, line: t.line}, nil
	case tInt:
		p.next()
		return &constExpr{v: t.ival, line: t.line}, nil
	case tFloat:
		p.next()
		return &constExpr{v: t.fval, line: t.line}, nil
	case tOp:
		switch t.val {
		case "(":
			p.next()
			if p.isOp(")") {
				p.next()
				return &listExpr{tuple: true, line: t.line}, nil
			}
			x, err := p.parseTuple(true)
			if err != nil {
				return nil, err
			}
			return x, p.expectOp(")")
		case "[":
			p.next()
			l := &listExpr{line: t.line}
			for !p.isOp("]") {
				if len(l.items) > 0 {
					if err := p.expectOp(","); err != nil {
						return nil, err
					}
					if p.isOp("]") {
						break
					}
				}
				x, err := p.parseExpression(true)
				if err != nil {
					return nil, err
				}
				l.items = append(l.items, x)
			}
			p.next()
			return l, nil
		case "{":
			p.next()
			d := &dictExpr{line: t.line}
			for !p.isOp("}") {
				if len(d.keys) > 0 {
					if err := p.expectOp(","); err != nil {
						return nil, err
					}
					if p.isOp("}") {
						break
					}
				}
				k, err := p.parseExpression(true)
				if err != nil {
					return nil, err
				}
				if err := p.expectOp(":"); err != nil {
					return nil, err
				}
				v, err := p.parseExpression(true)
				if err != nil {
					return nil, err
				}
				d.keys = append(d.keys, k)
				d.vals = append(d.vals, v)
			}
			p.next()
			return d, nil
		}
	}
	return nil, p.errUnexpected("an expression")
}

// parsePostfix parses .attr, [subscript] and (call) after x; *n counts the
// depth levels taken (the caller gives them back).
func (p *parser) parsePostfix(x expr, n *int) (expr, error) {
	for {
		t := p.peek()
		if t.kind != tOp || t.val != "." && t.val != "[" && t.val != "(" {
			return x, nil
		}
		*n++
		if err := p.enter(t.line); err != nil {
			return nil, err
		}
		var err error
		switch t.val {
		case ".":
			p.next()
			a := p.next()
			switch a.kind {
			case tName:
				x = &attrExpr{x: x, name: a.val, line: t.line}
			case tInt:
				x = &indexExpr{x: x, key: &constExpr{v: a.ival, line: a.line}, line: t.line}
			default:
				return nil, errorf(a.line, "unexpected %s after '.'", a)
			}
		case "[":
			x, err = p.parseSubscript(x)
		case "(":
			x, err = p.parseCall(x)
		}
		if err != nil {
			return nil, err
		}
	}
}

func (p *parser) parseSubscript(x expr) (expr, error) {
	t := p.next() // [
	var parts [3]expr
	colons := 0
	for !p.isOp("]") {
		if p.isOp(":") {
			if colons == 2 {
				return nil, p.errUnexpected("']'")
			}
			colons++
			p.next()
			continue
		}
		if parts[colons] != nil {
			return nil, p.errUnexpected("':' or ']'")
		}
		var err error
		if colons == 0 {
			parts[0], err = p.parseTuple(true)
		} else {
			parts[colons], err = p.parseExpression(true)
		}
		if err != nil {
			return nil, err
		}
	}
	p.next()
	if colons == 0 {
		if parts[0] == nil {
			return nil, errorf(t.line, "empty subscript")
		}
		return &indexExpr{x: x, key: parts[0], line: t.line}, nil
	}
	return &sliceExpr{x: x, start: parts[0], stop: parts[1], step: parts[2], line: t.line}, nil
}

// parseArgs parses "(positional..., name=value...)".
func (p *parser) parseArgs() (args []expr, kwNames []string, kwVals []expr, err error) {
	if err := p.expectOp("("); err != nil {
		return nil, nil, nil, err
	}
	for !p.isOp(")") {
		if len(args)+len(kwNames) > 0 {
			if err := p.expectOp(","); err != nil {
				return nil, nil, nil, err
			}
			if p.isOp(")") {
				break
			}
		}
		if p.isOp("*") || p.isOp("**") {
			return nil, nil, nil, errorf(p.peek().line, "*args and **kwargs in calls are not supported")
		}
		if t := p.peek(); t.kind == tName && p.toks[p.pos+1].kind == tOp && p.toks[p.pos+1].val == "=" {
			p.pos += 2
			v, err := p.parseExpression(true)
			if err != nil {
				return nil, nil, nil, err
			}
			kwNames = append(kwNames, t.val)
			kwVals = append(kwVals, v)
			continue
		}
		if len(kwNames) > 0 {
			return nil, nil, nil, errorf(p.peek().line, "positional argument after keyword argument")
		}
		v, err := p.parseExpression(true)
		if err != nil {
			return nil, nil, nil, err
		}
		args = append(args, v)
	}
	p.next()
	return args, kwNames, kwVals, nil
}

func (p *parser) parseCall(fn expr) (expr, error) {
	line := p.peek().line
	args, kn, kv, err := p.parseArgs()
	if err != nil {
		return nil, err
	}
	return &callExpr{fn: fn, args: args, kwNames: kn, kwVals: kv, line: line}, nil
}

// parseFilterExpr parses "| filter", "is test" and calls after x.
func (p *parser) parseFilterExpr(x expr, n *int) (expr, error) {
	for {
		var err error
		t := p.peek()
		switch {
		case t.kind == tOp && t.val == "|":
			p.next()
			x, err = p.parseFilter(x)
		case t.kind == tName && t.val == "is":
			x, err = p.parseTest(x)
		case t.kind == tOp && t.val == "(":
			x, err = p.parseCall(x)
		default:
			return x, nil
		}
		if err != nil {
			return nil, err
		}
		*n++
		if err := p.enter(t.line); err != nil {
			return nil, err
		}
	}
}

// parseFilter parses "name" or "name(args)" (the "|" already consumed).
func (p *parser) parseFilter(x expr) (*filterExpr, error) {
	line := p.peek().line
	name, err := p.expectName()
	if err != nil {
		return nil, err
	}
	fn := lookupFilter(name)
	if fn == nil {
		return nil, errorf(line, "no filter named '%s'", name)
	}
	f := &filterExpr{x: x, name: name, fn: fn, line: line}
	if p.isOp("(") {
		if f.args, f.kwNames, f.kwVals, err = p.parseArgs(); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (p *parser) parseTest(x expr) (expr, error) {
	line := p.next().line // is
	neg := false
	if p.isName("not") {
		p.next()
		neg = true
	}
	name, err := p.expectName()
	if err != nil {
		return nil, err
	}
	// "is none", "is true"... name keywords are test names here.
	fn := lookupTest(name)
	if fn == nil {
		return nil, errorf(line, "no test named '%s'", name)
	}
	te := &testExpr{x: x, name: name, fn: fn, neg: neg, line: line}
	t := p.peek()
	switch {
	case t.kind == tOp && t.val == "(":
		if te.args, te.kwNames, te.kwVals, err = p.parseArgs(); err != nil {
			return nil, err
		}
	case t.kind == tName && t.val != "else" && t.val != "or" && t.val != "and" && t.val != "is",
		t.kind == tString, t.kind == tInt, t.kind == tFloat,
		t.kind == tOp && (t.val == "[" || t.val == "{"):
		// a single argument without parentheses: "is divisibleby 3"
		n := 0
		arg, err := p.parsePrimary()
		if err == nil {
			arg, err = p.parsePostfix(arg, &n)
		}
		p.depth -= n
		if err != nil {
			return nil, err
		}
		te.args = []expr{arg}
	}
	return te, nil
}

package jinja

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Render renders the template with data (the template's global variables:
// messages, add_generation_prompt, bos_token, ...) under the template's
// Budget. ctx is polled while rendering; its deadline, or Budget.Timeout,
// whichever comes first, is the "deadline" limit. A cancelled ctx returns
// an error wrapping context.Canceled.
//
// Data values may be nil, bool, any integer or float type, string,
// json.Number, []any and other slices, Object (ordered), map[string]any and
// other maps with string keys (iterated in sorted key order), and pointers
// to these. Render never modifies data.
func (t *Template) Render(ctx context.Context, data map[string]any) (out string, err error) {
	b := t.budget
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	ev := &evaluator{ctx: ctx, b: b, nextCheck: 1}
	ev.deadlineMS = b.Timeout.Milliseconds()
	if dl, ok := ctx.Deadline(); ok {
		ev.deadlineMS = dl.Sub(start).Milliseconds()
	}
	defer func() {
		// The evaluator is written not to panic; this only keeps a bug
		// from taking the process down. FuzzRender fails on it.
		if r := recover(); r != nil {
			out, err = "", &Error{Line: ev.line, Msg: fmt.Sprintf("internal error: %v", r)}
		}
	}()
	root := &scope{}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, err := ev.fromGo(data[k], 1)
		if err != nil {
			return "", err
		}
		root.set(k, v)
	}
	ev.out = &output{limit: b.MaxOutput, name: LimitOutput}
	if _, err := ev.execBody(t.body, root); err != nil {
		return "", err
	}
	return string(ev.out.buf), nil
}

type evaluator struct {
	ctx        context.Context
	b          Budget
	steps      int64
	nextCheck  int64
	depth      int
	allocated  int64
	out        *output
	line       int
	deadlineMS int64
}

// output collects rendered text: the template's output (limit MaxOutput)
// or a capture (macro body, set block, filter block; limit MaxString).
type output struct {
	buf     []byte
	limit   int
	name    string
	capture bool
}

type scope struct {
	parent *scope
	names  []string
	vals   []any
	index  map[string]int // by name, once there are many
	// captured: a macro or call block closed over this scope, so a loop
	// may not reuse it for its next iteration.
	captured bool
}

// scopeIndexAt is the number of names above which a scope keeps a map
// (templates rarely set more than a handful per scope).
const scopeIndexAt = 16

func (s *scope) find(name string) int {
	if s.index != nil {
		if i, ok := s.index[name]; ok {
			return i
		}
		return -1
	}
	for i, n := range s.names {
		if n == name {
			return i
		}
	}
	return -1
}

func (s *scope) lookup(name string) (any, bool) {
	for sc := s; sc != nil; sc = sc.parent {
		if i := sc.find(name); i >= 0 {
			return sc.vals[i], true
		}
	}
	return nil, false
}

func (s *scope) set(name string, v any) {
	if i := s.find(name); i >= 0 {
		s.vals[i] = v
		return
	}
	s.names = append(s.names, name)
	s.vals = append(s.vals, v)
	if s.index != nil {
		s.index[name] = len(s.names) - 1
	} else if len(s.names) > scopeIndexAt {
		s.index = make(map[string]int, 2*len(s.names))
		for i, n := range s.names {
			s.index[n] = i
		}
	}
}

// reset empties the scope for reuse.
func (s *scope) reset() {
	clear(s.vals)
	s.names, s.vals, s.index = s.names[:0], s.vals[:0], nil
}

// Budget accounting.

func (ev *evaluator) limit(name string, max int64, line int) error {
	if line == 0 {
		line = ev.line
	}
	return &LimitError{Limit: name, Max: max, Line: line}
}

func (ev *evaluator) ctxErr() error {
	err := ev.ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &LimitError{Limit: LimitDeadline, Max: ev.deadlineMS, Line: ev.line, cause: err}
	}
	return fmt.Errorf("jinja: render cancelled: %w", err)
}

// cost charges n steps and polls the context every 1024 steps.
func (ev *evaluator) cost(n int64) error {
	ev.steps += n
	if ev.steps > ev.b.MaxSteps {
		return ev.limit(LimitSteps, ev.b.MaxSteps, 0)
	}
	if ev.steps >= ev.nextCheck {
		ev.nextCheck = ev.steps + 1024
		select {
		case <-ev.ctx.Done():
			return ev.ctxErr()
		default:
		}
	}
	return nil
}

func (ev *evaluator) step() error { return ev.cost(1) }

// work charges builtin work over n bytes.
func (ev *evaluator) work(n int) error { return ev.cost(int64(n)/64 + 1) }

// alloc charges n allocated bytes.
func (ev *evaluator) alloc(n int64) error {
	ev.allocated += n
	if ev.allocated > ev.b.MaxAlloc {
		return ev.limit(LimitAlloc, ev.b.MaxAlloc, 0)
	}
	return ev.cost(n/64 + 1)
}

// newString checks and charges a string of n bytes about to be built.
func (ev *evaluator) newString(n int) error {
	if n < 0 || n > ev.b.MaxString {
		return ev.limit(LimitString, int64(ev.b.MaxString), 0)
	}
	return ev.alloc(int64(n))
}

// newList checks and charges a list of n items about to be built. A list
// counts against MaxString by the bytes of its slots (16 per item).
func (ev *evaluator) newList(n int) error {
	if n < 0 || n > ev.b.MaxString/16 {
		return ev.limit(LimitString, int64(ev.b.MaxString), 0)
	}
	return ev.alloc(int64(n)*16 + 32)
}

// growList checks and charges adding more items to a list of n (append
// amortizes, so only the new items are charged).
func (ev *evaluator) growList(n, more int) error {
	if more > ev.b.MaxString/16-n {
		return ev.limit(LimitString, int64(ev.b.MaxString), 0)
	}
	return ev.alloc(int64(more)*32 + 16)
}

// keyCost charges hashing or comparing a dict key.
func (ev *evaluator) keyCost(k any) error {
	if s, ok := k.(string); ok && len(s) > 64 {
		return ev.work(len(s))
	}
	return nil
}

func (ev *evaluator) enter(line int) error {
	ev.depth++
	if ev.depth > ev.b.MaxDepth {
		return ev.limit(LimitDepth, int64(ev.b.MaxDepth), line)
	}
	return nil
}

func (ev *evaluator) leave() { ev.depth-- }

func (ev *evaluator) errf(format string, args ...any) error {
	return errorf(ev.line, format, args...)
}

func (ev *evaluator) write(s string) error {
	o := ev.out
	if len(s) > o.limit-len(o.buf) {
		return ev.limit(o.name, int64(o.limit), 0)
	}
	if o.capture {
		if err := ev.alloc(int64(len(s))); err != nil {
			return err
		}
	} else if err := ev.work(len(s)); err != nil {
		return err
	}
	o.buf = append(o.buf, s...)
	return nil
}

// capture renders body into a string of at most MaxString bytes.
func (ev *evaluator) capture(body []stmt, sc *scope) (string, ctrl, error) {
	saved := ev.out
	ev.out = &output{limit: ev.b.MaxString, name: LimitString, capture: true}
	c, err := ev.execBody(body, sc)
	s := string(ev.out.buf)
	ev.out = saved
	return s, c, err
}

// Statements.

type ctrl uint8

const (
	ctrlNone ctrl = iota
	ctrlBreak
	ctrlContinue
)

func (ev *evaluator) execBody(body []stmt, sc *scope) (ctrl, error) {
	for _, s := range body {
		c, err := ev.exec(s, sc)
		if err != nil || c != ctrlNone {
			return c, err
		}
	}
	return ctrlNone, nil
}

func (ev *evaluator) exec(s stmt, sc *scope) (ctrl, error) {
	ev.line = s.stmtLine()
	if err := ev.enter(ev.line); err != nil {
		return 0, err
	}
	defer ev.leave()
	if err := ev.step(); err != nil {
		return 0, err
	}
	switch s := s.(type) {
	case *textStmt:
		return 0, ev.write(s.s)
	case *outputStmt:
		v, err := ev.eval(s.x, sc)
		if err != nil {
			return 0, err
		}
		str, err := ev.toStr(v)
		if err != nil {
			return 0, err
		}
		return 0, ev.write(str)
	case *ifStmt:
		for i, c := range s.conds {
			v, err := ev.eval(c, sc)
			if err != nil {
				return 0, err
			}
			if truthy(v) {
				return ev.execBody(s.bodies[i], sc)
			}
		}
		return ev.execBody(s.els, sc)
	case *forStmt:
		return ev.execFor(s, sc)
	case *setStmt:
		v, err := ev.eval(s.value, sc)
		if err != nil {
			return 0, err
		}
		return 0, ev.assign(sc, s.names, s.nsName, s.attr, v)
	case *setBlockStmt:
		text, c, err := ev.capture(s.body, sc)
		if err != nil {
			return 0, err
		}
		var v any = text
		if v, err = ev.applyFilters(s.filters, v, sc); err != nil {
			return 0, err
		}
		var names []string
		if s.name != "" {
			names = []string{s.name}
		}
		return c, ev.assign(sc, names, s.nsName, s.attr, v)
	case *macroStmt:
		sc.captured = true
		sc.set(s.name, &macro{def: s.mac, closure: sc})
		return 0, nil
	case *callBlockStmt:
		sc.captured = true
		v, err := ev.evalCall(s.call, sc, &macro{def: s.caller, closure: sc})
		if err != nil {
			return 0, err
		}
		str, err := ev.toStr(v)
		if err != nil {
			return 0, err
		}
		return 0, ev.write(str)
	case *filterBlockStmt:
		text, c, err := ev.capture(s.body, sc)
		if err != nil {
			return 0, err
		}
		v, err := ev.applyFilters(s.filters, text, sc)
		if err != nil {
			return 0, err
		}
		str, err := ev.toStr(v)
		if err != nil {
			return 0, err
		}
		return c, ev.write(str)
	case *withStmt:
		inner := &scope{parent: sc}
		for i, name := range s.names {
			v, err := ev.eval(s.values[i], sc)
			if err != nil {
				return 0, err
			}
			inner.set(name, v)
		}
		return ev.execBody(s.body, inner)
	case *doStmt:
		_, err := ev.eval(s.x, sc)
		return 0, err
	case *breakStmt:
		return ctrlBreak, nil
	case *continueStmt:
		return ctrlContinue, nil
	case *blockStmt:
		return ev.execBody(s.body, sc)
	}
	return 0, ev.errf("unknown statement %T", s)
}

func (ev *evaluator) applyFilters(fs []*filterExpr, v any, sc *scope) (any, error) {
	for _, f := range fs {
		a, err := ev.evalArgs(f.args, f.kwNames, f.kwVals, sc)
		if err != nil {
			return nil, err
		}
		if v, err = f.fn(ev, v, a); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// assign implements set: to one name, to several by unpacking, or to a
// namespace attribute.
func (ev *evaluator) assign(sc *scope, names []string, nsName, attr string, v any) error {
	if nsName != "" {
		nv, _ := sc.lookup(nsName)
		ns, ok := nv.(*namespace)
		if !ok {
			return ev.errf("cannot assign attribute on non-namespace object '%s'", nsName)
		}
		if err := ev.alloc(48); err != nil {
			return err
		}
		ns.attrs.set(attr, v)
		return nil
	}
	return ev.bind(sc, names, v)
}

// bind sets names to v, unpacking v when there are several.
func (ev *evaluator) bind(sc *scope, names []string, v any) error {
	if len(names) == 1 {
		sc.set(names[0], v)
		return nil
	}
	var items []any
	switch x := v.(type) {
	case *list:
		items = x.items
	case string:
		var err error
		if items, err = ev.chars(x); err != nil {
			return err
		}
	default:
		return ev.errf("cannot unpack %s into %d names", typeName(v), len(names))
	}
	if len(items) != len(names) {
		return ev.errf("cannot unpack %d values into %d names", len(items), len(names))
	}
	for i, n := range names {
		sc.set(n, items[i])
	}
	return nil
}

func (ev *evaluator) execFor(s *forStmt, sc *scope) (ctrl, error) {
	it, err := ev.eval(s.iter, sc)
	if err != nil {
		return 0, err
	}
	items, err := ev.iterate(it)
	if err != nil {
		return 0, err
	}
	if len(items) > ev.b.MaxLoop {
		return 0, ev.limit(LimitLoop, int64(ev.b.MaxLoop), s.line)
	}
	inner := &scope{parent: sc}
	var filterScope *scope
	if s.filter != nil {
		filterScope = inner
		if err := ev.newList(len(items)); err != nil {
			return 0, err
		}
		kept := make([]any, 0, len(items))
		for _, item := range items {
			if err := ev.step(); err != nil {
				return 0, err
			}
			if err := ev.bind(inner, s.targets, item); err != nil {
				return 0, err
			}
			v, err := ev.eval(s.filter, inner)
			if err != nil {
				return 0, err
			}
			if truthy(v) {
				kept = append(kept, item)
			}
		}
		items = kept
	}
	if len(items) == 0 {
		return ev.execBody(s.els, sc)
	}
	ls := &loopState{items: items, depth: 1}
	if outer, ok := sc.lookup("loop"); ok {
		if ol, ok := outer.(*loopState); ok {
			ls.depth = ol.depth + 1
		}
	}
	for i, item := range items {
		if err := ev.step(); err != nil {
			return 0, err
		}
		ls.index0 = i
		// As in Jinja, each iteration starts from the enclosing scope:
		// what the body set in one iteration is gone in the next.
		if inner.captured || inner == filterScope {
			inner = &scope{parent: sc}
		} else {
			inner.reset()
		}
		if err := ev.bind(inner, s.targets, item); err != nil {
			return 0, err
		}
		inner.set("loop", ls)
		c, err := ev.execBody(s.body, inner)
		if err != nil {
			return 0, err
		}
		if c == ctrlBreak {
			break
		}
	}
	return 0, nil
}

// iterate returns the items a for loop (or a filter) walks: a list's items,
// a dict's keys, a string's characters; undefined gives none.
func (ev *evaluator) iterate(v any) ([]any, error) {
	switch x := v.(type) {
	case *list:
		return x.items, nil
	case *dict:
		return x.keys, nil
	case string:
		return ev.chars(x)
	case undefined:
		return nil, nil
	case *namespace:
		return x.attrs.keys, nil
	}
	return nil, ev.errf("'%s' object is not iterable", typeName(v))
}

// chars splits s into one-character strings.
func (ev *evaluator) chars(s string) ([]any, error) {
	n := utf8.RuneCountInString(s)
	if err := ev.newList(n); err != nil {
		return nil, err
	}
	if err := ev.alloc(int64(n) * 16); err != nil { // the strings' headers
		return nil, err
	}
	out := make([]any, 0, n)
	for _, r := range s {
		out = append(out, string(r))
	}
	return out, nil
}

// Expressions.

func (ev *evaluator) lookup(name string, sc *scope) any {
	if v, ok := sc.lookup(name); ok {
		return v
	}
	switch name {
	case "range", "namespace", "dict", "raise_exception", "strftime_now":
		return builtinFunc(name)
	}
	return undefined{name: name}
}

func (ev *evaluator) eval(e expr, sc *scope) (any, error) {
	if err := ev.enter(e.exprLine()); err != nil {
		return nil, err
	}
	defer ev.leave()
	if err := ev.step(); err != nil {
		return nil, err
	}
	switch e := e.(type) {
	case *constExpr:
		return e.v, nil
	case *nameExpr:
		return ev.lookup(e.name, sc), nil
	case *listExpr:
		if err := ev.newList(len(e.items)); err != nil {
			return nil, err
		}
		l := &list{items: make([]any, len(e.items)), tuple: e.tuple}
		for i, x := range e.items {
			v, err := ev.eval(x, sc)
			if err != nil {
				return nil, err
			}
			l.items[i] = v
		}
		return l, nil
	case *dictExpr:
		if err := ev.alloc(int64(len(e.keys))*48 + 64); err != nil {
			return nil, err
		}
		d := newDict(len(e.keys))
		for i, kx := range e.keys {
			k, err := ev.eval(kx, sc)
			if err != nil {
				return nil, err
			}
			if err := ev.keyCost(k); err != nil {
				return nil, err
			}
			hk, ok := hashKey(k)
			if !ok {
				return nil, ev.errf("unhashable type: '%s'", typeName(k))
			}
			v, err := ev.eval(e.vals[i], sc)
			if err != nil {
				return nil, err
			}
			d.set(hk, v)
		}
		return d, nil
	case *attrExpr:
		x, err := ev.eval(e.x, sc)
		if err != nil {
			return nil, err
		}
		return ev.getAttr(x, e.name), nil
	case *indexExpr:
		x, err := ev.eval(e.x, sc)
		if err != nil {
			return nil, err
		}
		k, err := ev.eval(e.key, sc)
		if err != nil {
			return nil, err
		}
		return ev.getItem(x, k)
	case *sliceExpr:
		return ev.evalSlice(e, sc)
	case *callExpr:
		return ev.evalCall(e, sc, nil)
	case *filterExpr:
		x, err := ev.eval(e.x, sc)
		if err != nil {
			return nil, err
		}
		a, err := ev.evalArgs(e.args, e.kwNames, e.kwVals, sc)
		if err != nil {
			return nil, err
		}
		ev.line = e.line
		return e.fn(ev, x, a)
	case *testExpr:
		x, err := ev.eval(e.x, sc)
		if err != nil {
			return nil, err
		}
		a, err := ev.evalArgs(e.args, e.kwNames, e.kwVals, sc)
		if err != nil {
			return nil, err
		}
		ev.line = e.line
		r, err := e.fn(ev, x, a)
		if err != nil {
			return nil, err
		}
		return r != e.neg, nil
	case *unaryExpr:
		x, err := ev.eval(e.x, sc)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "not":
			return !truthy(x), nil
		case "-":
			return ev.negate(x)
		default:
			if _, _, _, ok := toNumber(x); !ok {
				return nil, ev.errf("bad operand type for unary +: '%s'", typeName(x))
			}
			if b, ok := x.(bool); ok {
				if b {
					return int64(1), nil
				}
				return int64(0), nil
			}
			return x, nil
		}
	case *binExpr:
		l, err := ev.eval(e.l, sc)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "and":
			if !truthy(l) {
				return l, nil
			}
			return ev.eval(e.r, sc)
		case "or":
			if truthy(l) {
				return l, nil
			}
			return ev.eval(e.r, sc)
		}
		r, err := ev.eval(e.r, sc)
		if err != nil {
			return nil, err
		}
		ev.line = e.line
		return ev.binary(e.op, l, r)
	case *concatExpr:
		parts := make([]string, len(e.items))
		n := 0
		for i, x := range e.items {
			v, err := ev.eval(x, sc)
			if err != nil {
				return nil, err
			}
			if parts[i], err = ev.toStr(v); err != nil {
				return nil, err
			}
			n += len(parts[i])
			if n > ev.b.MaxString {
				return nil, ev.limit(LimitString, int64(ev.b.MaxString), e.line)
			}
		}
		if err := ev.newString(n); err != nil {
			return nil, err
		}
		return strings.Join(parts, ""), nil
	case *compareExpr:
		l, err := ev.eval(e.first, sc)
		if err != nil {
			return nil, err
		}
		for i, op := range e.ops {
			r, err := ev.eval(e.rest[i], sc)
			if err != nil {
				return nil, err
			}
			ev.line = e.line
			ok, err := ev.compareOp(op, l, r)
			if err != nil {
				return nil, err
			}
			if !ok {
				return false, nil
			}
			l = r
		}
		return true, nil
	case *condExpr:
		c, err := ev.eval(e.cond, sc)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return ev.eval(e.then, sc)
		}
		if e.els == nil {
			return undefined{}, nil
		}
		return ev.eval(e.els, sc)
	}
	return nil, ev.errf("unknown expression %T", e)
}

// args are evaluated call arguments.
type args struct {
	pos     []any
	kwNames []string
	kwVals  []any
}

// noArg marks a parameter that was not passed.
type noArg struct{}

func (ev *evaluator) evalArgs(pos []expr, kwNames []string, kwVals []expr, sc *scope) (*args, error) {
	a := &args{kwNames: kwNames}
	if len(pos) > 0 {
		a.pos = make([]any, len(pos))
		for i, x := range pos {
			v, err := ev.eval(x, sc)
			if err != nil {
				return nil, err
			}
			a.pos[i] = v
		}
	}
	if len(kwVals) > 0 {
		a.kwVals = make([]any, len(kwVals))
		for i, x := range kwVals {
			v, err := ev.eval(x, sc)
			if err != nil {
				return nil, err
			}
			a.kwVals[i] = v
		}
	}
	return a, nil
}

// bind matches a to the parameters names of fname: positional first, then
// keywords. Missing ones are noArg{}.
func (a *args) bind(ev *evaluator, fname string, names ...string) ([]any, error) {
	out := make([]any, len(names))
	for i := range out {
		out[i] = noArg{}
	}
	if a == nil {
		return out, nil
	}
	if len(a.pos) > len(names) {
		return nil, ev.errf("%s() takes at most %d arguments (%d given)", fname, len(names), len(a.pos))
	}
	copy(out, a.pos)
	for i, k := range a.kwNames {
		j := slices.Index(names, k)
		if j < 0 {
			return nil, ev.errf("%s() got an unexpected keyword argument '%s'", fname, k)
		}
		if j < len(a.pos) {
			return nil, ev.errf("%s() got multiple values for argument '%s'", fname, k)
		}
		out[j] = a.kwVals[i]
	}
	return out, nil
}

func has(v any) bool { _, missing := v.(noArg); return !missing }

func (ev *evaluator) evalCall(e *callExpr, sc *scope, caller *macro) (any, error) {
	var fn any
	if ae, ok := e.fn.(*attrExpr); ok {
		recv, err := ev.eval(ae.x, sc)
		if err != nil {
			return nil, err
		}
		fn = ev.getAttr(recv, ae.name)
	} else {
		var err error
		if fn, err = ev.eval(e.fn, sc); err != nil {
			return nil, err
		}
	}
	a, err := ev.evalArgs(e.args, e.kwNames, e.kwVals, sc)
	if err != nil {
		return nil, err
	}
	ev.line = e.line
	return ev.call(fn, a, caller)
}

func (ev *evaluator) call(fn any, a *args, caller *macro) (any, error) {
	switch f := fn.(type) {
	case *macro:
		return ev.callMacro(f, a, caller)
	case builtinFunc:
		return ev.callGlobal(string(f), a)
	case *method:
		return ev.callMethod(f, a)
	case undefined:
		if f.name == "" {
			return nil, ev.errf("undefined value is not callable")
		}
		return nil, ev.errf("'%s' is undefined", f.name)
	}
	return nil, ev.errf("'%s' object is not callable", typeName(fn))
}

func (ev *evaluator) callMacro(m *macro, a *args, caller *macro) (any, error) {
	if err := ev.enter(ev.line); err != nil {
		return nil, err
	}
	defer ev.leave()
	if err := ev.step(); err != nil {
		return nil, err
	}
	def := m.def
	sc := &scope{parent: m.closure}
	pos := a.pos
	for i, p := range def.params {
		var v any = noArg{}
		if i < len(pos) {
			v = pos[i]
		}
		for j, k := range a.kwNames {
			if k == p {
				v = a.kwVals[j]
			}
		}
		if !has(v) {
			if def.defaults[i] != nil {
				var err error
				if v, err = ev.eval(def.defaults[i], sc); err != nil {
					return nil, err
				}
			} else {
				v = undefined{name: p}
			}
		}
		sc.set(p, v)
	}
	varargs := &list{tuple: true}
	if len(pos) > len(def.params) {
		varargs.items = pos[len(def.params):]
	}
	kwargs := newDict(0)
	for j, k := range a.kwNames {
		if !slices.Contains(def.params, k) {
			kwargs.set(k, a.kwVals[j])
		}
	}
	sc.set("varargs", varargs)
	sc.set("kwargs", kwargs)
	if caller != nil {
		sc.set("caller", caller)
	}
	s, _, err := ev.capture(def.body, sc)
	return s, err
}

func (ev *evaluator) evalSlice(e *sliceExpr, sc *scope) (any, error) {
	x, err := ev.eval(e.x, sc)
	if err != nil {
		return nil, err
	}
	var bounds [3]any
	for i, b := range []expr{e.start, e.stop, e.step} {
		if b == nil {
			bounds[i] = nil
			continue
		}
		if bounds[i], err = ev.eval(b, sc); err != nil {
			return nil, err
		}
	}
	var idx [3]*int64
	for i, b := range bounds {
		if b == nil {
			continue
		}
		n, _, isInt, ok := toNumber(b)
		if !ok || !isInt {
			return nil, ev.errf("slice indices must be integers or None, not %s", typeName(b))
		}
		idx[i] = &n
	}
	ev.line = e.line
	switch v := x.(type) {
	case *list:
		pick, err := ev.sliceIndices(len(v.items), idx)
		if err != nil {
			return nil, err
		}
		if err := ev.newList(len(pick)); err != nil {
			return nil, err
		}
		out := &list{items: make([]any, len(pick)), tuple: v.tuple}
		for i, j := range pick {
			out.items[i] = v.items[j]
		}
		return out, nil
	case string:
		if isASCII(v) {
			if err := ev.work(len(v)); err != nil {
				return nil, err
			}
			if idx[2] == nil || *idx[2] == 1 {
				lo, hi := ev.simpleBounds(len(v), idx)
				return v[lo:hi], nil
			}
			pick, err := ev.sliceIndices(len(v), idx)
			if err != nil {
				return nil, err
			}
			if err := ev.newString(len(pick)); err != nil {
				return nil, err
			}
			b := make([]byte, len(pick))
			for i, j := range pick {
				b[i] = v[j]
			}
			return string(b), nil
		}
		rs, err := ev.runes(v)
		if err != nil {
			return nil, err
		}
		pick, err := ev.sliceIndices(len(rs), idx)
		if err != nil {
			return nil, err
		}
		if err := ev.newString(len(pick) * 4); err != nil {
			return nil, err
		}
		out := make([]rune, len(pick))
		for i, j := range pick {
			out[i] = rs[j]
		}
		return string(out), nil
	case undefined, nil:
		return undefined{}, nil
	}
	return nil, ev.errf("'%s' object is not subscriptable", typeName(x))
}

// simpleBounds resolves [start:stop] (step 1) to byte offsets.
func (ev *evaluator) simpleBounds(n int, idx [3]*int64) (int, int) {
	clamp := func(p *int64, def int) int {
		if p == nil {
			return def
		}
		v := *p
		if v < 0 {
			v += int64(n)
			if v < 0 {
				v = 0
			}
		}
		if v > int64(n) {
			v = int64(n)
		}
		return int(v)
	}
	lo, hi := clamp(idx[0], 0), clamp(idx[1], n)
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// sliceIndices lists the positions a Python slice selects from n items.
func (ev *evaluator) sliceIndices(n int, idx [3]*int64) ([]int, error) {
	step := int64(1)
	ln := int64(n)
	if idx[2] != nil {
		step = *idx[2]
		if step == 0 {
			return nil, ev.errf("slice step cannot be zero")
		}
		// A step longer than the sequence picks at most one item; clamp
		// it so the arithmetic below cannot overflow.
		step = max(min(step, ln+1), -(ln + 1))
	}
	var lower, upper int64 = 0, ln
	if step < 0 {
		lower, upper = -1, ln-1
	}
	resolve := func(p *int64, def int64) int64 {
		if p == nil {
			return def
		}
		v := *p
		if v < 0 {
			v += ln
			if v < lower {
				v = lower
			}
		} else if v > upper {
			v = upper
		}
		return v
	}
	var start, stop int64
	if step > 0 {
		start, stop = resolve(idx[0], lower), resolve(idx[1], upper)
	} else {
		start, stop = resolve(idx[0], upper), resolve(idx[1], lower)
	}
	var count int64
	if step > 0 && stop > start {
		count = (stop - start + step - 1) / step
	} else if step < 0 && start > stop {
		count = (start - stop + (-step) - 1) / (-step)
	}
	if err := ev.cost(count/8 + 1); err != nil {
		return nil, err
	}
	out := make([]int, 0, count)
	for i := int64(0); i < count; i++ {
		out = append(out, int(start+i*step))
	}
	return out, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// runes converts s to code points, charging the allocation.
func (ev *evaluator) runes(s string) ([]rune, error) {
	if err := ev.alloc(int64(len(s)) * 4); err != nil {
		return nil, err
	}
	return []rune(s), nil
}

// getAttr is Jinja's getattr: a method or attribute first, then an item;
// anything missing is undefined.
func (ev *evaluator) getAttr(x any, name string) any {
	switch v := x.(type) {
	case *dict:
		if isDictMethod(name) {
			return &method{recv: v, name: name}
		}
		if val, ok := v.get(name); ok {
			return val
		}
	case *namespace:
		if val, ok := v.attrs.get(name); ok {
			return val
		}
	case *loopState:
		return ev.loopAttr(v, name)
	case string:
		if isStrMethod(name) {
			return &method{recv: v, name: name}
		}
	case *list:
		if isListMethod(name) {
			return &method{recv: v, name: name}
		}
	case *macro:
		if name == "name" {
			return v.def.name
		}
	case undefined:
		return undefined{name: name}
	}
	return undefined{name: name}
}

// getItem is Jinja's getitem: an item first, then an attribute.
func (ev *evaluator) getItem(x, k any) (any, error) {
	switch v := x.(type) {
	case *dict:
		if err := ev.keyCost(k); err != nil {
			return nil, err
		}
		if hk, ok := hashKey(k); ok {
			if val, ok := v.get(hk); ok {
				return val, nil
			}
		}
	case *list:
		if i, _, isInt, ok := toNumber(k); ok && isInt {
			n := int64(len(v.items))
			if i < 0 {
				i += n
			}
			if i >= 0 && i < n {
				return v.items[i], nil
			}
			return undefined{}, nil
		}
	case string:
		if i, _, isInt, ok := toNumber(k); ok && isInt {
			if isASCII(v) {
				if err := ev.work(len(v)); err != nil {
					return nil, err
				}
				n := int64(len(v))
				if i < 0 {
					i += n
				}
				if i >= 0 && i < n {
					return v[i : i+1], nil
				}
				return undefined{}, nil
			}
			rs, err := ev.runes(v)
			if err != nil {
				return nil, err
			}
			n := int64(len(rs))
			if i < 0 {
				i += n
			}
			if i >= 0 && i < n {
				return string(rs[i]), nil
			}
			return undefined{}, nil
		}
	}
	if s, ok := k.(string); ok {
		return ev.getAttr(x, s), nil
	}
	return undefined{}, nil
}

func (ev *evaluator) loopAttr(l *loopState, name string) any {
	n := len(l.items)
	i := l.index0
	switch name {
	case "index":
		return int64(i + 1)
	case "index0":
		return int64(i)
	case "revindex":
		return int64(n - i)
	case "revindex0":
		return int64(n - i - 1)
	case "first":
		return i == 0
	case "last":
		return i == n-1
	case "length":
		return int64(n)
	case "depth":
		return int64(l.depth)
	case "depth0":
		return int64(l.depth - 1)
	case "previtem":
		if i > 0 {
			return l.items[i-1]
		}
		return undefined{name: "previtem"}
	case "nextitem":
		if i+1 < n {
			return l.items[i+1]
		}
		return undefined{name: "nextitem"}
	case "cycle":
		return &method{recv: l, name: name}
	}
	return undefined{name: name}
}

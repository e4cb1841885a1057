package jinja

// Statements.

type stmt interface{ stmtLine() int }

type textStmt struct {
	s    string
	line int
}

type outputStmt struct {
	x    expr
	line int
}

// ifStmt is if/elif.../else flattened: conds[i] guards bodies[i].
type ifStmt struct {
	conds  []expr
	bodies [][]stmt
	els    []stmt
	line   int
}

type forStmt struct {
	targets []string // one name, or several to unpack each item
	iter    expr
	filter  expr // nil without "if"
	body    []stmt
	els     []stmt
	line    int
}

// setStmt assigns value to names (unpacking when several) or to
// nsName.attr when attr is set.
type setStmt struct {
	names  []string
	nsName string
	attr   string
	value  expr
	line   int
}

// setBlockStmt captures its body's output: {% set x %}...{% endset %}.
type setBlockStmt struct {
	name    string
	nsName  string
	attr    string
	filters []*filterExpr // applied to the captured text, x nil
	body    []stmt
	line    int
}

type macroStmt struct {
	name string
	mac  *macroDef
	line int
}

type macroDef struct {
	name     string
	params   []string
	defaults []expr // parallel to params; nil when none
	body     []stmt
}

// callBlockStmt is {% call(params) macro(args) %}body{% endcall %}.
type callBlockStmt struct {
	call   *callExpr
	caller *macroDef
	line   int
}

type filterBlockStmt struct {
	filters []*filterExpr
	body    []stmt
	line    int
}

type withStmt struct {
	names  []string
	values []expr
	body   []stmt
	line   int
}

type doStmt struct {
	x    expr
	line int
}

type breakStmt struct{ line int }
type continueStmt struct{ line int }

// blockStmt runs its body in place ({% generation %}).
type blockStmt struct {
	body []stmt
	line int
}

func (s *textStmt) stmtLine() int        { return s.line }
func (s *outputStmt) stmtLine() int      { return s.line }
func (s *ifStmt) stmtLine() int          { return s.line }
func (s *forStmt) stmtLine() int         { return s.line }
func (s *setStmt) stmtLine() int         { return s.line }
func (s *setBlockStmt) stmtLine() int    { return s.line }
func (s *macroStmt) stmtLine() int       { return s.line }
func (s *callBlockStmt) stmtLine() int   { return s.line }
func (s *filterBlockStmt) stmtLine() int { return s.line }
func (s *withStmt) stmtLine() int        { return s.line }
func (s *doStmt) stmtLine() int          { return s.line }
func (s *breakStmt) stmtLine() int       { return s.line }
func (s *continueStmt) stmtLine() int    { return s.line }
func (s *blockStmt) stmtLine() int       { return s.line }

// Expressions.

type expr interface{ exprLine() int }

type constExpr struct {
	v    any
	line int
}

type nameExpr struct {
	name string
	line int
}

type listExpr struct {
	items []expr
	tuple bool
	line  int
}

type dictExpr struct {
	keys, vals []expr
	line       int
}

type attrExpr struct {
	x    expr
	name string
	line int
}

type indexExpr struct {
	x, key expr
	line   int
}

type sliceExpr struct {
	x                 expr
	start, stop, step expr // nil when omitted
	line              int
}

type callExpr struct {
	fn      expr
	args    []expr
	kwNames []string
	kwVals  []expr
	line    int
}

type filterExpr struct {
	x       expr // nil in filter blocks and set blocks
	name    string
	fn      filterFunc
	args    []expr
	kwNames []string
	kwVals  []expr
	line    int
}

type testExpr struct {
	x       expr
	name    string
	fn      testFunc
	args    []expr
	kwNames []string
	kwVals  []expr
	neg     bool
	line    int
}

type unaryExpr struct {
	op   string // "not", "-", "+"
	x    expr
	line int
}

// binExpr is an arithmetic operator, "and" or "or".
type binExpr struct {
	op   string
	l, r expr
	line int
}

// concatExpr is a ~ b ~ c.
type concatExpr struct {
	items []expr
	line  int
}

// compareExpr is a chain a op1 b op2 c (==, !=, <, <=, >, >=, in, not in).
type compareExpr struct {
	first expr
	ops   []string
	rest  []expr
	line  int
}

type condExpr struct {
	cond, then, els expr // els nil: undefined
	line            int
}

func (e *constExpr) exprLine() int   { return e.line }
func (e *nameExpr) exprLine() int    { return e.line }
func (e *listExpr) exprLine() int    { return e.line }
func (e *dictExpr) exprLine() int    { return e.line }
func (e *attrExpr) exprLine() int    { return e.line }
func (e *indexExpr) exprLine() int   { return e.line }
func (e *sliceExpr) exprLine() int   { return e.line }
func (e *callExpr) exprLine() int    { return e.line }
func (e *filterExpr) exprLine() int  { return e.line }
func (e *testExpr) exprLine() int    { return e.line }
func (e *unaryExpr) exprLine() int   { return e.line }
func (e *binExpr) exprLine() int     { return e.line }
func (e *concatExpr) exprLine() int  { return e.line }
func (e *compareExpr) exprLine() int { return e.line }
func (e *condExpr) exprLine() int    { return e.line }

// Package jinja is a Jinja2 template interpreter for the chat templates that
// ship in GGUF files (tokenizer.chat_template), which are untrusted input.
//
// It lexes and parses a template into an AST once (Compile) and renders it
// with a tree-walking evaluator (Template.Render). Every render runs under a
// Budget: evaluation steps, output bytes, recursion depth, loop length, string
// size, allocated bytes and a deadline. A template that goes over any of them
// stops with a *LimitError (errors.Is(err, ErrBudget)); it cannot crash the
// process, overflow the Go stack or exhaust memory. The parser bounds nesting
// too, so a deeply nested template fails to compile instead of overflowing
// the stack.
//
// The dialect is what Hugging Face's transformers renders chat templates
// with: Jinja2 with trim_blocks and lstrip_blocks on, the loopcontrols
// extension (break, continue), raise_exception, strftime_now and a tojson
// that does not HTML-escape. See DESIGN.md for what is supported.
//
// A Template is immutable after Compile and safe for concurrent use.
package jinja

import (
	"errors"
	"fmt"
	"time"
)

// Budget bounds one render (and, for MaxDepth, compilation). A zero or
// negative field means the DefaultBudget value for that field, so
// Budget{MaxOutput: 1 << 20} tightens only the output.
type Budget struct {
	// MaxSteps bounds evaluation work: one step per statement, expression
	// node and loop iteration, plus one per element or per 64 bytes handled
	// by a builtin (join, sort, tojson, string operations...).
	MaxSteps int64
	// MaxOutput bounds the rendered text in bytes.
	MaxOutput int
	// MaxDepth bounds nesting: macro calls plus the statement and
	// expression nesting the evaluator recurses through, nested values
	// walked by tojson/str/==, and the parser's nesting of the source.
	MaxDepth int
	// MaxLoop bounds the number of items any single for loop iterates and
	// the length of a sequence range() may build.
	MaxLoop int
	// MaxString bounds any single string (or list built by repetition) a
	// template creates; the size is checked before allocating.
	MaxString int
	// MaxAlloc bounds the bytes a render allocates for strings, lists and
	// dicts, in total (not live), so a loop that keeps building fresh
	// strings cannot exhaust memory even if each is under MaxString.
	MaxAlloc int64
	// MaxSource bounds the template source Compile accepts, in bytes:
	// the lexer's tokens and the tree cost about a hundred times the
	// source (a 40 MB template took 4.8 GB and 44 s to compile).
	MaxSource int
	// Timeout bounds the wall time of one render, on top of the deadline
	// of the context passed to Render.
	Timeout time.Duration
}

// Defaults. Real chat templates (Llama 3.1 with tools, Qwen 2.5, Mistral v3,
// Command-R, Hermes...) over a long conversation stay orders of magnitude
// below every one of them.
const (
	// DefaultMaxSteps: a real template spends roughly 20–60 steps per
	// message plus one per 64 bytes of content handled; 5 M covers
	// thousands of messages and megabytes of text, yet stops a runaway
	// loop within a fraction of a second.
	DefaultMaxSteps = 5_000_000
	// DefaultMaxOutput: 4 MiB is about a million tokens of prompt, more
	// than any context window a worker serves.
	DefaultMaxOutput = 4 << 20
	// DefaultMaxDepth: real templates nest statements and expressions a
	// dozen or two levels deep, and recursive macros (JSON-schema
	// renderers) add a few levels per schema level; 256 leaves ample room
	// while keeping the Go stack of a render well under a megabyte.
	DefaultMaxDepth = 256
	// DefaultMaxLoop: templates loop over messages, tools and tool calls;
	// 100 k items is far beyond any conversation.
	DefaultMaxLoop = 100_000
	// DefaultMaxString: one string may legitimately hold the whole prompt,
	// so it matches DefaultMaxOutput.
	DefaultMaxString = 4 << 20
	// DefaultMaxAlloc: a template copies each message a handful of times
	// while concatenating (about 5× the output); 128 MiB is 32× the
	// largest output and bounds what a hostile template can hold.
	DefaultMaxAlloc = 128 << 20
	// DefaultMaxSource: real chat templates are a few KiB, the largest
	// (tool and RAG templates with a built-in system prompt) tens of
	// KiB; 256 KiB compiles in about 0.2 s into some 20 MB.
	DefaultMaxSource = 256 << 10
	// DefaultTimeout: real templates render in well under a millisecond
	// per message; 2 s only ever stops a template that is spinning.
	DefaultTimeout = 2 * time.Second
)

// DefaultBudget returns the default limits (see the Default* constants).
func DefaultBudget() Budget {
	return Budget{
		MaxSteps:  DefaultMaxSteps,
		MaxOutput: DefaultMaxOutput,
		MaxDepth:  DefaultMaxDepth,
		MaxLoop:   DefaultMaxLoop,
		MaxString: DefaultMaxString,
		MaxAlloc:  DefaultMaxAlloc,
		MaxSource: DefaultMaxSource,
		Timeout:   DefaultTimeout,
	}
}

// withDefaults fills unset fields from DefaultBudget.
func (b Budget) withDefaults() Budget {
	d := DefaultBudget()
	if b.MaxSteps <= 0 {
		b.MaxSteps = d.MaxSteps
	}
	if b.MaxOutput <= 0 {
		b.MaxOutput = d.MaxOutput
	}
	if b.MaxDepth <= 0 {
		b.MaxDepth = d.MaxDepth
	}
	if b.MaxLoop <= 0 {
		b.MaxLoop = d.MaxLoop
	}
	if b.MaxString <= 0 {
		b.MaxString = d.MaxString
	}
	if b.MaxAlloc <= 0 {
		b.MaxAlloc = d.MaxAlloc
	}
	if b.MaxSource <= 0 {
		b.MaxSource = d.MaxSource
	}
	if b.Timeout <= 0 {
		b.Timeout = d.Timeout
	}
	return b
}

// Names of the limits, as LimitError.Limit reports them.
const (
	LimitSteps    = "steps"           // Budget.MaxSteps
	LimitOutput   = "output_size"     // Budget.MaxOutput, bytes
	LimitDepth    = "recursion_depth" // Budget.MaxDepth
	LimitLoop     = "loop_length"     // Budget.MaxLoop, items
	LimitString   = "string_size"     // Budget.MaxString, bytes (or items)
	LimitAlloc    = "memory"          // Budget.MaxAlloc, bytes
	LimitSource   = "source_size"     // Budget.MaxSource, bytes (at Compile)
	LimitDeadline = "deadline"        // Budget.Timeout or the context's deadline, milliseconds
)

const (
	errPrefix     = "jinja: "
	errLinePrefix = "jinja: line "
)

// ErrBudget is matched (errors.Is) by every *LimitError.
var ErrBudget = errors.New("jinja: template budget exceeded")

// LimitError reports that a template went over one of its Budget limits.
// Compile returns one for a source longer than MaxSource (Limit
// "source_size") or nested deeper than MaxDepth ("recursion_depth"); Render
// for any other limit.
type LimitError struct {
	Limit string // one of the Limit* names
	Max   int64  // the limit's value (milliseconds for "deadline")
	Line  int    // template line where it was hit, 0 if unknown
	cause error  // context.DeadlineExceeded for "deadline"
}

func (e *LimitError) Error() string {
	where := errPrefix
	if e.Line > 0 {
		where = fmt.Sprintf("%s%d: ", errLinePrefix, e.Line)
	}
	unit := ""
	switch e.Limit {
	case LimitOutput, LimitString, LimitAlloc, LimitSource:
		unit = " bytes"
	case LimitDeadline:
		unit = " ms"
	}
	return fmt.Sprintf("%stemplate exceeded its %s limit (max %d%s)", where, e.Limit, e.Max, unit)
}

// Is makes errors.Is(err, ErrBudget) true.
func (e *LimitError) Is(target error) bool { return target == ErrBudget }

// Unwrap returns the context error behind a "deadline" limit, if any.
func (e *LimitError) Unwrap() error { return e.cause }

// Error is a compile or render error that is not a budget limit: a syntax
// error, an unknown filter, a type error, an undefined function,
// raise_exception(...).
type Error struct {
	Line int // 1-based template line, 0 if unknown
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s%d: %s", errLinePrefix, e.Line, e.Msg)
	}
	return errPrefix + e.Msg
}

func errorf(line int, format string, args ...any) *Error {
	return &Error{Line: line, Msg: fmt.Sprintf(format, args...)}
}

// KV is one entry of an Object.
type KV struct {
	Key   string
	Value any
}

// Object is a JSON-like object that keeps its key order; pass it in Render's
// data where order matters (tojson output, iteration). A map[string]any is
// iterated in sorted key order instead, for determinism.
type Object []KV

// Template is a compiled template. It is immutable and safe for concurrent
// use.
type Template struct {
	body   []stmt
	budget Budget
}

// Compile parses src with DefaultBudget.
func Compile(src string) (*Template, error) {
	return CompileBudget(src, DefaultBudget())
}

// CompileBudget parses src; b bounds the source's size (MaxSource) and the
// parser's nesting (MaxDepth) and is the budget of every Render of the
// template.
func CompileBudget(src string, b Budget) (t *Template, err error) {
	defer func() {
		// The parser is written not to panic; this only keeps a bug from
		// taking the process down. FuzzRender fails on it.
		if r := recover(); r != nil {
			t, err = nil, &Error{Msg: fmt.Sprintf("internal error: %v", r)}
		}
	}()
	b = b.withDefaults()
	if len(src) > b.MaxSource {
		return nil, &LimitError{Limit: LimitSource, Max: int64(b.MaxSource)}
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, maxDepth: b.MaxDepth}
	body, err := p.parseTemplate()
	if err != nil {
		return nil, err
	}
	return &Template{body: body, budget: b}, nil
}

// Budget returns the limits Render applies.
func (t *Template) Budget() Budget { return t.budget }

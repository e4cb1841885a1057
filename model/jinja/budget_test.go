package jinja

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/raceflag"
)

// heapPeak runs f and returns how far the heap (live and not yet swept
// objects) rose above where it started, sampled every 100µs.
func heapPeak(f func()) uint64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	base := read()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Microsecond)
		defer tick.Stop()
		for {
			if v := read(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	<-done
	if v := read(); v > peak.Load() {
		peak.Store(v)
	}
	if p := peak.Load(); p > base {
		return p - base
	}
	return 0
}

// TestBudgetLimits: each hostile template stops with the named limit,
// quickly, and without the heap growing more than a few tens of MB (the
// old engine overflowed the stack, or took 2.5–6.4 GB and seconds).
func TestBudgetLimits(t *testing.T) {
	small := Budget{MaxAlloc: 16 << 20}
	cases := []struct {
		name, src string
		budget    Budget
		limit     string
	}{
		{"recursive macro", `{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}`, Budget{}, LimitDepth},
		{"mutually recursive macros", `{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}`, Budget{}, LimitDepth},
		{"self-recursive call block", `{% macro f(n) %}{% call f(n) %}x{% endcall %}{% endmacro %}{{ f(1) }}`, Budget{}, LimitDepth},
		{"recursive caller", `{% macro f() %}{{ caller() }}{% endmacro %}{% macro g() %}{% call f() %}{{ g() }}{% endcall %}{% endmacro %}{{ g() }}`, Budget{}, LimitDepth},
		{"deep value tojson", `{% set ns = namespace(a=[]) %}{% for i in range(5000) %}{% set ns.a = [ns.a] %}{% endfor %}{{ ns.a | tojson }}`, Budget{}, LimitDepth},
		{"deep value print", `{% set ns = namespace(a=[]) %}{% for i in range(5000) %}{% set ns.a = [ns.a] %}{% endfor %}{{ ns.a }}`, Budget{}, LimitDepth},
		{"cyclic list", `{% set a = [] %}{% do a.append(a) %}{{ a }}`, Budget{}, LimitDepth},
		{"range 20M", `{% for i in range(20000000) %}{% endfor %}`, Budget{}, LimitLoop},
		{"range 20M length", `{{ range(20000000) | length }}`, Budget{}, LimitLoop},
		{"range huge step", `{{ range(-9223372036854775807, 9223372036854775807) | length }}`, Budget{}, LimitLoop},
		{"loop over long string", `{% for c in 'a' * 200000 %}{% endfor %}`, Budget{}, LimitLoop},
		{"string repeat 1e8", `{{ 'a' * 100000000 }}`, Budget{}, LimitString},
		{"string repeat 10**9", `{{ 'a' * 10**9 }}`, Budget{}, LimitString},
		{"int times string", `{{ 1000000000 * 'ab' }}`, Budget{}, LimitString},
		{"list repeat", `{{ [1, 2] * 10**9 }}`, Budget{}, LimitString},
		{"empty list repeat", `{{ ([] * 10**18) ~ ('' * 10**18) }}{{ 'x' * 10**7 }}`, Budget{}, LimitString},
		{"concat doubling", `{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}`, Budget{}, LimitString},
		{"plus doubling", `{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}`, Budget{}, LimitString},
		{"list doubling", `{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}`, Budget{}, LimitString},
		{"join growth", `{% set ns = namespace(l=['x' * 1000000]) %}{% for i in range(10) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | join }}`, Budget{}, LimitString},
		{"center", `{{ 'x' | center(1000000000) }}`, Budget{}, LimitString},
		{"indent", `{{ ('a\n' * 1000000) | indent(100) }}`, Budget{}, LimitString},
		{"indent width", `{{ 'a\nb' | indent(10**9) }}`, Budget{}, LimitString},
		{"replace growth", `{{ ('a' * 1000000) | replace('a', 'aaaaaaaa') }}`, Budget{}, LimitString},
		{"zfill", `{{ 'x'.zfill(10**9) }}`, Budget{}, LimitString},
		{"percent width", `{{ '%1000000000s' % 'x' }}`, Budget{}, LimitString},
		{"tojson indent", `{{ [[[1]]] | tojson(indent=10**8) }}`, Budget{}, LimitString},
		{"macro capture", `{% macro f() %}{{ 'x' * 4000000 }}{{ 'x' * 4000000 }}{% endmacro %}{{ f() }}`, Budget{}, LimitString},
		{"output", `{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}`, Budget{}, LimitOutput},
		{"nested loops 10k x 10k", `{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}`, Budget{}, LimitSteps},
		{"string scans", `{% set s = 'a' * 4000000 %}{% for i in range(100000) %}{{ s | length }}{% endfor %}`, Budget{}, LimitSteps},
		{"fresh strings kept", `{% set xs = [] %}{% for i in range(100000) %}{% do xs.append('a' * 10000 ~ i) %}{% endfor %}`, small, LimitAlloc},
		{"fresh lists kept", `{% set xs = [] %}{% for i in range(100000) %}{% do xs.append(range(10000) | list) %}{% endfor %}`, small, LimitAlloc},
	}
	maxTime := 3 * time.Second
	if raceflag.Enabled {
		maxTime = 30 * time.Second
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.budget
			if c.limit != LimitDeadline {
				// The limit under test, not the clock, must stop it
				// (the race detector is slow).
				b.Timeout = time.Minute
			}
			tm, err := CompileBudget(c.src, b)
			require.NoError(t, err)
			var out string
			start := time.Now()
			peak := heapPeak(func() { out, err = tm.Render(t.Context(), nil) })
			elapsed := time.Since(start)
			require.Empty(t, out)
			require.ErrorIs(t, err, ErrBudget)
			var le *LimitError
			require.ErrorAs(t, err, &le)
			require.Equal(t, c.limit, le.Limit)
			require.Contains(t, err.Error(), c.limit)
			require.Less(t, elapsed, maxTime)
			require.Less(t, peak, uint64(96<<20), "heap grew %d MiB", peak>>20)
			t.Logf("%s after %v, heap +%d MiB", err, elapsed.Round(time.Millisecond), peak>>20)
		})
	}
}

// TestCompileDepth: a source nested deeper than MaxDepth fails to compile
// with the recursion_depth limit instead of overflowing the stack.
func TestCompileDepth(t *testing.T) {
	const n = 100000
	cases := map[string]string{
		"parentheses":  "{{ " + strings.Repeat("(", n) + "1" + strings.Repeat(")", n) + " }}",
		"brackets":     "{{ " + strings.Repeat("[", n) + strings.Repeat("]", n) + " }}",
		"dicts":        "{{ " + strings.Repeat("{'a': ", n) + "1" + strings.Repeat("}", n) + " }}",
		"not":          "{{ " + strings.Repeat("not ", n) + "1 }}",
		"minus":        "{{ " + strings.Repeat("-", n) + "1 }}",
		"plus chain":   "{{ 1" + strings.Repeat(" + 1", n) + " }}",
		"or chain":     "{{ 1" + strings.Repeat(" or 1", n) + " }}",
		"attr chain":   "{{ x" + strings.Repeat(".a", n) + " }}",
		"filter chain": "{{ x" + strings.Repeat(" | trim", n) + " }}",
		"calls":        "{{ " + strings.Repeat("f(", n) + strings.Repeat(")", n) + " }}",
		"cond chain":   "{{ 1" + strings.Repeat(" if 1 else 1", n) + " }}",
		"ifs":          strings.Repeat("{% if x %}", n) + strings.Repeat("{% endif %}", n),
		"fors":         strings.Repeat("{% for x in y %}", n) + strings.Repeat("{% endfor %}", n),
		"macros":       strings.Repeat("{% macro m() %}", n) + strings.Repeat("{% endmacro %}", n),
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := CompileBudget(src, Budget{MaxSource: len(src)}) // the depth, not the size
			var le *LimitError
			require.ErrorAs(t, err, &le)
			require.Equal(t, LimitDepth, le.Limit)
			require.ErrorIs(t, err, ErrBudget)
		})
	}
	// Nesting that real templates use compiles.
	_, err := Compile("{{ " + strings.Repeat("(", 50) + "1" + strings.Repeat(")", 50) + " }}" + strings.Repeat("{% if x %}", 40) + strings.Repeat("{% endif %}", 40))
	require.NoError(t, err)
	// The evaluator's own depth check stops what compiles but nests too
	// deep at render time: bounded recursion works within the budget.
	tm, err := CompileBudget("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(depth) }}", Budget{MaxDepth: 40})
	require.NoError(t, err)
	_, err = tm.Render(t.Context(), map[string]any{"depth": 5})
	require.NoError(t, err)
	_, err = tm.Render(t.Context(), map[string]any{"depth": 20})
	var le *LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, LimitDepth, le.Limit)
}

// TestCompileSourceSize: a template longer than MaxSource is refused
// before it is lexed (a 40 MB template of "{{x}}" took 4.8 GB and 44 s to
// compile when a worker loaded its model); up to the limit it compiles.
func TestCompileSourceSize(t *testing.T) {
	cases := []struct {
		name   string
		src    string
		budget Budget
		max    int64 // 0: compiles
	}{
		{"default limit", strings.Repeat("x", DefaultMaxSource), Budget{}, 0},
		{"past the default", strings.Repeat("x", DefaultMaxSource+1), Budget{}, DefaultMaxSource},
		{"expressions", strings.Repeat("{{x}}", 8_000_000), Budget{}, DefaultMaxSource},
		{"own limit", "{{ x }}", Budget{MaxSource: 6}, 6},
		{"own limit met", "{{ x }}", Budget{MaxSource: 7}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tm, err := CompileBudget(c.src, c.budget)
			if c.max == 0 {
				require.NoError(t, err)
				return
			}
			require.Nil(t, tm)
			require.ErrorIs(t, err, ErrBudget)
			var le *LimitError
			require.ErrorAs(t, err, &le)
			require.Equal(t, &LimitError{Limit: LimitSource, Max: c.max}, le)
			require.Contains(t, le.Error(), fmt.Sprintf("source_size limit (max %d bytes)", c.max))
		})
	}
}

func TestDeadline(t *testing.T) {
	spin := `{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}`
	unlimited := Budget{MaxSteps: 1 << 62, Timeout: 50 * time.Millisecond}

	tm, err := CompileBudget(spin, unlimited)
	require.NoError(t, err)
	start := time.Now()
	_, err = tm.Render(t.Context(), nil)
	require.Less(t, time.Since(start), 2*time.Second)
	var le *LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, LimitDeadline, le.Limit)
	require.Equal(t, int64(50), le.Max)
	require.ErrorIs(t, err, ErrBudget)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "deadline")

	// The caller's deadline counts too.
	tm, err = CompileBudget(spin, Budget{MaxSteps: 1 << 62})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err = tm.Render(ctx, nil)
	require.ErrorAs(t, err, &le)
	require.Equal(t, LimitDeadline, le.Limit)

	// A cancelled context is not a budget error.
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = tm.Render(ctx, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, errors.Is(err, ErrBudget))
}

// TestDefaultsFitRealUse: a long conversation through a real template
// stays well inside the default budget: within half of each counted limit.
// (Its wall time is the machine's: a loaded CI machine took over the
// default 2 s, so the deadline is not what this checks.)
func TestDefaultsFitRealUse(t *testing.T) {
	b := DefaultBudget()
	b.MaxSteps /= 2
	b.MaxAlloc /= 2
	b.Timeout = time.Hour
	tm, err := CompileBudget(`{%- for message in messages %}{%- if message.role == 'user' %}{{- '<|im_start|>user\n' + message.content | trim + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}{{- '<|im_start|>assistant\n' }}`, b)
	require.NoError(t, err)
	msgs := make([]any, 2000)
	for i := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		msgs[i] = map[string]any{"role": role, "content": strings.Repeat("word ", 200)} // 2000 × 1 KB
	}
	out, err := tm.Render(t.Context(), map[string]any{"messages": msgs})
	require.NoError(t, err)
	require.Greater(t, len(out), 2000*1000)
	require.Less(t, len(out), DefaultMaxOutput/2)
}

func TestBudgetDefaults(t *testing.T) {
	tm, err := CompileBudget("x", Budget{MaxOutput: 10})
	require.NoError(t, err)
	b := tm.Budget()
	require.Equal(t, 10, b.MaxOutput)
	d := DefaultBudget()
	d.MaxOutput = 10
	require.Equal(t, d, b)
	_, err = tm.Render(t.Context(), nil)
	require.NoError(t, err)
	tm, err = CompileBudget("{{ 'x' * 11 }}", Budget{MaxOutput: 10})
	require.NoError(t, err)
	_, err = tm.Render(t.Context(), nil)
	var le *LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, &LimitError{Limit: LimitOutput, Max: 10, Line: 1}, le)
	require.Equal(t, "jinja: line 1: template exceeded its output_size limit (max 10 bytes)", le.Error())
}

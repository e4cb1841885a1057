package jinja

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

// fuzzBudget is tight so that the fuzzer explores many templates per
// second; the properties hold for any budget.
var fuzzBudget = Budget{
	MaxSteps:  20_000,
	MaxOutput: 64 << 10,
	MaxDepth:  64,
	MaxLoop:   1_000,
	MaxString: 64 << 10,
	MaxAlloc:  4 << 20,
	Timeout:   2 * time.Second,
}

// fuzzSeeds are hostile and feature-dense templates; the published
// templates in testdata/templates are added too.
var fuzzSeeds = []string{
	`{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}`,
	`{% for i in range(20000000) %}{% endfor %}`,
	`{{ 'a' * 10**9 }}`,
	`{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}`,
	`{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}`,
	`{{ ((((((((((1)))))))))) }}`,
	`{% set xs = [] %}{% for m in messages %}{% do xs.append(m.content ~ loop.index) %}{% endfor %}{{ xs | join(', ') | tojson(indent=2) }}`,
	`{% for k, v in tools[0].function.parameters.properties | dictsort %}{{ k }}={{ v | tojson }}{% else %}-{% endfor %}`,
	`{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | map('upper') | unique | sort | list }}`,
	`{{ "%s %d %5.2f" % (messages[0].role, 3, 1.5) }}{{ '{} {x}'.format(1, x=2) }}{{ messages[0].content[::-1][1:3] }}`,
	`{% call(x) f(1) %}{{ x }}{% endcall %}{% macro f(a) %}{{ caller(a) }}{% endmacro %}{% call(x) f(2) %}{{ x * 2 }}{% endcall %}`,
	`{%- if messages[0]['role'] == 'system' %}{{- raise_exception('no system') }}{%- endif %}`,
	`{{ strftime_now('%d %b %Y') | length }} {{ content | indent(4, true) | center(40) | truncate(20) | wordcount }}`,
	`{% set a = [] %}{% do a.append(a) %}{{ a }}{{ a | tojson }}`,
}

// FuzzRender: compiling and rendering any template with any content never
// panics, ends with a *LimitError, an *Error or a context error, keeps its
// output within MaxOutput, and allocates a bounded amount of memory.
// The committed corpus is testdata/fuzz/FuzzRender.
func FuzzRender(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s, "Hello")
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "templates", "*.jinja"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(string(b), " Hi there! ")
		}
	}
	allocs := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocated := func() uint64 {
		metrics.Read(allocs)
		return allocs[0].Value.Uint64()
	}
	f.Fuzz(func(t *testing.T, src, content string) {
		if len(src) > 1<<16 || len(content) > 1<<16 {
			return
		}
		before := allocated()
		tm, err := CompileBudget(src, fuzzBudget)
		if err != nil {
			checkErr(t, err)
			return
		}
		data := map[string]any{
			"messages": []any{
				Object{{Key: "role", Value: "system"}, {Key: "content", Value: content}},
				Object{{Key: "role", Value: "user"}, {Key: "content", Value: "Hi"}},
				Object{{Key: "role", Value: "assistant"}, {Key: "content", Value: ""}, {Key: "tool_calls", Value: []any{
					Object{{Key: "id", Value: "call12345"}, {Key: "function", Value: Object{{Key: "name", Value: "f"}, {Key: "arguments", Value: map[string]any{"x": 1}}}}},
				}}},
			},
			"tools": []any{Object{{Key: "type", Value: "function"}, {Key: "function", Value: Object{
				{Key: "name", Value: "f"},
				{Key: "parameters", Value: map[string]any{"type": "object", "properties": map[string]any{"x": map[string]any{"type": "integer"}}}},
			}}}},
			"add_generation_prompt": true,
			"bos_token":             "<s>",
			"eos_token":             "</s>",
			"content":               content,
		}
		out, err := tm.Render(context.Background(), data)
		if err != nil {
			checkErr(t, err)
		} else if len(out) > fuzzBudget.MaxOutput {
			t.Fatalf("output of %d bytes, limit %d", len(out), fuzzBudget.MaxOutput)
		}
		// Everything a render keeps is charged against MaxAlloc (4 MiB);
		// uncharged temporaries are small multiples of MaxString.
		if n := allocated() - before; n > 64<<20 {
			t.Fatalf("allocated %d MiB", n>>20)
		}
	})
}

func checkErr(t *testing.T, err error) {
	t.Helper()
	var le *LimitError
	var je *Error
	switch {
	case errors.As(err, &le):
	case errors.As(err, &je):
		if strings.HasPrefix(je.Msg, "internal error") {
			t.Fatalf("panic: %v", err)
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
	default:
		t.Fatalf("unexpected error type %T: %v", err, err)
	}
}

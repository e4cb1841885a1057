package grammar

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// testSchemas are used by the table tests, the fuzz test and the engine
// tests' generation checks.
var testSchemas = []string{
	`{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer"},"tags":{"type":"array","items":{"type":"string","enum":["a","b","c d"]},"maxItems":3}},"required":["name","age"]}`,
	`{"type":"array","items":{"anyOf":[{"type":"number"},{"type":"null"},{"type":"boolean"}]},"minItems":1,"maxItems":4}`,
	`{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"],"additionalProperties":false}},"$ref":"#/$defs/node"}`,
	`{"type":"object","properties":{"kind":{"const":"point"},"x":{"type":"number"},"label":{"type":["string","null"],"minLength":2,"maxLength":5}},"required":["kind","x","label"],"additionalProperties":{"type":"boolean"}}`,
	`{}`,
	`{"type":"string","enum":["yes","no","maybe \"so\""]}`,
}

// valid is an independent validator for the subset, over decoded JSON.
func valid(v any, s any) bool {
	if b, ok := s.(bool); ok {
		return b
	}
	m := s.(map[string]any)
	if c, ok := m["const"]; ok {
		return jsonEq(v, c)
	}
	if e, ok := m["enum"]; ok {
		for _, c := range e.([]any) {
			if jsonEq(v, c) {
				return true
			}
		}
		return false
	}
	if alts, ok := m["anyOf"]; ok {
		for _, a := range alts.([]any) {
			if valid(v, a) {
				return true
			}
		}
		return false
	}
	if r, ok := m["$ref"]; ok {
		return valid(v, resolve(r.(string)))
	}
	types := []string{}
	switch t := m["type"].(type) {
	case string:
		types = append(types, t)
	case []any:
		for _, e := range t {
			types = append(types, e.(string))
		}
	default:
		return true
	}
	for _, t := range types {
		if validType(v, t, m) {
			return true
		}
	}
	return false
}

var refRoot any

func resolve(r string) any {
	cur := refRoot
	if r == "#" {
		return cur
	}
	for _, p := range strings.Split(strings.TrimPrefix(r, "#/"), "/") {
		cur = cur.(map[string]any)[p]
	}
	return cur
}

func num(m map[string]any, k string, def float64) float64 {
	if v, ok := m[k].(float64); ok {
		return v
	}
	return def
}

func validType(v any, t string, m map[string]any) bool {
	switch t {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	case "string":
		s, ok := v.(string)
		n := float64(utf8.RuneCountInString(s))
		return ok && n >= num(m, "minLength", 0) && n <= num(m, "maxLength", math.Inf(1))
	case "array":
		a, ok := v.([]any)
		if !ok || float64(len(a)) < num(m, "minItems", 0) || float64(len(a)) > num(m, "maxItems", math.Inf(1)) {
			return false
		}
		items, has := m["items"]
		for _, e := range a {
			if has && !valid(e, items) {
				return false
			}
		}
		return true
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			return false
		}
		props, _ := m["properties"].(map[string]any)
		for _, r := range m["required"].([]any) {
			if _, ok := o[r.(string)]; !ok {
				return false
			}
		}
		add, has := m["additionalProperties"]
		if !has {
			add = len(props) == 0
		}
		for k, e := range o {
			if ps, ok := props[k]; ok {
				if !valid(e, ps) {
					return false
				}
			} else if !valid(e, add) {
				return false
			}
		}
		return true
	}
	return false
}

func jsonEq(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// checkDoc reports whether doc parses and validates against schema src.
func checkDoc(t testing.TB, src, doc string) {
	t.Helper()
	var s, v any
	require.NoError(t, json.Unmarshal([]byte(src), &s))
	if m, ok := s.(map[string]any); ok && m["required"] == nil {
		m["required"] = []any{}
	}
	fixRequired(s)
	refRoot = s
	require.NoError(t, json.Unmarshal([]byte(doc), &v), "output %q is not JSON", doc)
	require.True(t, valid(v, s), "output %q does not match %s", doc, src)
}

// fixRequired gives every object schema a required list, so the
// validator can range over it.
func fixRequired(s any) {
	switch m := s.(type) {
	case map[string]any:
		if m["required"] == nil {
			m["required"] = []any{}
		}
		for _, v := range m {
			fixRequired(v)
		}
	case []any:
		for _, v := range m {
			fixRequired(v)
		}
	}
}

func TestMatcherDocuments(t *testing.T) {
	cases := []struct {
		schema int
		good   []string
		bad    []string
	}{
		{0, []string{
			`{"name":"Ann","age":7}`,
			`{ "age": -12 , "name": "\u00e9\"x", "tags": ["a","c d"] }`,
			`{"tags":[],"name":"","age":0}`,
		}, []string{
			`{"name":"Ann"}`,                                // age required
			`{"name":"Ann","age":7,"x":1}`,                  // no additional
			`{"name":"Ann","age":7.5}`,                      // integer
			`{"name":"Ann","name":"B","age":1}`,             // duplicate
			`{"name":"abcdefghijklm","age":1}`,              // maxLength 12
			`{"name":"A","age":1,"tags":["e"]}`,             // enum
			`{"name":"A","age":01}`,                         // leading zero
			`{"name":"A\x01","age":1}`,                      // control character
			`{"name":"A","age":1,"tags":["a","a","a","a"]}`, // maxItems
			`{"name":"A","age":1}x`,
		}},
		{1, []string{`[1]`, `[-0.5e+3, null, true, false]`, `[ 0 ]`}, []string{`[]`, `[1,2,3,4,5]`, `["x"]`, `[1.]`, `[tru]`}},
		{2, []string{`{"v":1,"next":null}`, `{"v":1,"next":{"v":2,"next":{"v":3,"next":null}}}`}, []string{`{"v":1}`, `{"v":1,"next":{"v":2}}`}},
		{3, []string{`{"kind":"point","x":1,"label":null}`, `{"kind":"point","x":2.5,"label":"ab","extra":true,"zz":false}`},
			[]string{`{"kind":"pointy","x":1,"label":null}`, `{"kind":"point","x":1,"label":"a"}`, `{"kind":"point","x":1,"label":null,"e":1}`}},
		{4, []string{`{}`, `[1,{"a":[]}]`, `"s"`, `12`, `null`}, []string{`{a:1}`, `[1,]`, `nul`}},
		{5, []string{`"yes"`, `"maybe \"so\""`}, []string{`"ye"`, `"nope"`}},
	}
	for _, tc := range cases {
		s, err := CompileSchema([]byte(testSchemas[tc.schema]))
		require.NoError(t, err)
		for _, doc := range tc.good {
			m := s.NewMatcher(nil)
			require.NoError(t, m.Write([]byte(doc)), doc)
			require.True(t, m.CanEnd(), doc)
			checkDoc(t, testSchemas[tc.schema], doc)
		}
		for _, doc := range tc.bad {
			m := s.NewMatcher(nil)
			err := m.Write([]byte(doc))
			require.True(t, err != nil || !m.CanEnd(), "schema %d accepted %s", tc.schema, doc)
			if err != nil {
				require.ErrorIs(t, err, ErrRejected)
			}
		}
	}
}

func TestLiteralsAreWrittenPlain(t *testing.T) {
	s, err := CompileSchema([]byte(`{"type":"object","properties":{"a<b":{"enum":["x&y", 1.5, null, {"k": [true]}]}},"required":["a<b"]}`))
	require.NoError(t, err)
	for _, doc := range []string{`{"a<b":"x&y"}`, `{"a<b":1.5}`, `{"a<b":null}`, `{"a<b":{"k":[true]}}`} {
		m := s.NewMatcher(nil)
		require.NoError(t, m.Write([]byte(doc)), doc)
		require.True(t, m.Done(), doc)
	}
}

// requireMatches checks that s matches every document of good whole and
// none of bad (each is refused on the way, or cannot end there).
func requireMatches(t *testing.T, s *Schema, good, bad []string) {
	t.Helper()
	for _, doc := range good {
		m := s.NewMatcher(nil)
		require.NoError(t, m.Write([]byte(doc)), doc)
		require.True(t, m.CanEnd(), doc)
	}
	for _, doc := range bad {
		m := s.NewMatcher(nil)
		err := m.Write([]byte(doc))
		require.True(t, err != nil || !m.CanEnd(), "accepted %s", doc)
	}
}

// TestEnumKeepsType: an enum or const next to a type keyword matches only
// its values of that type, as a validator checks both; the values of
// another type were written as they are.
func TestEnumKeepsType(t *testing.T) {
	for _, tc := range []struct {
		schema string
		good   []string
		bad    []string
	}{
		{`{"type":"integer","enum":[1.5,2]}`, []string{`2`}, []string{`1.5`}},
		{`{"type":"string","enum":["a",1,null,{"k":"a"}]}`, []string{`"a"`}, []string{`1`, `null`, `{"k":"a"}`}},
		{`{"type":["string","null"],"enum":["a",1,null]}`, []string{`"a"`, `null`}, []string{`1`}},
		{`{"type":"integer","const":3.0}`, []string{`3.0`}, nil},
		{`{"type":"number","enum":[1,"x",false]}`, []string{`1`}, []string{`"x"`, `false`}},
		{`{"type":"boolean","enum":[true,"true",1]}`, []string{`true`}, []string{`"true"`, `1`}},
		{`{"enum":[1,"x"]}`, []string{`1`, `"x"`}, nil},
		// Length keywords beside the list hold for its values too.
		{`{"type":"string","enum":["a","bbbb"],"maxLength":1}`, []string{`"a"`}, []string{`"bbbb"`}},
		{`{"enum":["é","ab",3],"minLength":2}`, []string{`"ab"`, `3`}, []string{`"é"`}},
		{`{"enum":[[1],[1,2,3]],"maxItems":2}`, []string{`[1]`}, []string{`[1,2,3]`}},
		{`{"const":"abc","minLength":2,"maxLength":3}`, []string{`"abc"`}, nil},
	} {
		t.Run(tc.schema, func(t *testing.T) {
			s, err := CompileSchema([]byte(tc.schema))
			require.NoError(t, err)
			requireMatches(t, s, tc.good, tc.bad)
		})
	}
}

// TestEnumNothingLeft: a list none of whose values meets the keywords
// beside it is a bad schema (nothing could be written), named.
func TestEnumNothingLeft(t *testing.T) {
	for _, src := range []string{
		`{"type":"string","enum":["abc"],"maxLength":2}`,
		`{"const":[1,2],"minItems":3}`,
		`{"type":"integer","enum":["a"]}`,
	} {
		_, err := CompileSchema([]byte(src))
		require.ErrorIs(t, err, ErrBadSchema, src)
		require.ErrorContains(t, err, "nothing matches", src)
	}
}

// TestCombinatorSiblings: keywords beside anyOf, oneOf, allOf or a $ref
// constrain every member (what the $ref names) too (they were dropped, so {"type":"string","anyOf":[...]}
// let the model write a number); types are intersected, and a keyword
// set differently on both sides is refused rather than one side dropped.
func TestCombinatorSiblings(t *testing.T) {
	for _, tc := range []struct {
		schema string
		good   []string
		bad    []string
	}{
		{`{"type":"string","anyOf":[{"maxLength":3},{"minLength":10}]}`, []string{`"ab"`, `"abcdefghijk"`}, []string{`-50`, `"abcde"`, `null`}},
		{`{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}},"anyOf":[{"required":["a"]},{"required":["b"]}]}`,
			[]string{`{"a":1}`, `{"b":"x"}`, `{"a":1,"b":"x"}`}, []string{`{}`, `{"c":1}`, `[]`}},
		{`{"type":["string","null"],"anyOf":[{"type":"string","minLength":1},{"type":"null"}]}`, []string{`"x"`, `null`}, []string{`""`, `1`}},
		{`{"type":"number","oneOf":[{"type":"integer"},{"type":"string"}]}`, []string{`3`}, []string{`"s"`, `1.5`}},
		{`{"anyOf":[{"type":"string"}],"allOf":[{"maxLength":2}]}`, []string{`"ab"`}, []string{`"abc"`, `1`}},
		{`{"type":"string","anyOf":[true,false]}`, []string{`"x"`}, []string{`1`}},
		{`{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}],"default":null,"title":"A","$defs":{"a":{"type":"string"}}}`, []string{`"x"`, `null`}, []string{`1`}},
		// Beside a $ref as beside a combinator.
		{`{"$ref":"#/$defs/s","maxLength":2,"$defs":{"s":{"type":"string"}}}`, []string{`"ab"`}, []string{`"abc"`, `1`}},
		{`{"$ref":"#/$defs/s","type":"integer","$defs":{"s":{"type":"number"}}}`, []string{`3`}, []string{`1.5`}},
		{`{"$ref":"#/$defs/s","description":"d","$defs":{"s":{"type":"string"}}}`, []string{`"abc"`}, []string{`1`}},
		{`{"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n","type":["object","null"]}}}},"$ref":"#/$defs/n"}`,
			[]string{`{}`, `{"next":{}}`, `{"next":{"next":{}}}`}, []string{`{"next":null}`, `{"next":1}`}},
	} {
		t.Run(tc.schema, func(t *testing.T) {
			s, err := CompileSchema([]byte(tc.schema))
			require.NoError(t, err)
			requireMatches(t, s, tc.good, tc.bad)
		})
	}
	for _, tc := range []struct {
		schema string
		want   error
		names  string
	}{
		{`{"type":"string","anyOf":[{"type":"integer"},{"type":"boolean"}]}`, ErrBadSchema, "nothing matches"},
		{`{"type":"string","anyOf":[{"$ref":"#/$defs/a"}],"$defs":{"a":{"type":"string"}}}`, ErrUnsupported, "$ref"},
		{`{"type":"string","maxLength":2,"anyOf":[{"maxLength":3}]}`, ErrUnsupported, `"maxLength"`},
		{`{"$ref":"#/$defs/s","type":"string","$defs":{"s":{"type":"integer"}}}`, ErrBadSchema, "nothing matches"},
		{`{"$defs":{"a":{"$ref":"#/$defs/a","type":"string"}},"$ref":"#/$defs/a"}`, ErrUnsupported, "$ref"},
	} {
		_, err := CompileSchema([]byte(tc.schema))
		require.ErrorIs(t, err, tc.want, tc.schema)
		require.ErrorContains(t, err, tc.names, tc.schema)
	}
}

func TestWriteLeavesStateOnError(t *testing.T) {
	s, err := CompileSchema([]byte(testSchemas[0]))
	require.NoError(t, err)
	m := s.NewMatcher(nil)
	require.NoError(t, m.Write([]byte(`{"na`)))
	require.ErrorIs(t, m.Write([]byte(`mX`)), ErrRejected)
	require.NoError(t, m.Write([]byte(`me":"x","age":1}`)))
	require.True(t, m.Done())
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		schema string
		want   error
		names  string
	}{
		{`{"type":"string","pattern":"^a"}`, ErrUnsupported, `"pattern"`},
		{`{"type":"object","properties":{"a":{"type":"array","uniqueItems":true}}}`, ErrUnsupported, `"uniqueItems"`},
		{`{"type":"string","format":"email"}`, ErrUnsupported, `"email"`},
		{`{"$ref":"http://x/y"}`, ErrUnsupported, "only local"},
		{`{"allOf":[{},{}]}`, ErrUnsupported, "allOf"},
		{`{"type":"strin"}`, ErrBadSchema, `"strin"`},
		{`{"enum":[]}`, ErrBadSchema, "enum"},
		{`{"$ref":"#/$defs/x"}`, ErrBadSchema, "does not resolve"},
		{`{"type":"object","properties":{"a":{}},"required":["b"]}`, ErrUnsupported, `"b"`},
		{`{"type":"array","minItems":3,"maxItems":2}`, ErrBadSchema, "maxItems"},
		{`[`, ErrBadSchema, ""},
		{`{"enum":[` + strings.Repeat(`1,`, 64) + `2]}`, ErrUnsupported, "65 alternatives"},
		{`{"anyOf":[{"enum":` + numbers(0, 40) + `},{"enum":` + numbers(40, 80) + `}]}`, ErrUnsupported, "more than 64 alternatives"},
		{`false`, ErrBadSchema, "false"},
		{`{"type":"integer","enum":[1.5]}`, ErrBadSchema, "no value is of type integer"},
		{`{"type":"string","const":5}`, ErrBadSchema, "no value is of type string"},
		{`{"type":["object","array"],"enum":[1,"a",null,true]}`, ErrBadSchema, "object or array"},
		{`{"type":"strin","enum":["a"]}`, ErrBadSchema, `"strin"`},
		{`{"type":[],"const":1}`, ErrBadSchema, "empty list"},
	}
	for _, tc := range cases {
		_, err := CompileSchema([]byte(tc.schema))
		require.ErrorIs(t, err, tc.want, tc.schema)
		require.Contains(t, err.Error(), tc.names, tc.schema)
	}
}

// numbers is the JSON array [lo, ..., hi-1].
func numbers(lo, hi int) string {
	var b strings.Builder
	for i := lo; i < hi; i++ {
		if i > lo {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, i)
	}
	return "[" + b.String() + "]"
}

// TestRefLoopsRefused: a $ref that no finite document can satisfy (a loop
// of references with no input consumed, or a recursion with no way out)
// is refused at compile time, naming the loop, rather than compiled into a
// grammar that rejects the first byte of every output.
func TestRefLoopsRefused(t *testing.T) {
	for _, tc := range []struct {
		name, schema, loop string
	}{
		{"root refers to itself", `{"$ref":"#"}`, `$ref "#" loops ("#" -> "#") without reaching a schema`},
		{"self-reference", `{"$defs":{"a":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`, `("#/$defs/a" -> "#/$defs/a")`},
		{"two-ref cycle", `{"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}}}`,
			`$ref "#/$defs/a" loops ("#/$defs/a" -> "#/$defs/b" -> "#/$defs/a") without reaching a schema`},
		{"three-ref cycle", `{"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/c"},"c":{"$ref":"#/$defs/a"}}}`,
			`("#/$defs/a" -> "#/$defs/b" -> "#/$defs/c" -> "#/$defs/a")`},
		{"cycle entered from a ref outside it", `{"$ref":"#/definitions/x","definitions":{"x":{"$ref":"#/definitions/y"},"y":{"$ref":"#/definitions/z"},"z":{"$ref":"#/definitions/y"}}}`,
			`("#/definitions/y" -> "#/definitions/z" -> "#/definitions/y")`},
		{"anyOf of refs back only", `{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"$ref":"#/$defs/b"}]},"b":{"oneOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"}`,
			`"#/$defs/a" loops`},
		{"root anyOf of itself", `{"anyOf":[{"$ref":"#"},{"allOf":[{"$ref":"#"}]}]}`, `("#" -> "#")`},
		{"allOf of itself", `{"$defs":{"a":{"allOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"}`, `("#/$defs/a" -> "#/$defs/a")`},
		{"loop under an optional property", `{"type":"object","properties":{"x":{"$ref":"#/$defs/a"}},"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"}]}}}`,
			`("#/$defs/a" -> "#/$defs/a")`},
		{"loop in a nullable", `{"type":["object","null"],"properties":{"x":{"anyOf":[{"type":"null"},{"$ref":"#/$defs/a"}]}},"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}}}`,
			`("#/$defs/a" -> "#/$defs/b" -> "#/$defs/a")`},
		{"object requiring itself", `{"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}},"required":["next"]}},"$ref":"#/$defs/n"}`,
			`$ref "#/$defs/n" loops ("#/$defs/n" -> "#/$defs/n") with no way out`},
		{"objects requiring each other", `{"$defs":{"a":{"type":"object","properties":{"b":{"$ref":"#/$defs/b"}},"required":["b"]},"b":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"array","items":{"$ref":"#/$defs/b"},"minItems":1}]}},"$ref":"#/$defs/a"}`,
			`with no way out`},
		{"non-empty array of itself", `{"$defs":{"t":{"type":"array","items":{"$ref":"#/$defs/t"},"minItems":1}},"$ref":"#/$defs/t"}`,
			`("#/$defs/t" -> "#/$defs/t") with no way out`},
		{"required loop beside a way out", `{"anyOf":[{"type":"null"},{"$ref":"#/$defs/n"}],"$defs":{"n":{"type":"object","properties":{"n":{"$ref":"#/$defs/n"}},"required":["n"]}}}`,
			`("#/$defs/n" -> "#/$defs/n") with no way out`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CompileSchema([]byte(tc.schema))
			require.ErrorIs(t, err, ErrBadSchema)
			require.Contains(t, err.Error(), tc.loop)
		})
	}
}

// TestRecursiveSchemas: recursions that consume input between their
// rounds, or have a way out, compile and match their documents.
func TestRecursiveSchemas(t *testing.T) {
	v := testVocab()
	for _, tc := range []struct {
		name, schema string
		good, bad    []string
		check        bool // checkDoc's validator follows the schema (no left recursion, no oneOf/allOf)
	}{
		{"tree", `{"$defs":{"node":{"type":"object","properties":{"children":{"type":"array","items":{"$ref":"#/$defs/node"}}}}},"$ref":"#/$defs/node"}`,
			[]string{`{}`, `{"children":[]}`, `{"children":[{"children":[{}]},{}]}`}, []string{`{"children":[1]}`, `{"x":1}`, `[]`}, true},
		{"linked list", `{"$defs":{"l":{"type":"object","properties":{"v":{"type":"integer"},"next":{"$ref":"#/$defs/l"}},"required":["v"]}},"$ref":"#/$defs/l"}`,
			[]string{`{"v":1}`, `{"v":1,"next":{"v":2,"next":{"v":3}}}`}, []string{`{"next":{"v":1}}`, `{"v":1,"next":null}`}, true},
		{"root recursion", `{"type":"object","properties":{"sub":{"$ref":"#"},"n":{"type":"null"}}}`,
			[]string{`{}`, `{"sub":{"sub":{"n":null}}}`}, []string{`{"sub":1}`}, true},
		{"nullable recursion", `{"$defs":{"n":{"type":["object","null"],"properties":{"next":{"$ref":"#/$defs/n"}},"required":["next"]}},"$ref":"#/$defs/n"}`,
			[]string{`null`, `{"next":null}`, `{"next":{"next":null}}`}, []string{`{}`, `{"next":{}}`}, true},
		{"required recursion through an anyOf with null", `{"$defs":{"a":{"type":"object","properties":{"b":{"$ref":"#/$defs/b"}},"required":["b"]},"b":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"}`,
			[]string{`{"b":null}`, `{"b":{"b":null}}`}, []string{`{}`, `{"b":{}}`}, true},
		{"left recursion beside a string", `{"anyOf":[{"$ref":"#"},{"type":"string"}]}`,
			[]string{`"x"`, `""`}, []string{`1`, `null`}, false},
		{"left recursion beside null", `{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"}`,
			[]string{`null`}, []string{`1`}, false},
		// b's only alternative is the cycle through a: it matches what a
		// does, wherever b is used (compiled first or not).
		{"ref into a left recursion", `{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/b"},{"type":"string"}]},"b":{"$ref":"#/$defs/a"}},"type":"object","properties":{"y":{"$ref":"#/$defs/b"},"x":{"$ref":"#/$defs/a"}},"required":["x","y"]}`,
			[]string{`{"x":"1","y":"2"}`}, []string{`{"x":"1","y":2}`}, false},
		{"three-ref cycle with a way out", `{"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/b"},"b":{"anyOf":[{"$ref":"#/$defs/c"},{"type":"integer"}]},"c":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"boolean"}]}}}`,
			[]string{`1`, `true`, `false`}, []string{`"x"`, `null`}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := CompileSchema([]byte(tc.schema))
			require.NoError(t, err)
			// The symptom of a loop: no token could start the output.
			logits := make([]float32, len(v.pieces))
			s.NewMatcher(v).Mask(logits)
			require.True(t, slices.ContainsFunc(logits[2:], func(l float32) bool { return !math.IsInf(float64(l), -1) }), "no token allowed at the start")
			for _, doc := range tc.good {
				m := s.NewMatcher(nil)
				require.NoError(t, m.Write([]byte(doc)), doc)
				require.True(t, m.CanEnd(), doc)
				if tc.check {
					checkDoc(t, tc.schema, doc)
				}
			}
			for _, doc := range tc.bad {
				m := s.NewMatcher(nil)
				err := m.Write([]byte(doc))
				require.True(t, err != nil || !m.CanEnd(), "accepted %s", doc)
			}
		})
	}
}

// testVocab is a small vocabulary with multi-byte tokens, an EOG token
// (id 0) and a control token that writes nothing (id 1).
func testVocab() *Vocab {
	pieces := []string{"", "", "{", "}", `"`, `{"`, `":`, `",`, "name", "age", "Ann", " ", "\n", "1", "12", "-", ".", "[", "]", ",", `"}`,
		"tags", "a", "b", "c", " d", "null", "true", "x", "\\", "n", "e", "}}", "[]", "é", "v", "t", "point", "k", "i", "d", "l", "o", "y", "s", "m", ":"}
	return NewVocab(pieces, []int32{0})
}

func TestMaskAgreesWithAccept(t *testing.T) {
	v := testVocab()
	for i, src := range testSchemas {
		s, err := CompileSchema([]byte(src))
		require.NoError(t, err)
		m := s.NewMatcher(v)
		written := ""
		// Walk a few steps, always taking the lowest allowed id >= 2, and
		// check at each step that exactly the allowed tokens are accepted.
		for step := 0; step < 12 && !m.Done(); step++ {
			logits := make([]float32, len(v.pieces))
			m.Mask(logits)
			var pick int32 = -1
			for id := range v.pieces {
				probe := s.NewMatcher(v)
				probe.cur.frames = append(probe.cur.frames[:0], m.cur.frames...)
				probe.cur.ends = append(probe.cur.ends[:0], m.cur.ends...)
				err := probe.Accept(int32(id))
				allowed := !math.IsInf(float64(logits[id]), -1)
				require.Equal(t, allowed, err == nil, "schema %d step %d token %q", i, step, v.pieces[id])
				if allowed && pick < 0 && id >= 2 {
					pick = int32(id)
				}
			}
			require.GreaterOrEqual(t, pick, int32(0), "schema %d: no token allowed after %q", i, written)
			written += v.pieces[pick]
			require.NoError(t, m.Accept(pick))
		}
	}
}

func TestEOGOnlyWhenComplete(t *testing.T) {
	v := testVocab()
	s, err := CompileSchema([]byte(`{"type":"integer"}`))
	require.NoError(t, err)
	m := s.NewMatcher(v)
	require.ErrorIs(t, m.Accept(0), ErrRejected)
	require.ErrorIs(t, m.Accept(1), ErrRejected) // writes nothing
	require.NoError(t, m.Accept(14))             // "12"
	require.False(t, m.Done())
	logits := make([]float32, len(v.pieces))
	m.Mask(logits)
	require.False(t, math.IsInf(float64(logits[0]), -1), "EOG allowed after a complete number")
	require.NoError(t, m.Accept(0))
	require.True(t, m.Done())
}

func TestAnyObject(t *testing.T) {
	s := AnyObject()
	for _, doc := range []string{`{}`, `{"a":[1,{"b":null}],"c":"d"}`} {
		m := s.NewMatcher(nil)
		require.NoError(t, m.Write([]byte(doc)))
		require.True(t, m.Done())
	}
	for _, doc := range []string{`[]`, `"x"`, `1`} {
		require.Error(t, s.NewMatcher(nil).Write([]byte(doc)))
	}
}

func TestWrap(t *testing.T) {
	s, err := CompileSchema([]byte(`{"type":"object","properties":{"name":{"const":"f"},"arguments":{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}},"required":["name","arguments"]}`))
	require.NoError(t, err)
	w := s.Wrap("<tool_call>\n", "\n</tool_call>")
	m := w.NewMatcher(nil)
	require.NoError(t, m.Write([]byte("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"n\": 12}}")))
	require.False(t, m.CanEnd())
	require.NoError(t, m.Write([]byte("\n</tool_call>")))
	require.True(t, m.Done())
	require.Error(t, w.NewMatcher(nil).Write([]byte(`{"name"`)))
	// A number right before the suffix ends at its first byte.
	n, err := CompileSchema([]byte(`{"type":"integer"}`))
	require.NoError(t, err)
	m = n.Wrap("<", ">").NewMatcher(nil)
	require.NoError(t, m.Write([]byte("<42")))
	require.False(t, m.CanEnd())
	require.NoError(t, m.Write([]byte(">")))
	require.True(t, m.Done())
}

// FuzzCompileSchema: any input compiles or fails with a sentinel error, a
// compiled schema's matcher can start a document (a $ref loop is refused,
// not compiled to a grammar that rejects every first byte), and it takes
// any bytes without panicking.
func FuzzCompileSchema(f *testing.F) {
	for _, src := range testSchemas {
		f.Add([]byte(src), []byte(`{"a":[1,"x",null]}`))
	}
	f.Add([]byte(`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`), []byte(`1`))
	f.Add([]byte(`{"$ref":"#"}`), []byte(`1`))
	f.Add([]byte(`{"$defs":{"n":{"type":"object","properties":{"c":{"type":"array","items":{"$ref":"#/$defs/n"}}}}},"$ref":"#/$defs/n"}`), []byte(`{"c":[{},{"c":[]}]}`))
	f.Fuzz(func(t *testing.T, src, doc []byte) {
		s, err := CompileSchema(src)
		if err != nil {
			require.True(t, errors.Is(err, ErrUnsupported) || errors.Is(err, ErrBadSchema), err.Error())
			return
		}
		m := s.NewMatcher(nil)
		starts := false
		for b := range 256 {
			if b == ' ' || b == '\n' { // leading whitespace is not a start
				continue
			}
			if starts = m.Write([]byte{byte(b)}) == nil; starts {
				break
			}
		}
		require.True(t, starts, "no byte starts a document of %s", src)
		m = s.NewMatcher(nil)
		for i := range doc {
			_ = m.Write(doc[i : i+1])
		}
		m.CanEnd()
	})
}

func FuzzMatcher(f *testing.F) {
	for i := range testSchemas {
		f.Add(uint8(i), []byte(`{"name":"x","age":1}`))
		f.Add(uint8(i), []byte(`[1,null]`))
	}
	schemas := make([]*Schema, len(testSchemas))
	for i, src := range testSchemas {
		s, err := CompileSchema([]byte(src))
		require.NoError(f, err)
		schemas[i] = s
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		i := int(which) % len(schemas)
		m := schemas[i].NewMatcher(nil)
		n := 0
		for n < len(data) && m.Write(data[n:n+1]) == nil {
			n++
		}
		if m.CanEnd() {
			checkDoc(t, testSchemas[i], string(data[:n]))
		}
		if n < len(data) {
			err := m.Write(data[n:])
			require.True(t, errors.Is(err, ErrRejected))
		}
	})
}

// TestRebase: a schema embedded in a larger one (a tool's parameters in
// the schema of a call) keeps what its own references name: its $defs and
// its root, not the larger schema's; values of enum and const are left
// as they are.
func TestRebase(t *testing.T) {
	for _, tc := range []struct {
		name, params string
		good, bad    []string
	}{
		{"defs", `{"type":"object","properties":{"p":{"$ref":"#/$defs/P"}},"required":["p"],"$defs":{"P":{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"]}}}`,
			[]string{`{"p":{"x":1}}`}, []string{`{"p":{}}`, `{"p":{"x":"1"}}`}},
		{"definitions in anyOf and items", `{"type":"object","properties":{"l":{"type":"array","items":{"anyOf":[{"$ref":"#/definitions/D"},{"type":"null"}]}}},"definitions":{"D":{"type":"boolean"}}}`,
			[]string{`{"l":[true,null]}`}, []string{`{"l":[1]}`}},
		{"root recursion", `{"type":"object","properties":{"kids":{"type":"array","items":{"$ref":"#"}}}}`,
			[]string{`{"kids":[{"kids":[]},{}]}`}, []string{`{"kids":[{"name":"f","args":{}}]}`}},
		{"a $ref in a const is a value", `{"type":"object","properties":{"c":{"const":{"$ref":"#/x"}}},"required":["c"]}`,
			[]string{`{"c":{"$ref":"#/x"}}`}, []string{`{"c":{"$ref":"#/args/x"}}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params, err := Rebase([]byte(tc.params), "#/properties/args")
			require.NoError(t, err)
			call := `{"type":"object","properties":{"name":{"const":"f"},"args":` + string(params) + `},"required":["name","args"]}`
			s, err := CompileSchema([]byte(call))
			require.NoError(t, err, call)
			wrap := func(docs []string) (out []string) {
				for _, d := range docs {
					out = append(out, `{"name":"f","args":`+d+`}`)
				}
				return out
			}
			requireMatches(t, s, wrap(tc.good), wrap(tc.bad))
		})
	}
}

// TestRefArrayIndex: a $ref may name a member of anyOf, oneOf or allOf by
// its index, as JSON pointers do; an index out of range or written with a
// leading zero does not resolve.
func TestRefArrayIndex(t *testing.T) {
	s, err := CompileSchema([]byte(`{"type":"object","properties":{"a":{"anyOf":[{"type":"integer"},{"type":"null"}]},"b":{"$ref":"#/properties/a/anyOf/1"}},"required":["a","b"]}`))
	require.NoError(t, err)
	requireMatches(t, s, []string{`{"a":1,"b":null}`}, []string{`{"a":1,"b":1}`})
	for _, r := range []string{"#/anyOf/2", "#/anyOf/01", "#/anyOf/-1", "#/anyOf/x"} {
		_, err := CompileSchema([]byte(`{"anyOf":[{"type":"integer"},{"type":"object","properties":{"x":{"$ref":"` + r + `"}}}]}`))
		require.ErrorIs(t, err, ErrBadSchema, r)
		require.Contains(t, err.Error(), "does not resolve", r)
	}
}

// TestOneOf: a oneOf compiles when no value can match two of its members
// (a value matching two is rejected by oneOf, and the matcher, following
// every member, could not keep the model from writing one); otherwise it
// is refused as unsupported, naming the members.
func TestOneOf(t *testing.T) {
	for _, tc := range []struct {
		name, schema string
		good, bad    []string
		refused      string // the members named when refused
	}{
		{"types", `{"oneOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}`, []string{`"a"`, `1`, `null`}, []string{`1.5`, `true`}, ""},
		{"consts", `{"oneOf":[{"const":"a"},{"const":"b"},{"enum":[1,2]}]}`, []string{`"a"`, `2`}, []string{`"c"`}, ""},
		{"string lengths", `{"oneOf":[{"type":"string","maxLength":2},{"type":"string","minLength":3}]}`, []string{`"ab"`, `"abc"`}, nil, ""},
		{"discriminated union", `{"oneOf":[` +
			`{"type":"object","properties":{"kind":{"const":"cat"},"lives":{"type":"integer"}},"required":["kind","lives"]},` +
			`{"type":"object","properties":{"kind":{"const":"dog"},"good":{"type":"boolean"}},"required":["kind"]}]}`,
			[]string{`{"kind":"cat","lives":9}`, `{"kind":"dog"}`}, []string{`{"kind":"dog","lives":9}`}, ""},
		{"a required key the other forbids", `{"oneOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},{"type":"object","properties":{"b":{"type":"integer"}}}]}`,
			[]string{`{"a":1}`, `{}`, `{"b":1}`}, nil, ""},
		{"refs to disjoint defs", `{"$defs":{"A":{"type":"array","minItems":1,"items":{"type":"string"}},"B":{"type":"array","minItems":1,"items":{"type":"number"}}},"oneOf":[{"$ref":"#/$defs/A"},{"$ref":"#/$defs/B"}]}`,
			[]string{`["a"]`, `[1]`}, []string{`[]`}, ""},
		{"number and integer", `{"oneOf":[{"type":"number"},{"type":"integer"}]}`, nil, nil, "members 0 and 1"},
		{"string and a string const", `{"oneOf":[{"type":"string"},{"const":"x"}]}`, nil, nil, "members 0 and 1"},
		{"equal numbers", `{"oneOf":[{"const":1},{"const":1.0}]}`, nil, nil, "members 0 and 1"},
		{"a huge whole number is an integer", `{"oneOf":[{"const":1e20},{"type":"integer"}]}`, nil, nil, "members 0 and 1"},
		{"a fraction is no integer", `{"oneOf":[{"const":2.5},{"type":"integer"}]}`, []string{`2.5`, `3`}, nil, ""},
		{"equal numbers in objects", `{"oneOf":[{"const":{"a":[1]}},{"enum":[{"a":[1.0]}]}]}`, nil, nil, "members 0 and 1"},
		{"different objects", `{"oneOf":[{"const":{"a":[1]}},{"const":{"a":[2]}},{"const":[1]}]}`, []string{`{"a":[1]}`, `[1]`}, []string{`{"a":[3]}`}, ""},
		{"objects both may be empty", `{"oneOf":[{"type":"object","properties":{"a":{"type":"integer"}}},{"type":"object","properties":{"b":{"type":"string"}}}]}`, nil, nil, "members 0 and 1"},
		{"any value", `{"oneOf":[{"type":"string"},{}]}`, nil, nil, "members 0 and 1"},
		{"third member", `{"oneOf":[{"type":"null"},{"type":"boolean"},{"enum":[true]}]}`, nil, nil, "members 1 and 2"},
		{"optional recursion", `{"$defs":{"n":{"oneOf":[{"type":"null"},{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}},"required":["next"]}]}},"$ref":"#/$defs/n"}`,
			[]string{`null`, `{"next":{"next":null}}`}, []string{`{}`}, ""},
		{"after a type beside it", `{"type":"integer","oneOf":[{"type":"number"},{"type":"string"}]}`, []string{`1`}, []string{`"a"`}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := CompileSchema([]byte(tc.schema))
			if tc.refused != "" {
				require.ErrorIs(t, err, ErrUnsupported)
				require.Contains(t, err.Error(), "oneOf")
				require.Contains(t, err.Error(), tc.refused)
				return
			}
			require.NoError(t, err)
			requireMatches(t, s, tc.good, tc.bad)
		})
	}
}

// TestOneOfLarge: a discriminated union of 60 objects of 60 properties,
// told apart by the last one, is proved disjoint within the work bound.
func TestOneOfLarge(t *testing.T) {
	var members []string
	for i := range 60 {
		var props, req []string
		for j := range 60 {
			props = append(props, fmt.Sprintf(`"p%02d":{"type":"integer"}`, j))
			req = append(req, fmt.Sprintf(`"p%02d"`, j))
		}
		props = append(props, fmt.Sprintf(`"z":{"const":%d}`, i))
		req = append(req, `"z"`)
		members = append(members, fmt.Sprintf(`{"type":"object","properties":{%s},"required":[%s]}`, strings.Join(props, ","), strings.Join(req, ",")))
	}
	_, err := CompileSchema([]byte(`{"oneOf":[` + strings.Join(members, ",") + `]}`))
	require.NoError(t, err)
}

// TestSurrogateEscapes: \uD800 to \uDFFF are refused in strings and keys.
// A lone one is no character (strict parsers refuse the document), and a
// pair is one character that the length count took for two, so
// {"minLength":2} let "\ud83d\ude00" (one emoji) through; the model
// writes such a character as UTF-8.
func TestSurrogateEscapes(t *testing.T) {
	for _, tc := range []struct {
		schema    string
		good, bad []string
	}{
		{`{"type":"string","minLength":2}`, []string{`"😀😀"`, `"\u00e9\uD7FF"`, `"\uE000\uffff"`}, []string{`"\ud83d\ude00"`, `"\uD83D\uDE00"`, `"😀"`}},
		{`{"type":"string","maxLength":1}`, []string{`"😀"`, `"\u0041"`}, []string{`"\ud83d\ude00"`}},
		{`{"type":"string"}`, []string{`"\u0000\u1234"`}, []string{`"\ud800"`, `"\udc00"`, `"x\uDbFF"`}},
		{`{"type":"object"}`, []string{`{"\u00e9":1}`}, []string{`{"\ud83d\ude00":1}`, `{"\udfff":1}`}},
	} {
		s, err := CompileSchema([]byte(tc.schema))
		require.NoError(t, err)
		requireMatches(t, s, tc.good, tc.bad)
	}
}

// TestStringUTF8: strings and keys hold whole, valid UTF-8. A byte-level
// model could end a string inside a character or write bytes UTF-8 never
// uses; the answer, sent as JSON, turned each such byte into U+FFFD, more
// characters than maxLength allowed. A token holding part of a character
// is allowed where the character may start, and only the bytes that
// finish it after it.
func TestStringUTF8(t *testing.T) {
	for _, tc := range []struct {
		schema    string
		good, bad []string
	}{
		{`{"type":"string","maxLength":2}`,
			[]string{`"é😀"`, "\"\xed\x9f\xbf\"", "\"\xf4\x8f\xbf\xbf\"", "\"\xe2\x82\xac\""},
			[]string{"\"\xff\"", "\"\xe2\x82\"", "\"a\xe2\"", "\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "\"\xf4\x90\x80\x80\"", "\"\x80\"", "\"\xe0\x80\x80\""}},
		{`{"type":"object"}`, []string{`{"é":1}`}, []string{"{\"\xe2\x82\":1}", "{\"\xff\":1}"}},
	} {
		s, err := CompileSchema([]byte(tc.schema))
		require.NoError(t, err)
		requireMatches(t, s, tc.good, tc.bad)
	}

	pieces := []string{"", "", `"`, "\xe2", "\x82\xac", "\x82", "\xac", "a", "é", "\xff", "\xe2\x82", `a"`}
	v := NewVocab(pieces, []int32{0})
	s, err := CompileSchema([]byte(`{"type":"string","maxLength":3}`))
	require.NoError(t, err)
	allowed := func(m *Matcher) (out []string) {
		bits := m.Allowed()
		for id, p := range pieces {
			if bits[id>>6]>>(id&63)&1 != 0 {
				out = append(out, p)
			}
		}
		return out
	}
	// The mask agrees with Accept token by token, through each state.
	agree := func(m *Matcher) {
		got := allowed(m)
		for id, p := range pieces[2:] {
			probe := s.NewMatcher(v)
			probe.cur.frames = append(probe.cur.frames[:0], m.cur.frames...)
			probe.cur.ends = append(probe.cur.ends[:0], m.cur.ends...)
			require.Equal(t, slices.Contains(got, p), probe.Accept(int32(id+2)) == nil, "token %q", p)
		}
	}
	for _, prefix := range []string{`"`, `"a`, `"é`, `"aé`, "\"\xe2", "\"\xe2\x82", "\"a\xe2\x82", "\"\xe2\x82\xac"} {
		m := s.NewMatcher(v)
		require.NoError(t, m.Write([]byte(prefix)))
		agree(m)
	}
	m := s.NewMatcher(v)
	require.NoError(t, m.Write([]byte(`"`)))
	require.ElementsMatch(t, []string{`"`, "\xe2", "a", "é", "\xe2\x82", `a"`}, allowed(m))
	require.NoError(t, m.Write([]byte("\xe2")))
	require.ElementsMatch(t, []string{"\x82\xac", "\x82", "\xac"}, allowed(m))
	require.NoError(t, m.Write([]byte("\x82")))
	require.ElementsMatch(t, []string{"\x82", "\xac"}, allowed(m))
}

// TestNumberExponent: an exponent has at most two digits, so a number
// stays within a float64: 1E700 was written, which most JSON parsers
// refuse (Go's) or make infinite (JavaScript's, Python's).
func TestNumberExponent(t *testing.T) {
	s, err := CompileSchema([]byte(`{"type":"array","items":{"type":"number"}}`))
	require.NoError(t, err)
	requireMatches(t, s, []string{`[1e99,1E+10,-2.5e-07,0.5E0,99999999999999999999e99]`}, []string{`[1E700]`, `[1e100]`, `[1e-100]`, `[1e+308]`})
	for _, doc := range []string{`1e99`, `-9.99999999999999999e-99`, `99999999999999999999e99`} {
		var f float64
		require.NoError(t, json.Unmarshal([]byte(doc), &f), doc)
	}
}

// TestPydanticDiscriminatedUnion: the schema Pydantic writes for a field
// Union[Cat, Dog] with Field(discriminator="pet_type"): oneOf of $refs
// beside OpenAPI's discriminator, which was refused as an unknown keyword.
func TestPydanticDiscriminatedUnion(t *testing.T) {
	src := `{"$defs":{"Cat":{"properties":{"pet_type":{"const":"cat","title":"Pet Type","type":"string"},"meows":{"title":"Meows","type":"integer"}},"required":["pet_type","meows"],"title":"Cat","type":"object"},` +
		`"Dog":{"properties":{"pet_type":{"const":"dog","title":"Pet Type","type":"string"},"barks":{"title":"Barks","type":"number"}},"required":["pet_type","barks"],"title":"Dog","type":"object"}},` +
		`"properties":{"pet":{"discriminator":{"mapping":{"cat":"#/$defs/Cat","dog":"#/$defs/Dog"},"propertyName":"pet_type"},"oneOf":[{"$ref":"#/$defs/Cat"},{"$ref":"#/$defs/Dog"}],"title":"Pet"},"n":{"title":"N","type":"integer"}},` +
		`"required":["pet","n"],"title":"Model","type":"object"}`
	s, err := CompileSchema([]byte(src))
	require.NoError(t, err)
	requireMatches(t, s, []string{`{"pet":{"pet_type":"cat","meows":3},"n":1}`, `{"pet":{"pet_type":"dog","barks":0.5},"n":1}`},
		[]string{`{"pet":{"pet_type":"dog","meows":3},"n":1}`, `{"pet":{"pet_type":"cow"},"n":1}`})
}

// TestOnlyObjects: whether every document a schema matches is an object.
func TestOnlyObjects(t *testing.T) {
	for _, tc := range []struct {
		schema string
		want   bool
	}{
		{`{"type":"object"}`, true},
		{`{"properties":{"a":{}}}`, true},
		{`{"anyOf":[{"type":"object"},{"const":{"a":1}}]}`, true},
		{`{"$defs":{"o":{"type":"object"}},"$ref":"#/$defs/o"}`, true},
		{`{}`, false},
		{`{"type":"string"}`, false},
		{`{"type":["object","null"]}`, false},
		{`{"enum":[{"a":1},[1]]}`, false},
	} {
		s, err := CompileSchema([]byte(tc.schema))
		require.NoError(t, err)
		require.Equal(t, tc.want, s.OnlyObjects(), tc.schema)
	}
}

// TestKeySpellings: where declared properties and additional ones mix, a
// key cannot spell a declared name another way ("\u0061" for "a", "\/"
// for "/"): it passed for an undeclared key, so its value escaped the
// declared schema and the name could come twice.
func TestKeySpellings(t *testing.T) {
	for _, tc := range []struct {
		schema    string
		good, bad []string
	}{
		{`{"type":"object","properties":{"a":{"type":"integer"},"x/y":{"type":"null"}},"required":["a"],"additionalProperties":{"type":"string"}}`,
			[]string{`{"a":1,"b":"s","x/y":null}`, `{"a":1,"q\"\n":"s"}`},
			[]string{`{"\u0061":"s","a":1}`, `{"a":1,"\u0061":"s"}`, `{"a":1,"x\/y":"s"}`, `{"a":1,"\u00e9":"s"}`}},
		// With no declared names, or none undeclared allowed, any spelling is one key.
		{`{"type":"object","additionalProperties":{"type":"integer"}}`, []string{`{"\u0061":1,"x\/y":2}`}, nil},
	} {
		s, err := CompileSchema([]byte(tc.schema))
		require.NoError(t, err)
		requireMatches(t, s, tc.good, tc.bad)
	}
	// A declared name that only a \u escape can spell (a control
	// character) could not be written beside undeclared keys: refused,
	// naming it; with no undeclared keys it is written as declared.
	_, err := CompileSchema([]byte(`{"type":"object","properties":{"a\u0001":{"type":"integer"}},"required":["a\u0001"],"additionalProperties":true}`))
	require.ErrorIs(t, err, ErrUnsupported)
	require.ErrorContains(t, err, `"a\x01"`)
	s, err := CompileSchema([]byte(`{"type":"object","properties":{"a\u0001":{"type":"integer"}},"required":["a\u0001"],"additionalProperties":false}`))
	require.NoError(t, err)
	requireMatches(t, s, []string{`{"a\u0001":1}`}, []string{`{}`})
}

// TestFalseSubschemas: a property whose schema is false must be absent,
// and items false allows only the empty array; both were refused as
// "nothing matches", which holds only where a value must be there.
func TestFalseSubschemas(t *testing.T) {
	for _, tc := range []struct {
		schema    string
		good, bad []string
		err       error
		text      string
	}{
		{schema: `{"type":"object","properties":{"a":{"type":"integer"},"secret":false}}`, good: []string{`{}`, `{"a":1}`}, bad: []string{`{"secret":1}`}},
		{schema: `{"type":"array","items":false}`, good: []string{`[]`}, bad: []string{`[1]`, `[null]`}},
		{schema: `{"type":"object","properties":{"a":false},"required":["a"]}`, err: ErrBadSchema, text: `"a", whose schema is false`},
		{schema: `{"type":"object","properties":{"a":false},"additionalProperties":true}`, err: ErrUnsupported, text: "#/properties/a is false"},
		{schema: `{"type":"array","items":false,"minItems":1}`, err: ErrBadSchema, text: "items is false"},
	} {
		s, err := CompileSchema([]byte(tc.schema))
		if tc.err != nil {
			require.ErrorIs(t, err, tc.err, tc.schema)
			require.Contains(t, err.Error(), tc.text)
			continue
		}
		require.NoError(t, err, tc.schema)
		requireMatches(t, s, tc.good, tc.bad)
	}
}

// TestEmptyProperties: an empty properties object declares that there are
// no properties (additionalProperties defaults to false beside it, as
// with any properties); only an absent one lets undeclared keys in.
func TestEmptyProperties(t *testing.T) {
	checkMatches(t, `{"type":"object","properties":{}}`, []string{`{}`, `{ }`}, []string{`{"a":1}`})
	checkMatches(t, `{"type":"object"}`, []string{`{}`, `{"a":1}`}, nil)
	checkMatches(t, `{"type":"object","properties":{},"additionalProperties":true}`, []string{`{"a":1}`}, nil)
}

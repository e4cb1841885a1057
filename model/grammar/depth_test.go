package grammar

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pydanticChain is the schema Pydantic writes for n models each holding
// an Optional of the next ($defs, a property, anyOf with null, $ref),
// the last one an integer field: documents nest n+1 levels.
func pydanticChain(n int) string {
	var defs []string
	for i := range n {
		if i == n-1 {
			defs = append(defs, fmt.Sprintf(`"M%d":{"title":"M%d","type":"object","properties":{"v":{"type":"integer"}},"required":["v"]}`, i, i))
			continue
		}
		defs = append(defs, fmt.Sprintf(`"M%d":{"title":"M%d","type":"object","properties":{"c":{"anyOf":[{"$ref":"#/$defs/M%d"},{"type":"null"}],"default":null}},"required":["c"]}`, i, i, i+1))
	}
	return `{"$defs":{` + strings.Join(defs, ",") + `},"$ref":"#/$defs/M0"}`
}

// TestNestingCountsDocumentLevels: the nesting limit counts the levels of
// the documents (objects and arrays within each other), not the $ref and
// anyOf the schema goes through to describe them.
func TestNestingCountsDocumentLevels(t *testing.T) {
	for _, tc := range []struct {
		name, schema string
		err          string // "" compiles
	}{
		{"40 models chained by Optional $ref", pydanticChain(40), ""},
		{"62 models: 63 levels", pydanticChain(62), ""},
		{"63 models: 64 levels", pydanticChain(63), "nest up to 64 levels"},
		{"arrays 63 deep", strings.Repeat(`{"type":"array","items":`, 63) + `{"type":"null"}` + strings.Repeat(`}`, 63), "nest up to 64 levels"},
		{"arrays 62 deep", strings.Repeat(`{"type":"array","items":`, 62) + `{"type":"null"}` + strings.Repeat(`}`, 62), ""},
		{"a recursion that must nest 64 levels", `{"$defs":{"a":{"type":"array","minItems":1,"items":{"$ref":"#/$defs/b"}},"b":{"anyOf":[{"$ref":"#/$defs/a"},` +
			strings.Repeat(`{"type":"array","minItems":1,"items":`, 63) + `{"type":"null"}` + strings.Repeat(`}`, 63) + `]}},"$ref":"#/$defs/a"}`, "every document of the schema nests more than 63 levels"},
		{"schemas within schemas without end", strings.Repeat(`{"anyOf":[`, 600) + `{"type":"null"}` + strings.Repeat(`]}`, 600), "levels of schemas within schemas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := CompileSchema([]byte(tc.schema))
			if tc.err != "" {
				require.ErrorIs(t, err, ErrUnsupported)
				require.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, s)
		})
	}
	// The deepest document of the 62-model chain is written.
	s, err := CompileSchema([]byte(pydanticChain(62)))
	require.NoError(t, err)
	doc := strings.Repeat(`{"c":`, 61) + `{"v":1}` + strings.Repeat(`}`, 61)
	m := s.NewMatcher(nil)
	require.NoError(t, m.Write([]byte(doc)))
	require.True(t, m.Done())
}

// TestRecursionStopsAtTheLimit: a recursive schema is followed to the
// nesting limit and no further, and the output never reaches a prefix it
// cannot finish there: a model that always opens another level is steered
// to the way out (null, an empty array, closing) and the mask always
// leaves a token, until the document is complete.
func TestRecursionStopsAtTheLimit(t *testing.T) {
	for _, tc := range []struct {
		name, schema string
		pieces       []string // by preference: the first allowed is taken
	}{
		{"nullable linked list", `{"$defs":{"n":{"type":"object","properties":{"next":{"anyOf":[{"$ref":"#/$defs/n"},{"type":"null"}]}},"required":["next"],"additionalProperties":false}},"$ref":"#/$defs/n"}`,
			[]string{`{"next":`, `{`, `"next"`, `:`, `null`, `}`}},
		{"optional child", `{"$defs":{"n":{"type":"object","properties":{"a":{"type":"integer"},"kid":{"$ref":"#/$defs/n"}},"required":["a"],"additionalProperties":false}},"$ref":"#/$defs/n"}`,
			[]string{`{"kid":`, `{"a":1,"kid":`, `{"a":1`, `{`, `"a":1`, `,`, `"kid":`, `}`}},
		{"tree of arrays", `{"$defs":{"t":{"type":"array","items":{"$ref":"#/$defs/t"}}},"$ref":"#/$defs/t"}`,
			[]string{`[[`, `[`, `]`, `,`}},
		{"json_object", "", []string{`{"a":[`, `{"a":{`, `[`, `{`, `"a":`, `1`, `]`, `}`, `,`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := AnyObject()
			if tc.schema != "" {
				var err error
				s, err = CompileSchema([]byte(tc.schema))
				require.NoError(t, err)
			}
			v := NewVocab(append([]string{""}, tc.pieces...), []int32{0})
			m := s.NewMatcher(v)
			var out strings.Builder
			for step := 0; !m.Done(); step++ {
				require.Less(t, step, 1000, "no end: %s", out.String())
				bits := m.Allowed()
				pick := -1
				for id := 1; id < len(v.pieces) && pick < 0; id++ {
					if bits[id>>6]>>(id&63)&1 != 0 {
						pick = id
					}
				}
				if pick < 0 && m.CanEnd() {
					break
				}
				require.GreaterOrEqual(t, pick, 0, "no token allowed after %s", out.String())
				require.NoError(t, m.Accept(int32(pick)))
				out.WriteString(v.pieces[pick])
			}
			var doc any
			require.NoError(t, json.Unmarshal([]byte(out.String()), &doc), out.String())
			depth, most := 0, 0
			for _, c := range out.String() {
				switch c {
				case '{', '[':
					depth++
					most = max(most, depth)
				case '}', ']':
					depth--
				}
			}
			// The document's values nest maxDepth-1 levels at most (the
			// innermost may be a scalar): the limit is reached, not passed.
			require.True(t, most == maxDepth-1 || most == maxDepth-2, "%d levels: %s", most, out.String())
		})
	}
}

// TestRebaseDeep: Rebase reaches every $ref the compiler follows: one
// deeper than Rebase walked kept naming the larger schema's places (its
// $defs, here none) once embedded.
func TestRebaseDeep(t *testing.T) {
	const levels = 300 // schema levels, under maxSchemaNesting
	params := `{"type":"object","properties":{"x":` + strings.Repeat(`{"anyOf":[`, levels) + `{"$ref":"#/$defs/D"}` +
		strings.Repeat(`]}`, levels) + `},"$defs":{"D":{"type":"integer"}}}`
	_, err := CompileSchema([]byte(params))
	require.NoError(t, err)
	rebased, err := Rebase([]byte(params), "#/properties/args")
	require.NoError(t, err)
	s, err := CompileSchema([]byte(`{"type":"object","properties":{"args":` + string(rebased) + `},"required":["args"]}`))
	require.NoError(t, err)
	requireMatches(t, s, []string{`{"args":{"x":1}}`}, []string{`{"args":{"x":"1"}}`})
}

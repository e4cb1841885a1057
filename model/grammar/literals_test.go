package grammar

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLiteralsMeetTheirSiblings: the values of an enum or const must meet
// every keyword beside them, as a validator checks both: properties and
// required, items, an anyOf; the values that do not were written as
// they are.
func TestLiteralsMeetTheirSiblings(t *testing.T) {
	for _, tc := range []struct {
		schema    string
		good, bad []string
	}{
		{`{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"enum":[{"a":1},{"b":1},{"a":"x"}]}`,
			[]string{`{"a":1}`}, []string{`{"b":1}`, `{"a":"x"}`}},
		{`{"type":"array","items":{"type":"string"},"enum":[["x","y"],[1],[]]}`, []string{`["x","y"]`, `[]`}, []string{`[1]`}},
		{`{"enum":[1,"a",null],"anyOf":[{"type":"string"},{"type":"null"}]}`, []string{`"a"`, `null`}, []string{`1`}},
		{`{"const":{"k":[1,2]},"properties":{"k":{"type":"array","maxItems":2}}}`, []string{`{"k":[1,2]}`}, []string{`{"k":[1]}`}},
		// Nested: the inner enum is filtered before the outer reads it.
		{`{"type":"object","properties":{"e":{"enum":["a",1],"type":"string"}},"enum":[{"e":"a"},{"e":1}]}`, []string{`{"e":"a"}`}, []string{`{"e":1}`}},
	} {
		checkMatches(t, tc.schema, tc.good, tc.bad)
	}
	for _, tc := range []struct{ schema, names string }{
		{`{"type":"object","required":["a"],"properties":{"a":{}},"const":{"b":1}}`, "#/const: no value meets the keywords beside it"},
		{`{"enum":[1,2],"anyOf":[{"type":"string"}]}`, "#/enum: no value meets"},
	} {
		_, err := CompileSchema([]byte(tc.schema))
		require.ErrorIs(t, err, ErrBadSchema, tc.schema)
		require.Contains(t, err.Error(), tc.names, tc.schema)
	}
}

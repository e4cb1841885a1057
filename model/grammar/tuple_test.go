package grammar

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPrefixItems: prefixItems (Pydantic's tuple[int, str], NamedTuple)
// give each position its schema, items those after, and a false item
// ends the array there.
func TestPrefixItems(t *testing.T) {
	for _, tc := range []struct {
		schema    string
		good, bad []string
	}{
		// Pydantic's tuple[int, str].
		{`{"type":"array","prefixItems":[{"type":"integer"},{"type":"string"}],"minItems":2,"maxItems":2}`,
			[]string{`[1,"a"]`, `[ -3 , "" ]`}, []string{`[1]`, `["a",1]`, `[1,"a",2]`, `[]`, `[1,2]`}},
		// tuple[int, *tuple[str, ...]]: the rest are items.
		{`{"type":"array","prefixItems":[{"type":"integer"}],"items":{"type":"string"}}`,
			[]string{`[]`, `[1]`, `[1,"a"]`, `[1,"a","b","c"]`}, []string{`["a"]`, `[1,2]`, `[1,"a",3]`}},
		// Without items, any value follows the prefix.
		{`{"prefixItems":[{"const":"x"},{"type":"boolean"}]}`, []string{`["x"]`, `["x",true,1,null]`}, []string{`["y"]`, `["x",1]`}},
		{`{"type":"array","prefixItems":[{"type":"integer"},{"type":"null"}],"items":false}`, []string{`[]`, `[1]`, `[1,null]`}, []string{`[1,null,2]`}},
		{`{"type":"array","prefixItems":[{"type":"integer"},false]}`, []string{`[1]`}, []string{`[1,2]`}},
		{`{"type":"array","prefixItems":[{"type":"integer"},{"type":"integer"},{"type":"integer"}],"maxItems":2}`, []string{`[1,2]`}, []string{`[1,2,3]`}},
		{`{"type":"object","properties":{"p":{"$ref":"#/$defs/P"}},"required":["p"],"$defs":{"P":{"type":"array","prefixItems":[{"type":"number"},{"type":"number"}],"minItems":2,"maxItems":2}}}`,
			[]string{`{"p":[1.5,-2]}`}, []string{`{"p":[1.5]}`, `{"p":[1,2,3]}`}},
	} {
		checkMatches(t, tc.schema, tc.good, tc.bad)
	}
	for _, tc := range []struct{ schema, names string }{
		{`{"type":"array","prefixItems":{"type":"integer"}}`, "prefixItems must be an array"},
		{`{"type":"array","prefixItems":[{"type":"integer"}],"items":false,"minItems":2}`, "items is false and minItems is 2"},
		{`{"type":"array","prefixItems":[false],"minItems":1}`, "prefixItems/0 is false"},
	} {
		_, err := CompileSchema([]byte(tc.schema))
		require.ErrorIs(t, err, ErrBadSchema, tc.schema)
		require.Contains(t, err.Error(), tc.names, tc.schema)
	}
	// A discriminated union of tuples: disjoint by their first position.
	_, err := CompileSchema([]byte(`{"oneOf":[{"type":"array","prefixItems":[{"const":"a"},{"type":"integer"}],"minItems":2},{"type":"array","prefixItems":[{"const":"b"}],"minItems":1}]}`))
	require.NoError(t, err)
	_, err = CompileSchema([]byte(`{"oneOf":[{"type":"array","prefixItems":[{"const":"a"}],"minItems":1},{"type":"array","items":{"type":"string"},"minItems":1}]}`))
	require.ErrorIs(t, err, ErrUnsupported)
}

// TestPrefixItemsGeneration: sampled under the mask, a tuple's positions
// hold their own types.
func TestPrefixItemsGeneration(t *testing.T) {
	v := vocabFile(t, "ggml-vocab-llama-spm.gguf")
	rng := rand.New(rand.NewPCG(5, 6))
	s, err := CompileSchema([]byte(`{"type":"array","prefixItems":[{"type":"integer"},{"type":"string","maxLength":4},{"type":"boolean"}],"minItems":3,"maxItems":3}`))
	require.NoError(t, err)
	for range 20 {
		out := sample(t, s, v, rng)
		var tuple []any
		d := json.NewDecoder(strings.NewReader(out))
		d.UseNumber()
		require.NoError(t, d.Decode(&tuple), out)
		require.Len(t, tuple, 3, out)
		_, err := tuple[0].(json.Number).Int64()
		require.NoError(t, err, out)
		require.IsType(t, "", tuple[1], out)
		require.IsType(t, true, tuple[2], out)
	}
}

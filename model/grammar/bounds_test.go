package grammar

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNumberBounds: minimum, maximum and their exclusive forms bound an
// integer or a number exactly (Pydantic's Field(ge=, le=, gt=, lt=),
// conint, confloat): every value of the range is written and none outside
// it, and a digit that leaves no value in range is refused where it comes.
func TestNumberBounds(t *testing.T) {
	for _, tc := range []struct {
		schema    string
		good, bad []string
	}{
		{`{"type":"integer","minimum":0,"maximum":150}`, []string{`0`, `7`, `150`, `99`, `-0`}, []string{`-1`, `151`, `1500`, `01`}},
		{`{"type":"integer","exclusiveMinimum":0}`, []string{`1`, `9999999999999999`}, []string{`0`, `-3`, `-0`}},
		{`{"type":"integer","exclusiveMaximum":-5}`, []string{`-6`, `-9999999999999999`}, []string{`-5`, `0`, `5`}},
		{`{"type":"integer","minimum":10,"maximum":19}`, []string{`10`, `19`}, []string{`1`, `9`, `20`, `100`}},
		{`{"type":"integer","minimum":-12,"maximum":-3}`, []string{`-3`, `-12`, `-10`}, []string{`-2`, `-13`, `-1`, `0`, `3`}},
		{`{"type":"integer","minimum":0.5,"maximum":2.5}`, []string{`1`, `2`}, []string{`0`, `3`}},
		{`{"type":"integer","minimum":1e2,"maximum":1E3}`, []string{`100`, `1000`}, []string{`99`, `1001`}},
		{`{"type":"integer","minimum":3,"exclusiveMinimum":true}`, []string{`4`}, []string{`3`}}, // draft 4
		{`{"type":"integer","minimum":3,"exclusiveMinimum":5}`, []string{`6`}, []string{`5`, `4`}},
		{`{"type":["integer","null"],"minimum":1}`, []string{`1`, `null`}, []string{`0`}},
		{`{"anyOf":[{"type":"integer","minimum":0},{"type":"null"}]}`, []string{`3`, `null`}, []string{`-3`}},
		{`{"type":"integer","minimum":5,"enum":[1,5,7,"x"]}`, []string{`5`, `7`}, []string{`1`, `"x"`}},
		{`{"type":"number","maximum":2,"enum":[1.5,2.5]}`, []string{`1.5`}, []string{`2.5`}},
		{`{"type":"number","minimum":0,"maximum":1}`, []string{`0`, `1`, `0.5`, `0.999999999`, `1.0`, `1.000`, `-0`, `-0.0`}, []string{`1.001`, `-0.1`, `2`, `10`, `1e0`, `0.1234567891`, `01`}},
		{`{"type":"number","exclusiveMinimum":0}`, []string{`0.000000001`, `3`, `999999999.5`}, []string{`0`, `0.0`, `-1`, `0.0000000001`, `1000000000`}},
		{`{"type":"number","exclusiveMinimum":-1.5,"exclusiveMaximum":-1.25}`, []string{`-1.3`, `-1.4999`}, []string{`-1.5`, `-1.25`, `-1.2`, `-1`, `-2`}},
		{`{"type":"number","minimum":0.1,"maximum":0.1}`, []string{`0.1`, `0.10`}, []string{`0.11`, `0.09`, `1`}},
		{`{"type":"number","minimum":100,"maximum":250.5}`, []string{`100`, `250.5`, `199.99`}, []string{`99.9`, `250.51`, `25`, `1000`}},
		// multipleOf (Pydantic's Field(multiple_of=)), alone or with bounds,
		// on integers and numbers (in fixed point: 0.01, 1/3 has no such).
		{`{"type":"integer","multipleOf":5}`, []string{`0`, `5`, `-15`, `1000`}, []string{`1`, `-7`, `12`}},
		{`{"type":"integer","multipleOf":7,"minimum":10,"maximum":30}`, []string{`14`, `21`, `28`}, []string{`7`, `35`, `20`}},
		{`{"type":"integer","multipleOf":2.5}`, []string{`5`, `10`, `0`}, []string{`2`, `3`, `7`}},
		{`{"type":"number","multipleOf":0.01,"minimum":0}`, []string{`0`, `1.5`, `2.25`, `3.10`}, []string{`1.005`, `0.001`, `-1`}},
		{`{"type":"number","multipleOf":0.5,"exclusiveMaximum":2}`, []string{`1.5`, `-3`, `0.5`}, []string{`2`, `1.25`, `1.75`}},
		{`{"type":"number","multipleOf":3,"enum":[3,4,6.0]}`, []string{`3`, `6.0`}, []string{`4`}},
		{`{"type":"object","properties":{"age":{"type":"integer","minimum":0,"maximum":150}},"required":["age"],"additionalProperties":false}`,
			[]string{`{"age":42}`, `{"age": 150 }`}, []string{`{"age":151}`, `{"age":-1}`}},
	} {
		checkMatches(t, tc.schema, tc.good, tc.bad)
	}
	// Refused where it comes: "2" cannot begin a value of 10..19.
	s, err := CompileSchema([]byte(`{"type":"integer","minimum":10,"maximum":19}`))
	require.NoError(t, err)
	require.ErrorIs(t, s.NewMatcher(nil).Write([]byte(`2`)), ErrRejected)

	for _, tc := range []struct {
		schema string
		want   error
		names  string
	}{
		{`{"type":"number","minimum":1e9}`, ErrBadSchema, "no number of at most 9 digits before and after its point"},
		{`{"type":"number","exclusiveMinimum":0,"maximum":1e-10}`, ErrBadSchema, "nothing matches"},
		{`{"minimum":0}`, ErrUnsupported, "without a type"},
		{`{"type":"integer","minimum":"0"}`, ErrBadSchema, "minimum must be a number"},
		{`{"type":"integer","minimum":3,"maximum":2}`, ErrBadSchema, "nothing matches"},
		{`{"type":"integer","minimum":2.2,"maximum":2.8}`, ErrBadSchema, "nothing matches"},
		{`{"type":"integer","minimum":1e20}`, ErrBadSchema, "nothing matches"},
		{`{"type":"integer","multipleOf":0}`, ErrBadSchema, "multipleOf must be greater than 0"},
		{`{"type":"integer","multipleOf":5,"minimum":1,"maximum":4}`, ErrBadSchema, "nothing matches"},
		{`{"type":"integer","uniqueItems":true}`, ErrUnsupported, `"uniqueItems"`},
	} {
		_, err := CompileSchema([]byte(tc.schema))
		require.ErrorIs(t, err, tc.want, tc.schema)
		require.Contains(t, err.Error(), tc.names, tc.schema)
	}
}

// TestBoundsGeneration: sampling under the mask, any allowed token at
// random, writes numbers within the bounds, over a real vocabulary.
func TestBoundsGeneration(t *testing.T) {
	v := vocabFile(t, "ggml-vocab-llama-spm.gguf")
	rng := rand.New(rand.NewPCG(3, 4))
	for _, r := range [][2]int64{{0, 150}, {-40, -7}, {1000, 1005}, {-3, 3}, {7, 7}} {
		s, err := CompileSchema([]byte(`{"type":"array","minItems":1,"maxItems":1,"items":{"type":"integer","minimum":` +
			strconv.FormatInt(r[0], 10) + `,"maximum":` + strconv.FormatInt(r[1], 10) + `}}`))
		require.NoError(t, err)
		for range 20 {
			out := sample(t, s, v, rng)
			n, err := strconv.ParseInt(strings.Trim(out, "[] \n\t"), 10, 64)
			require.NoError(t, err, out)
			require.True(t, n >= r[0] && n <= r[1], "%d outside %v", n, r)
		}
	}
	// Multiples of 7 within 100..200: the digits must head for one.
	s, err := CompileSchema([]byte(`{"type":"array","minItems":1,"maxItems":1,"items":{"type":"integer","multipleOf":7,"minimum":100,"maximum":200}}`))
	require.NoError(t, err)
	for range 20 {
		out := sample(t, s, v, rng)
		n, err := strconv.ParseInt(strings.Trim(out, "[] \n\t"), 10, 64)
		require.NoError(t, err, out)
		require.True(t, n >= 100 && n <= 200 && n%7 == 0, out)
	}
	for _, r := range [][2]float64{{0, 1}, {-2.5, -2.25}, {0.001, 0.002}, {100, 1e6}} {
		s, err := CompileSchema([]byte(`{"type":"array","minItems":1,"maxItems":1,"items":{"type":"number","exclusiveMinimum":` +
			strconv.FormatFloat(r[0], 'g', -1, 64) + `,"maximum":` + strconv.FormatFloat(r[1], 'g', -1, 64) + `}}`))
		require.NoError(t, err)
		for range 20 {
			out := sample(t, s, v, rng)
			f, err := strconv.ParseFloat(strings.Trim(out, "[] \n\t"), 64)
			require.NoError(t, err, out)
			require.True(t, f > r[0] && f <= r[1], "%s outside (%v, %v]", out, r[0], r[1])
		}
	}
}

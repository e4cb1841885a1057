package grammar

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFormatDates: the date automaton takes exactly the days of the
// calendar (checked against Go's time package, which knows month lengths
// and leap years) in years 0001-9999, over every month and day number of
// years that decide the leap rules.
func TestFormatDates(t *testing.T) {
	d := stringFormats()["date"]
	years := []int{0, 1, 4, 99, 100, 400, 1000, 1582, 1896, 1900, 1904, 1999, 2000, 2023, 2024, 2100, 2400, 2401, 9996, 9999}
	for _, y := range years {
		for m := 0; m <= 19; m++ {
			for day := 0; day <= 39; day++ {
				s := fmt.Sprintf("%04d-%02d-%02d", y, m, day)
				_, err := time.Parse(time.DateOnly, s)
				want := err == nil && y > 0
				require.Equal(t, want, d.matches(s), s)
			}
		}
	}
	for _, s := range []string{"", "2024-01-1", "2024-01-011", "224-01-01", "2024/01/01", "2024-1-01", "+2024-01-01", "2024-01-01T"} {
		require.False(t, d.matches(s), s)
	}
}

// TestFormatTimes: time, date-time and uuid take what RFC 3339 and RFC
// 9562 write, within the ranges a reader takes, and nothing else.
func TestFormatTimes(t *testing.T) {
	for _, tc := range []struct {
		format    string
		good, bad []string
	}{
		{"time",
			[]string{"00:00:00Z", "23:59:59Z", "12:30:45.1Z", "12:30:45.123456+05:30", "01:02:03-23:59", "19:09:09+00:00"},
			[]string{"24:00:00Z", "12:60:00Z", "12:00:60Z", "12:00:00", "12:00Z", "12:00:00.Z", "12:00:00.1234567Z",
				"12:00:00+24:00", "12:00:00+05", "12:00:00+05:60", "12:00:00z", "1:00:00Z", "12:00:00 Z"}},
		{"date-time",
			[]string{"2024-02-29T23:59:59Z", "1970-01-01T00:00:00.5+01:00", "0001-12-31T12:00:00-12:00"},
			[]string{"2023-02-29T00:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01t00:00:00Z", "2024-01-01T00:00:00", "2024-01-01", "T00:00:00Z"}},
		{"uuid",
			[]string{"123e4567-e89b-12d3-a456-426614174000", "00000000-0000-0000-0000-000000000000", "ABCDEF01-2345-6789-abcd-EF0123456789"},
			[]string{"123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400", "123e4567-e89b-12d3-a456-4266141740000",
				"g23e4567-e89b-12d3-a456-426614174000", "{123e4567-e89b-12d3-a456-426614174000}"}},
	} {
		d := stringFormats()[tc.format]
		for _, s := range tc.good {
			require.True(t, d.matches(s), "%s %q", tc.format, s)
		}
		for _, s := range tc.bad {
			require.False(t, d.matches(s), "%s %q", tc.format, s)
		}
	}
}

// TestFormatSchemas: a schema's format constrains its strings through the
// matcher, whatever else surrounds them (nullable, enum, lengths, no
// type), and formats the matcher cannot enforce are refused by name.
func TestFormatSchemas(t *testing.T) {
	for _, tc := range []struct {
		schema    string
		good, bad []string
	}{
		{`{"type":"string","format":"date-time"}`, []string{`"2024-05-01T10:00:00Z"`}, []string{`"2024-05-01"`, `"now"`, `""`, `"2024-05-01T10:00:00Z "`}},
		{`{"type":"string","format":"date"}`, []string{`"2024-02-29"`}, []string{`"2023-02-29"`, `"2024-02-29T00:00:00Z"`}},
		{`{"type":"string","format":"uuid"}`, []string{`"123e4567-e89b-12d3-a456-426614174000"`}, []string{`"123e4567"`}},
		// Pydantic's Optional[datetime].
		{`{"anyOf":[{"type":"string","format":"date-time"},{"type":"null"}]}`, []string{`null`, `"2024-05-01T10:00:00.25-07:00"`}, []string{`"x"`}},
		{`{"type":["string","integer"],"format":"time"}`, []string{`5`, `"10:00:00Z"`}, []string{`"10:00"`}},
		// No type: any value, but a string has the format.
		{`{"format":"date"}`, []string{`1`, `null`, `[]`, `"2024-01-31"`}, []string{`"2024-01-32"`}},
		// A format on a type it does not apply to constrains nothing.
		{`{"type":"integer","format":"date"}`, []string{`20240101`}, []string{`"2024-01-01"`}},
		{`{"type":"string","format":"date","enum":["2024-01-01","2024-13-01","x"]}`, []string{`"2024-01-01"`}, []string{`"2024-13-01"`, `"x"`}},
		// Pydantic's SecretStr, bytes and Json[int] fields: any string.
		{`{"type":"object","properties":{"p":{"type":"string","format":"password","writeOnly":true},"b":{"type":"string","format":"binary"},` +
			`"j":{"type":"string","contentMediaType":"application/json","contentSchema":{"type":"integer"}}},"required":["p","b","j"]}`,
			[]string{`{"p":"s3cret","b":"\u00ff","j":"1"}`}, []string{`{"p":1,"b":"","j":""}`}},
		{`{"type":"string","format":"time","maxLength":9}`, []string{`"10:00:00Z"`}, []string{`"10:00:00.1Z"`}},
		{`{"type":"object","properties":{"at":{"type":"string","format":"date-time"},"id":{"type":"string","format":"uuid"}},"required":["at","id"],"additionalProperties":false}`,
			[]string{`{"id":"00000000-0000-0000-0000-000000000000","at":"2024-05-01T10:00:00Z"}`}, []string{`{"id":"0","at":"2024-05-01T10:00:00Z"}`}},
	} {
		checkMatches(t, tc.schema, tc.good, tc.bad)
	}
	for _, tc := range []struct {
		schema string
		want   error
		names  string
	}{
		{`{"type":"string","format":"email"}`, ErrUnsupported, `format "email" at # (supported formats: binary, date, date-time, duration, ipv4, ipv6, password, time, uuid)`},
		{`{"type":"object","properties":{"h":{"type":"string","format":"hostname"}}}`, ErrUnsupported, `format "hostname" at #/properties/h`},
		{`{"type":"string","format":"idn-hostname"}`, ErrUnsupported, `"idn-hostname"`},
		{`{"type":"string","format":"uri"}`, ErrUnsupported, `"uri"`},
		{`{"type":"integer","format":"int32"}`, ErrUnsupported, `"int32"`},
		{`{"anyOf":[{"type":"string","format":"iri"},{"type":"null"}]}`, ErrUnsupported, `"iri"`},
		{`{"type":"string","format":7}`, ErrBadSchema, "format must be a string"},
		{`{"type":"string","format":"date","const":"2024-02-30"}`, ErrBadSchema, "nothing matches"},
	} {
		_, err := CompileSchema([]byte(tc.schema))
		require.ErrorIs(t, err, tc.want, tc.schema)
		require.Contains(t, err.Error(), tc.names, tc.schema)
	}
}

// TestFormatGeneration: sampling under the mask from a real vocabulary,
// always some allowed token at random, writes strings of the format (as
// Go's time package and a uuid pattern read them), and masks stay cached
// by state.
func TestFormatGeneration(t *testing.T) {
	v := vocabFile(t, "ggml-vocab-llama-spm.gguf")
	// RFC 3339's duration grammar, days and time.
	durationRE := regexp.MustCompile(`^P(\d+D(T(\d+H(\d+M(\d+S)?)?|\d+M(\d+S)?|\d+S))?|T(\d+H(\d+M(\d+S)?)?|\d+M(\d+S)?|\d+S))$`)
	uuidRE := regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	check := map[string]func(string) error{
		"date":      func(s string) error { _, err := time.Parse(time.DateOnly, s); return err },
		"date-time": func(s string) error { _, err := time.Parse(time.RFC3339Nano, s); return err },
		"time":      func(s string) error { _, err := time.Parse("15:04:05Z07:00", s); return err },
		"ipv4": func(s string) error {
			if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
				return fmt.Errorf("not an ipv4 address")
			}
			return nil
		},
		"ipv6": func(s string) error {
			if a, err := netip.ParseAddr(s); err != nil || !a.Is6() {
				return fmt.Errorf("not an ipv6 address")
			}
			return nil
		},
		"duration": func(s string) error {
			if !durationRE.MatchString(s) {
				return fmt.Errorf("not a duration")
			}
			return nil
		},
		"uuid": func(s string) error {
			if !uuidRE.MatchString(s) {
				return fmt.Errorf("not a uuid")
			}
			return nil
		},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for format, ok := range check {
		s, err := CompileSchema([]byte(`{"type":"string","format":"` + format + `"}`))
		require.NoError(t, err)
		for range 20 {
			doc := strings.TrimLeft(sample(t, s, v, rng), " \n\t") // the root allows whitespace before the value
			require.True(t, strings.HasPrefix(doc, `"`) && strings.HasSuffix(doc, `"`) && len(doc) > 2, doc)
			require.NoError(t, ok(doc[1:len(doc)-1]), "%s: %s", format, doc)
		}
	}
}

// checkMatches compiles schema and checks its matcher with
// requireMatches.
func checkMatches(t *testing.T, schema string, good, bad []string) {
	t.Helper()
	s, err := CompileSchema([]byte(schema))
	require.NoError(t, err, schema)
	t.Run(schema, func(t *testing.T) { requireMatches(t, s, good, bad) })
}

// sample generates a document of s over the vocabulary v, taking any
// allowed token at random, until the document is complete; the mask must
// always allow a token before then.
func sample(t *testing.T, s *Schema, v *Vocab, rng *rand.Rand) string {
	t.Helper()
	m := s.NewMatcher(v)
	var out strings.Builder
	for !m.Done() && !m.CanEnd() {
		bits := m.Allowed()
		var ids []int32
		for id := range v.pieces {
			if bits[id>>6]>>(id&63)&1 != 0 {
				ids = append(ids, int32(id))
			}
		}
		require.NotEmpty(t, ids, "no token allowed after %q", out.String())
		id := ids[rng.IntN(len(ids))]
		require.NoError(t, m.Accept(id))
		out.WriteString(v.pieces[id])
	}
	return out.String()
}

// TestFormatDuration: RFC 3339's durations in days and time, as its
// grammar orders them, and nothing else.
func TestFormatDuration(t *testing.T) {
	d := stringFormats()["duration"]
	for _, s := range []string{"P1D", "PT1H", "PT90M", "PT5S", "P3DT12H30M5S", "PT1H30M", "PT2M10S", "P0D", "P999999999D"} {
		require.True(t, d.matches(s), s)
	}
	for _, s := range []string{"", "P", "PT", "P1DT", "1D", "P1H", "PT1D", "PT1H30S", "PT1S2M", "P1Y", "P1M", "P1W", "PT1.5S", "P-1D", "P1000000000D", "pt1h"} {
		require.False(t, d.matches(s), s)
	}
}

// TestFormatIP: ipv4 takes the dotted quads of 0-255 without leading
// zeros, exactly as Go's netip reads them; ipv6 its full form.
func TestFormatIP(t *testing.T) {
	d := stringFormats()["ipv4"]
	for a := range 300 {
		for _, s := range []string{fmt.Sprintf("%d.0.10.255", a), fmt.Sprintf("1.%d.3.4", a), fmt.Sprintf("0%d.1.1.1", a)} {
			addr, err := netip.ParseAddr(s)
			require.Equal(t, err == nil && addr.Is4(), d.matches(s), s)
		}
	}
	for _, s := range []string{"1.2.3", "1.2.3.4.5", "1..2.3", "", "1.2.3.4 ", "256.1.1.1", "1.2.3.04"} {
		require.False(t, d.matches(s), s)
	}
	d = stringFormats()["ipv6"]
	for _, s := range []string{"2001:db8:0:0:0:0:0:1", "0:0:0:0:0:0:0:0", "FFFF:ffff:AbCd:1:22:333:4444:0"} {
		require.True(t, d.matches(s), s)
		_, err := netip.ParseAddr(s)
		require.NoError(t, err, s)
	}
	for _, s := range []string{"2001:db8::1", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "12345:0:0:0:0:0:0:0", "g:0:0:0:0:0:0:0", "1.2.3.4"} {
		require.False(t, d.matches(s), s)
	}
}

// TestFormatLengths: minLength and maxLength beside a format keep only the
// strings of the format within them, and the matcher never writes a
// prefix that no such string continues (it used to write "2024-" under
// maxLength 5 and then allow no token); none at all is ErrBadSchema.
func TestFormatLengths(t *testing.T) {
	checkMatches(t, `{"type":"string","format":"ipv4","minLength":15}`, []string{`"100.100.100.100"`}, []string{`"1.100.100.100"`, `"1.2.3.4"`})
	checkMatches(t, `{"type":"string","format":"date-time","maxLength":20}`, []string{`"2024-01-01T00:00:00Z"`}, []string{`"2024-01-01T00:00:00.5Z"`, `"2024-01-01T00:00:00+01:00"`})
	s, err := CompileSchema([]byte(`{"type":"string","format":"ipv4","minLength":15}`))
	require.NoError(t, err)
	require.ErrorIs(t, s.NewMatcher(nil).Write([]byte(`"1.`)), ErrRejected, "1. begins no address of 15 characters")

	v := vocabFile(t, "ggml-vocab-llama-spm.gguf")
	rng := rand.New(rand.NewPCG(7, 8))
	for _, schema := range []string{
		`{"type":"string","format":"ipv4","minLength":14,"maxLength":14}`,
		`{"type":"string","format":"date-time","maxLength":22}`,
		`{"type":"string","format":"duration","minLength":12}`,
	} {
		s, err := CompileSchema([]byte(schema))
		require.NoError(t, err, schema)
		var rule map[string]any
		require.NoError(t, json.Unmarshal([]byte(schema), &rule))
		for range 10 {
			doc := strings.TrimLeft(sample(t, s, v, rng), " \n\t")
			var str string
			require.NoError(t, json.Unmarshal([]byte(doc), &str), doc)
			require.True(t, stringFormats()[rule["format"].(string)].matches(str), doc)
			if lo, ok := rule["minLength"].(float64); ok {
				require.GreaterOrEqual(t, len(str), int(lo), doc)
			}
			if hi, ok := rule["maxLength"].(float64); ok {
				require.LessOrEqual(t, len(str), int(hi), doc)
			}
		}
	}
	_, err = CompileSchema([]byte(`{"type":"string","format":"date","maxLength":5}`))
	require.ErrorIs(t, err, ErrBadSchema)
	require.Contains(t, err.Error(), `no string of format "date" has a length within minLength and maxLength`)
}

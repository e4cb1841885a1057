package worker

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// The story model never writes JSON by itself: every parse below is the
// grammar's doing.
func TestResponseFormatJSONSchema(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	strict := func(doc string, v any) error {
		d := json.NewDecoder(strings.NewReader(doc))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			return err
		}
		if d.More() {
			return json.Unmarshal([]byte(`x`), v) // trailing data
		}
		return nil
	}
	cases := []struct {
		name   string
		format map[string]any
		check  func(t *testing.T, doc string)
	}{
		{"object", map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "person", "strict": true, "schema": map[string]any{
			"type": "object", "required": []string{"name", "age", "ok"},
			"properties": map[string]any{"name": map[string]any{"type": "string", "maxLength": 20}, "age": map[string]any{"type": "integer"}, "ok": map[string]any{"type": "boolean"}},
		}}}, func(t *testing.T, doc string) {
			var v struct {
				Name *string
				Age  *int
				OK   *bool `json:"ok"`
			}
			require.NoError(t, strict(doc, &v), doc)
			require.True(t, v.Name != nil && v.Age != nil && v.OK != nil, doc)
			require.LessOrEqual(t, utf8.RuneCountInString(*v.Name), 20)
		}},
		{"enum array", map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "colors", "schema": map[string]any{
			"type": "array", "items": map[string]any{"enum": []string{"red", "green", "blue"}}, "minItems": 1, "maxItems": 3,
		}}}, func(t *testing.T, doc string) {
			var v []string
			require.NoError(t, strict(doc, &v), doc)
			require.True(t, len(v) >= 1 && len(v) <= 3, doc)
			for _, c := range v {
				require.Contains(t, []string{"red", "green", "blue"}, c)
			}
		}},
		{"anyOf nested", map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "m", "schema": map[string]any{
			"type": "object", "required": []string{"v", "tags"}, "additionalProperties": false,
			"properties": map[string]any{
				"v":    map[string]any{"anyOf": []any{map[string]any{"type": "number"}, map[string]any{"type": "null"}}},
				"tags": map[string]any{"type": "array", "maxItems": 2, "items": map[string]any{"type": "string", "maxLength": 8}},
			},
		}}}, func(t *testing.T, doc string) {
			var v struct {
				V    json.RawMessage
				Tags *[]string
			}
			require.NoError(t, strict(doc, &v), doc)
			require.NotNil(t, v.Tags, doc)
			require.LessOrEqual(t, len(*v.Tags), 2)
			var f *float64
			require.NoError(t, json.Unmarshal(v.V, &f), doc)
		}},
		{"oneOf, a discriminated union", map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "pet", "schema": map[string]any{
			"oneOf": []any{
				map[string]any{"type": "object", "required": []string{"kind", "lives"}, "properties": map[string]any{"kind": map[string]any{"const": "cat"}, "lives": map[string]any{"type": "integer"}}},
				map[string]any{"type": "object", "required": []string{"kind"}, "properties": map[string]any{"kind": map[string]any{"const": "dog"}}},
			}}}}, func(t *testing.T, doc string) {
			var v struct {
				Kind  string
				Lives *int
			}
			require.NoError(t, strict(doc, &v), doc)
			require.Contains(t, []string{"cat", "dog"}, v.Kind, doc)
			require.Equal(t, v.Kind == "cat", v.Lives != nil, doc)
		}},
		// Pydantic's model_json_schema() of a model with datetime,
		// Optional[date], UUID, time and timedelta fields.
		{"string formats", map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "Event", "strict": true, "schema": map[string]any{
			"title": "Event", "type": "object", "additionalProperties": false, "required": []string{"at", "day", "id", "opens", "lasts"},
			"properties": map[string]any{
				"lasts": map[string]any{"title": "Lasts", "type": "string", "format": "duration"},
				"at":    map[string]any{"title": "At", "type": "string", "format": "date-time"},
				"day":   map[string]any{"title": "Day", "anyOf": []any{map[string]any{"type": "string", "format": "date"}, map[string]any{"type": "null"}}},
				"id":    map[string]any{"title": "Id", "type": "string", "format": "uuid"},
				"opens": map[string]any{"title": "Opens", "type": "string", "format": "time"},
			},
		}}}, func(t *testing.T, doc string) {
			var v struct {
				At, ID, Opens, Lasts string
				Day                  *string
			}
			require.NoError(t, strict(doc, &v), doc)
			_, err := time.Parse(time.RFC3339Nano, v.At)
			require.NoError(t, err, doc)
			if v.Day != nil {
				_, err = time.Parse(time.DateOnly, *v.Day)
				require.NoError(t, err, doc)
			}
			_, err = time.Parse("15:04:05Z07:00", v.Opens)
			require.NoError(t, err, doc)
			require.Regexp(t, `^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$`, v.ID, doc)
			require.Regexp(t, `^P(\d+D(T(\d+H(\d+M(\d+S)?)?|\d+M(\d+S)?|\d+S))?|T(\d+H(\d+M(\d+S)?)?|\d+M(\d+S)?|\d+S))$`, v.Lasts, doc)
		}},
		// Pydantic's Field(ge=0, le=150), conint(gt=0, lt=10),
		// confloat(ge=0, le=1) and Field(ge=0, multiple_of=0.01).
		{"number bounds", map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "Person", "strict": true, "schema": map[string]any{
			"type": "object", "additionalProperties": false, "required": []string{"age", "count", "p", "price"},
			"properties": map[string]any{
				"age":   map[string]any{"type": "integer", "minimum": 0, "maximum": 150},
				"count": map[string]any{"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
				"p":     map[string]any{"type": "number", "minimum": 0, "maximum": 1},
				"price": map[string]any{"type": "number", "minimum": 0, "multipleOf": 0.01},
			},
		}}}, func(t *testing.T, doc string) {
			var v struct {
				Age, Count *int
				P, Price   *float64
			}
			require.NoError(t, strict(doc, &v), doc)
			require.True(t, v.Age != nil && *v.Age >= 0 && *v.Age <= 150, doc)
			require.True(t, v.Count != nil && *v.Count > 0 && *v.Count < 10, doc)
			require.True(t, v.P != nil && *v.P >= 0 && *v.P <= 1, doc)
			// A multiple of 0.01: at most two decimals, as written.
			var raw struct{ Price json.Number }
			require.NoError(t, json.Unmarshal([]byte(doc), &raw))
			require.Regexp(t, `^-?\d+(\.\d{1,2}0*)?$`, raw.Price.String(), doc) // -0.0 is 0
		}},
		// Pydantic's tuple[int, str] field.
		{"tuple", map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "T", "schema": map[string]any{
			"type": "object", "additionalProperties": false, "required": []string{"pair"},
			"properties": map[string]any{"pair": map[string]any{"type": "array", "minItems": 2, "maxItems": 2,
				"prefixItems": []any{map[string]any{"type": "integer"}, map[string]any{"type": "string", "maxLength": 10}}}},
		}}}, func(t *testing.T, doc string) {
			var v struct{ Pair []json.RawMessage }
			require.NoError(t, strict(doc, &v), doc)
			require.Len(t, v.Pair, 2, doc)
			var n int
			var str string
			require.NoError(t, json.Unmarshal(v.Pair[0], &n), doc)
			require.NoError(t, json.Unmarshal(v.Pair[1], &str), doc)
		}},
		{"json_object with a schema (llama.cpp's form)", map[string]any{"type": "json_object", "schema": map[string]any{
			"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}, "required": []string{"n"}}},
			func(t *testing.T, doc string) {
				var v struct{ N *int }
				require.NoError(t, strict(doc, &v), doc)
				require.NotNil(t, v.N, doc)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for seed, temp := range []float64{0, 1, 1, 1} {
				resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{
					"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 400,
					"temperature": temp, "seed": seed, "response_format": tc.format})
				require.Equal(t, http.StatusOK, resp.StatusCode)
				var cc ChatCompletion
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
				require.Equal(t, "stop", cc.Choices[0].FinishReason, cc.Choices[0].Message.Content)
				tc.check(t, cc.Choices[0].Message.Content)
			}
		})
	}
	// Plain json_object: any object, which this model keeps writing (keys
	// and values without end), so only the start is certain.
	resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{
		"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 30, "temperature": 0,
		"response_format": map[string]any{"type": "json_object"}})
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
	require.True(t, strings.HasPrefix(strings.TrimSpace(cc.Choices[0].Message.Content), "{"), cc.Choices[0].Message.Content)
	if cc.Choices[0].FinishReason == "stop" {
		require.True(t, json.Valid([]byte(cc.Choices[0].Message.Content)))
	}

	// Streamed, the deltas join into the same document.
	resp = post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{
		"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 400, "temperature": 0,
		"stream": true, "response_format": cases[0].format})
	var doc strings.Builder
	for _, c := range openAIStream[ChatCompletionChunk](t, resp) {
		doc.WriteString(c.Choices[0].Delta.Content)
	}
	cases[0].check(t, doc.String())
}

func TestResponseFormatErrors(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	msgs := []Message{{Role: "user", Content: "hi"}}
	for _, tc := range []struct {
		name       string
		body       map[string]any
		code, text string
	}{
		{"bounds without a type", map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{"minimum": 0}}}},
			codeUnsupportedSchema, "without a type"},
		{"pattern", map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{"type": "string", "pattern": "^a"}}}},
			codeUnsupportedSchema, `"pattern"`},
		{"format the grammar cannot enforce", map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{
			"type": "object", "properties": map[string]any{"mail": map[string]any{"type": "string", "format": "email"}}}}}},
			codeUnsupportedSchema, `format "email" at #/properties/mail`},
		{"bad type", map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{"type": "text"}}}},
			codeInvalidSchema, `"text"`},
		{"$ref loop", map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{"$ref": "#"}}}},
			codeInvalidSchema, `$ref "#" loops`},
		{"oneOf that a value can match twice", map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{
			"oneOf": []any{map[string]any{"type": "number"}, map[string]any{"type": "integer"}}}}}},
			codeUnsupportedSchema, "#/oneOf: members 0 and 1"},
		{"no schema", map[string]any{"response_format": map[string]any{"type": "json_schema"}}, "missing", "json_schema.schema"},
		{"format type", map[string]any{"response_format": map[string]any{"type": "xml"}}, "invalid_value", "xml"},
		{"top_logprobs range", map[string]any{"logprobs": true, "top_logprobs": 21}, "invalid_value", "[0, 20]"},
		{"top_logprobs alone", map[string]any{"top_logprobs": 2}, "invalid_value", "logprobs: true"},
		{"logprobs type", map[string]any{"logprobs": 3}, "invalid_type", "boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"messages": msgs, "max_tokens": 5}
			for k, v := range tc.body {
				body[k] = v
			}
			resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			var eb ErrorBody
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
			require.Equal(t, tc.code, eb.Error.Code)
			require.Contains(t, eb.Error.Message, tc.text)
		})
	}
}

func TestChatLogprobs(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	body := map[string]any{"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 12, "temperature": 0,
		"logprobs": true, "top_logprobs": 3}
	resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
	lp := cc.Choices[0].Logprobs
	require.NotNil(t, lp)
	require.Len(t, lp.Content, cc.Usage.CompletionTokens)
	var text []byte
	for _, c := range lp.Content {
		require.Len(t, c.TopLogprobs, 3)
		// Greedy: the chosen token is the most likely one.
		require.Equal(t, c.Token, c.TopLogprobs[0].Token)
		require.Equal(t, c.Logprob, c.TopLogprobs[0].Logprob)
		sum := 0.0
		for _, alt := range c.TopLogprobs {
			sum += math.Exp(float64(alt.Logprob))
		}
		require.LessOrEqual(t, sum, 1+1e-5)
		for _, b := range c.Bytes {
			text = append(text, byte(b))
		}
	}
	// The tokens' bytes make the text.
	require.Equal(t, cc.Choices[0].Message.Content, string(text))

	// Streamed: the same entries, chunk by chunk.
	body["stream"] = true
	var streamed []LogprobContent
	for _, c := range openAIStream[ChatCompletionChunk](t, post(t, testCtx(t), base+"/v1/chat/completions", body)) {
		if lp := c.Choices; len(lp) > 0 && lp[0].Logprobs != nil {
			streamed = append(streamed, lp[0].Logprobs.Content...)
		}
	}
	require.Equal(t, lp.Content, streamed)

	// Without logprobs, the field is null.
	resp = post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: "Once"}}, "max_tokens": 3})
	raw := readAll(t, resp)
	require.Contains(t, raw, `"logprobs":null`)
}

func TestCompletionLogprobs(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	resp := post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "logprobs": 2})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tc TextCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tc))
	lp := tc.Choices[0].Logprobs
	require.NotNil(t, lp)
	require.Len(t, lp.Tokens, 8)
	require.Len(t, lp.TokenLogprobs, 8)
	require.Len(t, lp.TopLogprobs, 8)
	require.True(t, slices.IsSorted(lp.TextOffset))
	for i, top := range lp.TopLogprobs {
		require.LessOrEqual(t, len(top), 2)
		require.Equal(t, lp.TokenLogprobs[i], top[lp.Tokens[i]])
	}

	// Streamed: each chunk carries its token, offsets continue.
	var tokens []string
	var offsets []int
	for _, c := range openAIStream[TextCompletion](t, post(t, testCtx(t), base+"/v1/completions",
		map[string]any{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "logprobs": 2, "stream": true})) {
		if len(c.Choices) > 0 && c.Choices[0].Logprobs != nil {
			tokens = append(tokens, c.Choices[0].Logprobs.Tokens...)
			offsets = append(offsets, c.Choices[0].Logprobs.TextOffset...)
		}
	}
	require.Equal(t, lp.Tokens, tokens)
	require.Equal(t, lp.TextOffset, offsets)

	// response_format applies to completions too (as in llama.cpp).
	resp = post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 100, "temperature": 0,
		"response_format": map[string]any{"type": "json_object", "schema": map[string]any{"type": "array", "items": map[string]any{"type": "integer"}, "minItems": 1, "maxItems": 3}}})
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tc))
	var ints []int
	require.NoError(t, json.Unmarshal([]byte(tc.Choices[0].Text), &ints), tc.Choices[0].Text)
	require.NotEmpty(t, ints)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	var b bytes.Buffer
	_, err := b.ReadFrom(resp.Body)
	require.NoError(t, err)
	return b.String()
}

// TestLogprobsWithStop: a token's text_offset is where it starts in the
// text, also when text before it is held back as a possible stop string
// (the offset was the length of the text sent so far), and the tokens a
// stop string cut from the text have no entries, in a whole answer or a
// stream (where an entry goes out with its token's first byte).
func TestLogprobsWithStop(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	body := func(extra map[string]any) map[string]any {
		b := map[string]any{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "logprobs": 1}
		maps.Copy(b, extra)
		return b
	}
	var free TextCompletion
	require.NoError(t, json.NewDecoder(post(t, testCtx(t), base+"/v1/completions", body(nil)).Body).Decode(&free))
	full := free.Choices[0].Text
	require.Greater(t, len(free.Choices[0].Logprobs.Tokens), 6)
	// Stops that begin at a token, inside one, and span several.
	fifth := free.Choices[0].Logprobs.TextOffset[4]
	for _, stop := range []string{full[fifth : fifth+4], full[fifth+1 : fifth+3], full[fifth-2 : fifth+6]} {
		t.Run(stop, func(t *testing.T) {
			want := full[:strings.Index(full, stop)]
			var tc TextCompletion
			require.NoError(t, json.NewDecoder(post(t, testCtx(t), base+"/v1/completions", body(map[string]any{"stop": stop})).Body).Decode(&tc))
			require.Equal(t, want, tc.Choices[0].Text)
			lp := tc.Choices[0].Logprobs
			off := 0
			for i, tok := range lp.Tokens {
				require.Equal(t, off, lp.TextOffset[i], "token %d %q", i, tok)
				require.Less(t, off, len(want), "token %d %q is past the text", i, tok)
				off += len(tok)
			}
			require.GreaterOrEqual(t, off, len(want), "every token of the text has its entry")

			// Streamed: the same entries, each with the chunk that
			// sends the first byte of its token.
			var offsets []int
			var text strings.Builder
			for _, c := range openAIStream[TextCompletion](t, post(t, testCtx(t), base+"/v1/completions", body(map[string]any{"stop": stop, "stream": true}))) {
				if len(c.Choices) == 0 {
					continue
				}
				if l := c.Choices[0].Logprobs; l != nil {
					offsets = append(offsets, l.TextOffset...)
					for _, o := range l.TextOffset {
						require.Less(t, o, text.Len()+len(c.Choices[0].Text), "an entry before its text")
					}
				}
				text.WriteString(c.Choices[0].Text)
			}
			require.Equal(t, want, text.String())
			require.Equal(t, lp.TextOffset, offsets)

			var cc ChatCompletion
			require.NoError(t, json.NewDecoder(post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{
				"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 24, "temperature": 0, "logprobs": true}).Body).Decode(&cc))
			content := cc.Choices[0].Message.Content
			cstop := content[len(content)/2 : len(content)/2+3]
			require.NoError(t, json.NewDecoder(post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{
				"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 24, "temperature": 0, "logprobs": true, "stop": cstop}).Body).Decode(&cc))
			got := cc.Choices[0].Message.Content
			var joined strings.Builder
			for _, e := range cc.Choices[0].Logprobs.Content {
				require.Less(t, joined.Len(), len(got), "entry %q is past the content %q", e.Token, got)
				joined.WriteString(e.Token)
			}
			require.True(t, strings.HasPrefix(joined.String(), got), "%q, %q", joined.String(), got)

			// Streamed, the same entries, none before its text.
			var streamed []LogprobContent
			var sent strings.Builder
			for _, c := range openAIStream[ChatCompletionChunk](t, post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{
				"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 24, "temperature": 0, "logprobs": true, "stop": cstop, "stream": true})) {
				if len(c.Choices) == 0 {
					continue
				}
				sent.WriteString(c.Choices[0].Delta.Content)
				if l := c.Choices[0].Logprobs; l != nil {
					streamed = append(streamed, l.Content...)
				}
			}
			require.Equal(t, got, sent.String())
			require.Equal(t, cc.Choices[0].Logprobs.Content, streamed)
		})
	}
}

// TestToolStreamLogprobsWithStop: a chat stream with tools (whose text the
// tool stream holds back) gives the same log-probability entries as the
// whole answer when a stop string cuts it: the tokens of the cut part have
// none, in the stream too (it sent them all, the stop word's included).
func TestToolStreamLogprobsWithStop(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelPath = toolsModelFile(t)
	_, base := startServer(t, cfg)
	tools := []map[string]any{{"type": "function", "function": map[string]any{"name": "add", "parameters": map[string]any{
		"type": "object", "properties": map[string]any{"a": map[string]any{"type": "integer"}}, "required": []string{"a"}}}}}
	body := func(extra map[string]any) map[string]any {
		b := map[string]any{"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 24, "temperature": 0,
			"logprobs": true, "top_logprobs": 1, "tools": tools}
		maps.Copy(b, extra)
		return b
	}
	var free ChatCompletion
	require.NoError(t, json.NewDecoder(post(t, testCtx(t), base+"/v1/chat/completions", body(nil)).Body).Decode(&free))
	full := free.Choices[0].Message.Content
	require.Greater(t, len(free.Choices[0].Logprobs.Content), 8)
	var fifth int // where the fifth token starts
	for _, e := range free.Choices[0].Logprobs.Content[:4] {
		fifth += len(e.Token)
	}
	// Stops that begin at a token, inside one, and span several.
	for _, stop := range []string{full[fifth : fifth+4], full[fifth+1 : fifth+3], full[fifth-2 : fifth+6]} {
		t.Run(stop, func(t *testing.T) {
			var cc ChatCompletion
			require.NoError(t, json.NewDecoder(post(t, testCtx(t), base+"/v1/chat/completions", body(map[string]any{"stop": stop})).Body).Decode(&cc))
			want := cc.Choices[0].Logprobs.Content
			require.Equal(t, full[:strings.Index(full, stop)], cc.Choices[0].Message.Content)
			require.Less(t, len(want), len(free.Choices[0].Logprobs.Content))

			var got []LogprobContent
			var text strings.Builder
			for _, c := range openAIStream[ChatCompletionChunk](t, post(t, testCtx(t), base+"/v1/chat/completions", body(map[string]any{"stop": stop, "stream": true}))) {
				if len(c.Choices) == 0 {
					continue
				}
				text.WriteString(c.Choices[0].Delta.Content)
				if l := c.Choices[0].Logprobs; l != nil {
					got = append(got, l.Content...)
				}
			}
			require.Equal(t, cc.Choices[0].Message.Content, text.String())
			require.Equal(t, want, got)
		})
	}
}

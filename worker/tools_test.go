package worker

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/ggufedit"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/synth"
)

func TestParseToolCalls(t *testing.T) {
	names := []string{"get_weather", "add"}
	type call struct{ name, args string }
	cases := []struct {
		name, text, content string
		calls               []call
	}{
		{"qwen one", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "",
			[]call{{"get_weather", `{"city":"Paris"}`}}},
		{"qwen two with text", "Let me check.\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
			"Let me check.", []call{{"add", `{"a":1,"b":2}`}, {"get_weather", `{}`}}},
		{"qwen unclosed at the end", "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}", "", []call{{"add", `{"a":1}`}}},
		{"qwen unknown tool", "<tool_call>\n{\"name\": \"rm\", \"arguments\": {}}\n</tool_call>", "<tool_call>\n{\"name\": \"rm\", \"arguments\": {}}\n</tool_call>", nil},
		{"qwen bad json", "<tool_call>\n{\"name\": \"add\", \"arguments\": {\n</tool_call>", "<tool_call>\n{\"name\": \"add\", \"arguments\": {\n</tool_call>", nil},
		{"llama parameters", " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", "", []call{{"get_weather", `{"city":"Oslo"}`}}},
		{"llama python tag", "<|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": 3}}", "", []call{{"add", `{"a":3}`}}},
		{"arguments not an object", `{"name": "add", "parameters": [1]}`, `{"name": "add", "parameters": [1]}`, nil},
		{"plain text", "It is sunny.", "It is sunny.", nil},
		{"qwen closing tag in an argument", "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"s\": \"a</tool_call>b\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"s\": \"</tool_call>\"}}", "",
			[]call{{"add", `{"s":"a</tool_call>b"}`}, {"add", `{"s":"</tool_call>"}`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			content, calls := ParseToolCalls(tc.text, names)
			require.Equal(t, tc.content, content)
			require.Len(t, calls, len(tc.calls))
			for i, c := range calls {
				require.Equal(t, tc.calls[i].name, c.Function.Name)
				require.Equal(t, tc.calls[i].args, c.Function.Arguments)
				require.Equal(t, "function", c.Type)
				require.True(t, strings.HasPrefix(c.ID, "call_"))
			}
		})
	}
	_, calls := ParseToolCalls(cases[1].text, names)
	require.Len(t, toolPlan{single: true}.limit(calls), 1, "parallel_tool_calls false keeps the first call")
	require.Len(t, toolPlan{}.limit(calls), 2)
	content, calls := ParseToolCalls(cases[0].text, nil)
	require.Equal(t, cases[0].text, content, "without tools nothing is a call")
	require.Nil(t, calls)
}

func TestToolStream(t *testing.T) {
	names := []string{"add"}
	cases := []struct {
		name     string
		pieces   []string
		streamed string
		rest     string
		calls    int
	}{
		{"text then call", []string{"Sure", ", <tool", "_call>\n{\"name\": \"add\", ", "\"arguments\": {}}\n</tool_call>"}, "Sure, ", "", 1},
		{"bare call", []string{" {\"name\"", ": \"add\", \"parameters\": {\"a\": 1}}"}, "", "", 1},
		{"text only", []string{"Hello", " <tool", "box> there"}, "Hello <toolbox> there", "", 0},
		{"json that is no call", []string{"{\"x\":", " 1}"}, "", "{\"x\": 1}", 0},
		{"held prefix at the end", []string{"a <tool_c"}, "a ", "<tool_c", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ts ToolStream
			var out strings.Builder
			for _, p := range tc.pieces {
				out.WriteString(ts.Push(p))
			}
			rest, calls := ts.Finish(names)
			require.Equal(t, tc.streamed, out.String())
			require.Equal(t, tc.rest, rest)
			require.Len(t, calls, tc.calls)
		})
	}
}

// The story model knows nothing of tools: a forced tool_choice makes it
// write a call anyway, and the worker answers with tool_calls.
func TestForcedToolCall(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	tools := []map[string]any{
		{"type": "function", "function": map[string]any{"name": "get_weather", "parameters": map[string]any{
			"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string", "maxLength": 10}}, "required": []string{"city"}}}},
		{"type": "function", "function": map[string]any{"name": "add", "parameters": map[string]any{
			"type": "object", "properties": map[string]any{"a": map[string]any{"type": "integer"}, "b": map[string]any{"type": "integer"}}, "required": []string{"a", "b"}}}},
	}
	msgs := []map[string]any{
		{"role": "user", "content": "Once upon a time"},
		{"role": "assistant", "content": nil, "tool_calls": []map[string]any{{"id": "call_0", "type": "function", "function": map[string]any{"name": "add", "arguments": `{"a":1,"b":2}`}}}},
		{"role": "tool", "tool_call_id": "call_0", "content": "3"},
	}
	for _, tc := range []struct {
		name   string
		choice any
		want   string
	}{
		{"named", map[string]any{"type": "function", "function": map[string]any{"name": "get_weather"}}, "get_weather"},
		{"required", "required", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range 3 {
				resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": msgs, "tools": tools, "tool_choice": tc.choice,
					"max_tokens": 200, "temperature": 1, "seed": seed})
				require.Equal(t, http.StatusOK, resp.StatusCode)
				var cc ChatCompletion
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
				ch := cc.Choices[0]
				require.Equal(t, "tool_calls", ch.FinishReason, ch.Message.Content)
				require.Len(t, ch.Message.ToolCalls, 1)
				c := ch.Message.ToolCalls[0]
				if tc.want != "" {
					require.Equal(t, tc.want, c.Function.Name)
				}
				var args map[string]any
				require.NoError(t, json.Unmarshal([]byte(c.Function.Arguments), &args))
				if c.Function.Name == "get_weather" {
					require.IsType(t, "", args["city"])
				} else {
					require.Contains(t, args, "a")
					require.Contains(t, args, "b")
				}
			}
		})
	}
	// Streamed: one tool_calls delta with index 0, then finish_reason tool_calls.
	resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": msgs, "tools": tools, "tool_choice": "required",
		"max_tokens": 200, "temperature": 0, "stream": true})
	// OpenAI's pattern: id, type and name with empty arguments first, then
	// the arguments, all under index 0.
	var deltas []ToolCall
	var finish string
	for _, c := range openAIStream[ChatCompletionChunk](t, resp) {
		deltas = append(deltas, c.Choices[0].Delta.ToolCalls...)
		if f := c.Choices[0].FinishReason; f != nil {
			finish = *f
		}
		require.Empty(t, c.Choices[0].Delta.Content)
	}
	require.Equal(t, "tool_calls", finish)
	require.Len(t, deltas, 2)
	for _, d := range deltas {
		require.NotNil(t, d.Index)
		require.Equal(t, 0, *d.Index)
	}
	require.True(t, strings.HasPrefix(deltas[0].ID, "call_"))
	require.Equal(t, "function", deltas[0].Type)
	require.NotEmpty(t, deltas[0].Function.Name)
	require.Empty(t, deltas[0].Function.Arguments)
	require.Empty(t, deltas[1].ID+deltas[1].Type+deltas[1].Function.Name)
	require.True(t, json.Valid([]byte(deltas[1].Function.Arguments)))

	// tool_choice none: no tools rendered, a plain answer.
	resp = post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": msgs[:1], "tools": tools, "tool_choice": "none", "max_tokens": 5})
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
	require.Empty(t, cc.Choices[0].Message.ToolCalls)
}

func TestToolErrors(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	msgs := []map[string]any{{"role": "user", "content": "hi"}}
	fn := func(name string, params any) map[string]any {
		return map[string]any{"type": "function", "function": map[string]any{"name": name, "parameters": params}}
	}
	for _, tc := range []struct {
		name       string
		body       map[string]any
		param      string
		code, text string
	}{
		{"not a function", map[string]any{"tools": []any{map[string]any{"type": "retrieval"}}}, "tools[0].type", "invalid_value", "retrieval"},
		{"no name", map[string]any{"tools": []any{fn("", nil)}}, "tools[0].function.name", "missing", "name"},
		{"duplicate", map[string]any{"tools": []any{fn("a", nil), fn("a", nil)}}, "tools[1].function.name", "invalid_value", `"a"`},
		{"parameters a string", map[string]any{"tools": []any{fn("a", "x")}}, "tools[0].function.parameters", "invalid_type", "not a string"},
		{"parameters an array, tool_choice none", map[string]any{"tools": []any{fn("a", []any{})}, "tool_choice": "none"}, "tools[0].function.parameters", "invalid_type", "not an array"},
		{"parameters a number, second tool", map[string]any{"tools": []any{fn("a", nil), fn("b", 5)}}, "tools[1].function.parameters", "invalid_type", "not a number"},
		{"unknown choice", map[string]any{"tools": []any{fn("a", nil)}, "tool_choice": "always"}, "tool_choice", "invalid_value", "always"},
		{"named missing", map[string]any{"tools": []any{fn("a", nil)}, "tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "b"}}}, "tool_choice", "invalid_value", `"b"`},
		{"required without tools", map[string]any{"tool_choice": "required"}, "tool_choice", "invalid_value", "needs tools"},
		{"unsupported parameters", map[string]any{"tools": []any{fn("a", map[string]any{"type": "object", "properties": map[string]any{"x": map[string]any{"type": "string", "format": "email"}}})}, "tool_choice": "required"},
			"tools[0].function.parameters", codeUnsupportedSchema, `format "email" at #/properties/x`},
		{"unsupported parameters, second tool", map[string]any{"tools": []any{fn("a", nil), fn("b", map[string]any{"type": "object", "properties": map[string]any{"x": map[string]any{"type": "array", "uniqueItems": true}}})}, "tool_choice": "required"},
			"tools[1].function.parameters", codeUnsupportedSchema, `"uniqueItems" at #/properties/x`},
		{"parameters a string schema", map[string]any{"tools": []any{fn("a", map[string]any{"type": "string"})}, "tool_choice": "required"},
			"tools[0].function.parameters", codeInvalidSchema, "must describe a JSON object"},
		{"parameters object or null", map[string]any{"tools": []any{fn("a", map[string]any{"type": []string{"object", "null"}})}, "tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "a"}}},
			"tools[0].function.parameters", codeInvalidSchema, "must describe a JSON object"},
		{"too many tools to force", map[string]any{"tools": manyTools(65), "tool_choice": "required"},
			"tools", codeUnsupportedSchema, "one of 65 tools"},
		{"both constraints", map[string]any{"tools": []any{fn("a", nil)}, "tool_choice": "required", "response_format": map[string]any{"type": "json_object"}}, "tool_choice", "invalid_value", "response_format"},
		{"bad call arguments", map[string]any{"messages": []any{map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"id": "c", "type": "function", "function": map[string]any{"name": "a", "arguments": "{"}}}}}},
			"messages[0].tool_calls[0]", "invalid_value", "arguments"},
		{"call arguments an array", map[string]any{"messages": []any{map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"id": "c", "type": "function", "function": map[string]any{"name": "a", "arguments": "[1]"}}}}}},
			"messages[0].tool_calls[0]", "invalid_value", "a JSON object"},
		{"call arguments a string", map[string]any{"messages": []any{msgs[0], map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"id": "c", "type": "function", "function": map[string]any{"name": "a", "arguments": `"{\"x\":1}"`}}}}}},
			"messages[1].tool_calls[0]", "invalid_value", "a JSON object"},
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
			require.NotNil(t, eb.Error.Param)
			require.Equal(t, tc.param, *eb.Error.Param)
			require.Contains(t, eb.Error.Message, tc.text)
		})
	}
}

// A model whose template is Qwen 2.5's (tool calls in <tool_call> tags): a
// forced call is written in that markup and parsed back.
func TestForcedToolCallHermes(t *testing.T) {
	src, err := os.ReadFile("../model/jinja/testdata/templates/qwen-2.5-tools.jinja")
	require.NoError(t, err)
	mcfg := synth.DefaultConfig()
	mcfg.Arch, mcfg.ChatTemplate = "qwen2", string(src)
	mcfg.Ctx = 2048 // the template's tool preamble, in a tiny vocabulary, is ~600 tokens
	path := filepath.Join(t.TempDir(), "qwen-tools.gguf")
	require.NoError(t, synth.Write(path, mcfg))
	m, err := LoadEngine(path, LoadOptions{Threads: 1})
	require.NoError(t, err)
	require.Equal(t, ToolStyleHermes, m.Info().ToolStyle)
	require.NoError(t, m.Close())

	cfg := testConfig(t)
	cfg.ModelPath = path
	_, base := startServer(t, cfg)
	body := map[string]any{"messages": []Message{{Role: "user", Content: "Add 1 and 2"}}, "max_tokens": 300, "temperature": 0,
		"tools": []map[string]any{{"type": "function", "function": map[string]any{"name": "add", "parameters": map[string]any{
			"type": "object", "properties": map[string]any{"a": map[string]any{"type": "integer"}, "b": map[string]any{"type": "integer"}}, "required": []string{"a", "b"}}}}},
		"tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "add"}}}
	resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
	raw := readAll(t, resp)
	require.Equal(t, http.StatusOK, resp.StatusCode, raw)
	var cc ChatCompletion
	require.NoError(t, json.Unmarshal([]byte(raw), &cc))
	require.Equal(t, "tool_calls", cc.Choices[0].FinishReason, cc.Choices[0].Message.Content)
	require.Len(t, cc.Choices[0].Message.ToolCalls, 1)
	require.Equal(t, "add", cc.Choices[0].Message.ToolCalls[0].Function.Name)
	var args struct{ A, B *int }
	require.NoError(t, json.Unmarshal([]byte(cc.Choices[0].Message.ToolCalls[0].Function.Arguments), &args))
	require.True(t, args.A != nil && args.B != nil)

	// Arguments that hold the closing tag: the call still ends at the
	// tag after its JSON, not at the one inside its string (it came back
	// as content).
	body["tools"] = []map[string]any{{"type": "function", "function": map[string]any{"name": "add", "parameters": map[string]any{
		"type": "object", "properties": map[string]any{"s": map[string]any{"const": "a</tool_call>b"}}, "required": []string{"s"}}}}}
	resp = post(t, testCtx(t), base+"/v1/chat/completions", body)
	raw = readAll(t, resp)
	require.Equal(t, http.StatusOK, resp.StatusCode, raw)
	cc = ChatCompletion{}
	require.NoError(t, json.Unmarshal([]byte(raw), &cc))
	require.Equal(t, "tool_calls", cc.Choices[0].FinishReason, cc.Choices[0].Message.Content)
	require.Len(t, cc.Choices[0].Message.ToolCalls, 1)
	require.Equal(t, `{"s":"a</tool_call>b"}`, cc.Choices[0].Message.ToolCalls[0].Function.Arguments)
}

// TestToolFunctionNames: the OpenAI endpoint refuses a function name
// OpenAI refuses (^[a-zA-Z0-9_-]{1,64}$), naming tools[i].function.name;
// /v1/infer (Ollama's /api/chat) takes any name, as Ollama does.
func TestToolFunctionNames(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelPath = toolsModelFile(t)
	_, base := startServer(t, cfg)
	msgs := []Message{{Role: "user", Content: "Once upon a time"}}
	tool := func(name string) map[string]any {
		return map[string]any{"type": "function", "function": map[string]any{"name": name}}
	}
	for _, tc := range []struct {
		name, fn string
		ok       bool
	}{
		{"letters digits _ -", "get_Weather-2", true},
		{"64 characters", strings.Repeat("a", 64), true},
		{"65 characters", strings.Repeat("a", 65), false},
		{"a dot", "get.weather", false},
		{"a space", "get weather", false},
		{"not ASCII", "météo", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": msgs,
				"tools": []any{tool("ok"), tool(tc.fn)}, "max_tokens": 1})
			if tc.ok {
				require.Equal(t, http.StatusOK, resp.StatusCode)
			} else {
				require.Equal(t, http.StatusBadRequest, resp.StatusCode)
				var eb ErrorBody
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
				require.Equal(t, "invalid_value", eb.Error.Code)
				require.Equal(t, "tools[1].function.name", *eb.Error.Param)
			}
			resp = post(t, testCtx(t), base+"/v1/infer", map[string]any{"messages": msgs,
				"tools": []any{tool("ok"), tool(tc.fn)}, "max_tokens": 1})
			require.Equal(t, http.StatusOK, resp.StatusCode, "/v1/infer takes %q", tc.fn)
		})
	}
}

// TestToolCallsNullContent: an answer that is tool calls alone has
// "content": null, as OpenAI sends it, in the message and in the stream's
// first tool-call delta; an answer with text keeps its text, and a message
// without tool calls keeps "content" a string.
func TestToolCallsNullContent(t *testing.T) {
	i0 := 0
	call := ToolCall{ID: "call_1", Type: "function", Function: ToolCallFunction{Name: "f", Arguments: "{}"}}
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"calls alone", ChatChoice{Message: Message{Role: "assistant", ToolCalls: []ToolCall{call}}, FinishReason: "tool_calls"},
			`{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}`},
		{"text and calls", ChatChoice{Message: Message{Role: "assistant", Content: "Sure.", ToolCalls: []ToolCall{call}}, FinishReason: "tool_calls"},
			`{"index":0,"message":{"role":"assistant","content":"Sure.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}`},
		{"empty text", ChatChoice{Message: Message{Role: "assistant"}, FinishReason: "length"},
			`{"index":0,"message":{"role":"assistant","content":""},"logprobs":null,"finish_reason":"length"}`},
		{"first call delta", ChatDelta{ToolCalls: []ToolCall{{Index: &i0, ID: "call_1", Type: "function", Function: ToolCallFunction{Name: "f"}}}, nullContent: true},
			`{"content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}`},
		{"arguments delta", ChatDelta{ToolCalls: []ToolCall{{Index: &i0, Function: ToolCallFunction{Arguments: "{}"}}}},
			`{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}`},
		{"text delta", ChatDelta{Content: "hi"}, `{"content":"hi"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.v)
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(b))
		})
	}

	// Through the API: a forced call (the whole answer is the call).
	_, base := startServer(t, testConfig(t))
	body := map[string]any{"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "tool_choice": "required", "max_tokens": 200, "temperature": 0,
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "add", "parameters": map[string]any{
			"type": "object", "properties": map[string]any{"a": map[string]any{"type": "integer"}}, "required": []string{"a"}}}}}}
	resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var raw struct {
		Choices []struct {
			Message map[string]json.RawMessage `json:"message"`
		} `json:"choices"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&raw))
	require.Equal(t, "null", string(raw.Choices[0].Message["content"]))
	require.Contains(t, raw.Choices[0].Message, "tool_calls")

	body["stream"] = true
	resp = post(t, testCtx(t), base+"/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var nulls, callDeltas int
	for _, ev := range readAllSSE(t, resp.Body) {
		if ev.Data == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta map[string]json.RawMessage `json:"delta"`
			} `json:"choices"`
		}
		require.NoError(t, json.Unmarshal([]byte(ev.Data), &c))
		for _, ch := range c.Choices {
			if _, ok := ch.Delta["tool_calls"]; ok {
				callDeltas++
			}
			if v, ok := ch.Delta["content"]; ok {
				require.Equal(t, "null", string(v), "no text is streamed: %s", ev.Data)
				_, ok := ch.Delta["tool_calls"]
				require.True(t, ok, "null content comes with the first call: %s", ev.Data)
				nulls++
			}
		}
	}
	require.Equal(t, 2, callDeltas)
	require.Equal(t, 1, nulls)
}

// TestForcedToolCallOwnRefs: a tool's parameters with their own $defs
// (what Pydantic writes for nested models) or a $ref to their root make a
// forced call whose arguments follow them; the references named the
// call schema around the parameters, so the $defs were refused as
// dangling and "#" meant a whole call.
func TestForcedToolCallOwnRefs(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	for _, tc := range []struct {
		name   string
		params string
		check  func(t *testing.T, args map[string]any)
	}{
		{"defs", `{"type":"object","properties":{"p":{"$ref":"#/$defs/Point"}},"required":["p"],"$defs":{"Point":{"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}},"required":["x","y"]}}}`,
			func(t *testing.T, args map[string]any) {
				p, ok := args["p"].(map[string]any)
				require.True(t, ok, args)
				require.Len(t, p, 2)
				require.IsType(t, float64(0), p["x"])
				require.IsType(t, float64(0), p["y"])
			}},
		{"root", `{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},"required":["v","next"]}`,
			func(t *testing.T, args map[string]any) {
				for n := args; n != nil; {
					require.ElementsMatch(t, []string{"v", "next"}, slices.Collect(maps.Keys(n)), args)
					require.IsType(t, float64(0), n["v"])
					next, _ := n["next"].(map[string]any)
					require.True(t, next != nil || n["next"] == nil, args)
					n = next
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tools := []map[string]any{{"type": "function", "function": map[string]any{"name": "f", "parameters": json.RawMessage(tc.params)}}}
			for seed := range 3 {
				resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: "Once upon a time"}},
					"tools": tools, "tool_choice": "required", "max_tokens": 300, "temperature": 1, "seed": seed})
				raw := readAll(t, resp)
				require.Equal(t, http.StatusOK, resp.StatusCode, raw)
				var cc ChatCompletion
				require.NoError(t, json.Unmarshal([]byte(raw), &cc))
				ch := cc.Choices[0]
				require.Equal(t, "tool_calls", ch.FinishReason, ch.Message.Content)
				require.Len(t, ch.Message.ToolCalls, 1)
				var args map[string]any
				require.NoError(t, json.Unmarshal([]byte(ch.Message.ToolCalls[0].Function.Arguments), &args))
				tc.check(t, args)
			}
		})
	}
}

// TestConstrainedAnswerIgnoresStop: a stop string that the document
// contains does not cut a forced tool call (it came back as content, a
// piece of JSON, with finish_reason stop) nor a JSON response.
func TestConstrainedAnswerIgnoresStop(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	tools := []map[string]any{{"type": "function", "function": map[string]any{"name": "add", "parameters": map[string]any{
		"type": "object", "properties": map[string]any{"a": map[string]any{"type": "integer"}}, "required": []string{"a"}}}}}
	msgs := []Message{{Role: "user", Content: "Once upon a time"}}
	for _, stream := range []bool{false, true} {
		for _, stop := range []any{`"`, []string{"{", ":"}} {
			t.Run(fmt.Sprintf("stream %v stop %v", stream, stop), func(t *testing.T) {
				body := map[string]any{"messages": msgs, "tools": tools, "tool_choice": "required", "max_tokens": 200, "temperature": 0, "stop": stop, "stream": stream}
				var calls []ToolCall
				var content, finish string
				if stream {
					for _, c := range openAIStream[ChatCompletionChunk](t, post(t, testCtx(t), base+"/v1/chat/completions", body)) {
						calls = append(calls, c.Choices[0].Delta.ToolCalls...)
						content += c.Choices[0].Delta.Content
						if f := c.Choices[0].FinishReason; f != nil {
							finish = *f
						}
					}
					require.Len(t, calls, 2, content) // name, then arguments
					calls = []ToolCall{{Function: ToolCallFunction{Name: calls[0].Function.Name, Arguments: calls[1].Function.Arguments}}}
				} else {
					resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
					raw := readAll(t, resp)
					require.Equal(t, http.StatusOK, resp.StatusCode, raw)
					var cc ChatCompletion
					require.NoError(t, json.Unmarshal([]byte(raw), &cc))
					calls, content, finish = cc.Choices[0].Message.ToolCalls, cc.Choices[0].Message.Content, cc.Choices[0].FinishReason
				}
				require.Equal(t, "tool_calls", finish, content)
				require.Empty(t, content)
				require.Len(t, calls, 1)
				require.Equal(t, "add", calls[0].Function.Name)
				var args struct{ A *int }
				require.NoError(t, json.Unmarshal([]byte(calls[0].Function.Arguments), &args))
				require.NotNil(t, args.A)
			})
		}
	}
	// A JSON response is whole too.
	resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 200, "temperature": 0, "stop": `"`,
		"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{
			"type": "object", "properties": map[string]any{"s": map[string]any{"type": "string", "maxLength": 5}}, "required": []string{"s"}}}}})
	raw := readAll(t, resp)
	require.Equal(t, http.StatusOK, resp.StatusCode, raw)
	var cc ChatCompletion
	require.NoError(t, json.Unmarshal([]byte(raw), &cc))
	var v struct{ S *string }
	require.NoError(t, json.Unmarshal([]byte(cc.Choices[0].Message.Content), &v), cc.Choices[0].Message.Content)
	require.NotNil(t, v.S)
	require.Equal(t, "stop", cc.Choices[0].FinishReason)
}

// manyTools is n tools without parameters, named t0, t1...
func manyTools(n int) []any {
	var tools []any
	for i := range n {
		tools = append(tools, map[string]any{"type": "function", "function": map[string]any{"name": fmt.Sprintf("t%d", i)}})
	}
	return tools
}

// TestCutCall: the call a forced answer was writing when max_tokens cut
// it, read from any prefix of the call's markup.
func TestCutCall(t *testing.T) {
	plan := toolPlan{names: []string{"add", "get_weather"}, forced: true}
	named := plan
	named.forcedName = "get_weather"
	for _, tc := range []struct {
		name       string
		plan       toolPlan
		text       string
		call, args string // call "": none
	}{
		{"nothing written", plan, "", "", ""},
		{"named, nothing written", named, "", "get_weather", ""},
		{"inside the name", plan, `{"name": "ad`, "", ""},
		{"name written", plan, `{"name": "add"`, "add", ""},
		{"inside the arguments", plan, `{"name": "add", "parameters": {"a": 1, "b"`, "add", `{"a": 1, "b"`},
		{"arguments before the name", plan, `{"parameters": {"a": 1}, "name": "ad`, "", ""},
		{"arguments whole, name after", plan, `{"parameters": {"a": 1}, "name": "add"`, "add", `{"a":1}`},
		{"hermes markup", plan, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par", "get_weather", `{"city": "Par`},
		{"hermes, inside the tag", plan, "<tool_ca", "", ""},
		{"named, a name it does not declare", named, `{"name": "rm", "arguments": {`, "get_weather", `{`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := tc.plan.cutCall(tc.text)
			if tc.call == "" {
				require.Empty(t, calls)
				return
			}
			require.Len(t, calls, 1)
			require.Equal(t, tc.call, calls[0].Function.Name)
			require.Equal(t, tc.args, calls[0].Function.Arguments)
			require.True(t, strings.HasPrefix(calls[0].ID, "call_"))
		})
	}
}

// TestForcedToolCallCut: a forced call that max_tokens cuts comes back as
// the call so far (name, arguments written), with content null and
// finish_reason length, as OpenAI and vLLM answer; never as its markup in
// the content. Streamed and whole answers agree.
func TestForcedToolCallCut(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	tools := []map[string]any{{"type": "function", "function": map[string]any{"name": "get_weather", "parameters": map[string]any{
		"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string", "maxLength": 40}}, "required": []string{"city"}}}}}
	msgs := []Message{{Role: "user", Content: "Once upon a time"}}
	for _, choice := range []any{"required", map[string]any{"type": "function", "function": map[string]any{"name": "get_weather"}}} {
		for _, limit := range []int{1, 10, 25, 40, 60} {
			body := map[string]any{"messages": msgs, "tools": tools, "tool_choice": choice, "max_tokens": limit, "temperature": 0}
			resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
			raw := readAll(t, resp)
			require.Equal(t, http.StatusOK, resp.StatusCode, raw)
			var cc ChatCompletion
			require.NoError(t, json.Unmarshal([]byte(raw), &cc))
			ch := cc.Choices[0]
			require.Equal(t, "length", ch.FinishReason, raw)
			require.Empty(t, ch.Message.Content, "the cut call is not content: %s", raw)
			// One tool: its name is known from the start, whichever
			// order the model writes the call's keys in.
			require.Len(t, ch.Message.ToolCalls, 1, raw)
			name, args := ch.Message.ToolCalls[0].Function.Name, ch.Message.ToolCalls[0].Function.Arguments
			require.Equal(t, "get_weather", name)
			require.Contains(t, raw, `"content":null`)
			require.True(t, args == "" || strings.HasPrefix(args, "{"), raw)
			if limit == 60 {
				require.NotEmpty(t, args, "60 tokens reach the arguments: %s", raw)
			}

			body["stream"] = true
			resp = post(t, testCtx(t), base+"/v1/chat/completions", body)
			var finish, sname, sargs string
			for _, c := range openAIStream[ChatCompletionChunk](t, resp) {
				require.Empty(t, c.Choices[0].Delta.Content)
				for _, d := range c.Choices[0].Delta.ToolCalls {
					sname += d.Function.Name
					sargs += d.Function.Arguments
				}
				if f := c.Choices[0].FinishReason; f != nil {
					finish = *f
				}
			}
			require.Equal(t, "length", finish)
			require.Equal(t, name, sname, "limit %d", limit)
			require.Equal(t, args, sargs, "limit %d", limit)
		}
	}
}

// TestForcedCallWithoutParameters: a function without parameters (none
// given, or an object with no properties, as Pydantic and LangChain write
// a model or tool without fields) is called with {}, not with keys the
// model made up.
func TestForcedCallWithoutParameters(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	for _, params := range []any{nil, map[string]any{"type": "object", "properties": map[string]any{}}, map[string]any{"title": "Now", "type": "object", "properties": map[string]any{}}} {
		fn := map[string]any{"name": "now"}
		if params != nil {
			fn["parameters"] = params
		}
		resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: "Once upon a time"}},
			"max_tokens": 100, "temperature": 0, "tools": []any{map[string]any{"type": "function", "function": fn}}, "tool_choice": "required"})
		raw := readAll(t, resp)
		require.Equal(t, http.StatusOK, resp.StatusCode, raw)
		var cc ChatCompletion
		require.NoError(t, json.Unmarshal([]byte(raw), &cc))
		require.Equal(t, "tool_calls", cc.Choices[0].FinishReason, raw)
		require.Len(t, cc.Choices[0].Message.ToolCalls, 1, raw)
		require.Equal(t, "{}", cc.Choices[0].Message.ToolCalls[0].Function.Arguments, raw)
	}
}

// TestCutAnswer: an answer with tools that max_tokens cut inside a call
// in the <tool_call> markup (tool_choice auto) is the text before the
// call as content and the calls so far, the cut one as cutCall reads it;
// streamed through a ToolStream, the content that went out is the same.
func TestCutAnswer(t *testing.T) {
	plan := toolPlan{names: []string{"add", "get_weather"}}
	open := "<tool_call>\n"
	for _, tc := range []struct {
		name, text, content string
		calls               []string // name(arguments)
		ok                  bool
	}{
		{"cut in the arguments", "Let me add.\n" + open + `{"name": "add", "arguments": {"a": 1`, "Let me add.", []string{`add({"a": 1)`}, true},
		{"a whole call, then a cut one", open + `{"name": "add", "arguments": {}}` + "\n</tool_call>\n" + open + `{"name": "get_weather", "arguments": {"ci`,
			"", []string{`add({})`, `get_weather({"ci)`}, true},
		{"cut before the name", "Hm.\n" + open + `{"na`, "Hm.", nil, true},
		{"a broken call before the last", open + `{"name": "add" oops` + "\n</tool_call>\n" + open + `{"name": "add"`, "", nil, false},
		{"no call", "Once upon a time", "", nil, false},
		{"the other markup", `{"name": "add", "parameters": {"a"`, "", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content, calls, ok := plan.cutAnswer(tc.text)
			require.Equal(t, tc.ok, ok)
			if !ok {
				return
			}
			require.Equal(t, tc.content, content)
			var got []string
			for _, c := range calls {
				got = append(got, c.Function.Name+"("+c.Function.Arguments+")")
			}
			require.Equal(t, tc.calls, got)
			// Streamed in small pieces: what went out as content is the
			// text before the call.
			var ts ToolStream
			var sent strings.Builder
			for i := 0; i < len(tc.text); i += 3 {
				sent.WriteString(ts.Push(tc.text[i:min(i+3, len(tc.text))]))
			}
			require.Equal(t, tc.content, strings.TrimSpace(sent.String()))
		})
	}
	forced := toolPlan{names: []string{"add"}, forced: true, forcedName: "add"}
	content, calls, ok := forced.cutAnswer(`{"name": "add", "parameters": {"a"`)
	require.True(t, ok)
	require.Empty(t, content)
	require.Len(t, calls, 1)
	require.Equal(t, `{"a"`, calls[0].Function.Arguments)
}

// TestToolsTheTemplateCannotRender: tools the model is left to call
// (tool_choice auto, the default; Ollama's /api/chat, which has no
// tool_choice, goes through /v1/infer) are refused with a 400 naming
// tools when the model's chat template does not render them (the story
// model has none): the model would never see them, and the answer would
// be prose as if it chose not to call. They used to be taken and
// dropped. tool_choice none takes them (nothing to render), a forced call
// is written by the grammar as before (TestForcedToolCall), and a model
// whose template renders tools gets them in its prompt.
func TestToolsTheTemplateCannotRender(t *testing.T) {
	_, plain := startServer(t, testConfig(t))
	cfg := testConfig(t)
	cfg.ModelPath = toolsModelFile(t)
	_, rendering := startServer(t, cfg)
	tools := []map[string]any{{"type": "function", "function": map[string]any{"name": "get_weather",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}}}}}
	msgs := []Message{{Role: "user", Content: "Once upon a time"}}
	for _, tc := range []struct {
		name, base, path string
		extra            map[string]any
		status           int
	}{
		{"auto by default", plain, "/v1/chat/completions", map[string]any{"tools": tools}, http.StatusBadRequest},
		{"auto", plain, "/v1/chat/completions", map[string]any{"tools": tools, "tool_choice": "auto"}, http.StatusBadRequest},
		{"auto streamed", plain, "/v1/chat/completions", map[string]any{"tools": tools, "stream": true}, http.StatusBadRequest},
		{"native (Ollama's /api/chat)", plain, "/v1/infer", map[string]any{"tools": tools}, http.StatusBadRequest},
		{"none", plain, "/v1/chat/completions", map[string]any{"tools": tools, "tool_choice": "none"}, http.StatusOK},
		{"no tools", plain, "/v1/chat/completions", map[string]any{"tools": []any{}}, http.StatusOK},
		{"required", plain, "/v1/chat/completions", map[string]any{"tools": tools, "tool_choice": "required"}, http.StatusOK},
		{"a template that renders them", rendering, "/v1/chat/completions", map[string]any{"tools": tools}, http.StatusOK},
		{"a template that renders them, native", rendering, "/v1/infer", map[string]any{"tools": tools}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"messages": msgs, "max_tokens": 4, "temperature": 0}
			maps.Copy(body, tc.extra)
			resp := post(t, testCtx(t), tc.base+tc.path, body)
			defer resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode)
			if tc.status != http.StatusOK {
				var eb ErrorBody
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
				require.Equal(t, "tools", *eb.Error.Param)
				require.Equal(t, codeUnsupportedParam, eb.Error.Code)
				require.Contains(t, eb.Error.Message, "does not render tools")
			}
		})
	}
	// The rendering template puts the tools in the prompt.
	usage := func(extra map[string]any) int {
		body := map[string]any{"messages": msgs, "max_tokens": 1}
		maps.Copy(body, extra)
		var cc ChatCompletion
		require.NoError(t, json.NewDecoder(post(t, testCtx(t), rendering+"/v1/chat/completions", body).Body).Decode(&cc))
		return cc.Usage.PromptTokens
	}
	require.Greater(t, usage(map[string]any{"tools": tools}), usage(nil))
}

// toolsTestTemplate renders each turn as "ROLE: TEXT" and the tools'
// names before them, as a tool template (Qwen's, Llama 3.1's) does with
// their definitions: the model sees the tools.
const toolsTestTemplate = `{% if tools %}tools:{% for t in tools %} {{ t.function.name }}{% endfor %}
{% endif %}{% for m in messages %}{{ m.role }}: {{ m.content }}
{% endfor %}assistant:`

// toolsModelFile writes a copy of the story model (testModelPath) whose
// chat template renders tools (toolsTestTemplate): it answers in English
// as testModelPath does, with the prompt the template gives.
func toolsModelFile(t *testing.T) string {
	t.Helper()
	src, err := gguf.Open(testModelPath)
	require.NoError(t, err)
	defer src.Close()
	path := filepath.Join(t.TempDir(), "tools.gguf")
	require.NoError(t, ggufedit.Write(path, src, nil, map[string]any{"tokenizer.chat_template": toolsTestTemplate}))
	return path
}

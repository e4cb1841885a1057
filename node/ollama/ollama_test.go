package ollama

import (
	"encoding/json"

	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/worker"
)

func TestOllamaName(t *testing.T) {
	for in, want := range map[string]string{
		"stories260k:latest":      "stories260k",
		"stories260k:LATEST":      "stories260k",
		" stories260k ":           "stories260k",
		"stories260k":             "stories260k",
		"hf:org/repo:Q4_K_M":      "hf:org/repo:Q4_K_M",
		"builtin:stories260k":     "builtin:stories260k",
		":latest":                 ":latest",
		"hf:org/repo:Q8_0:latest": "hf:org/repo:Q8_0",
	} {
		require.Equal(t, want, Name(in), in)
	}
}

func TestParameterSize(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, ""},
		{999, "999"},
		{260_000, "260K"},
		{292_352, "292K"},
		{15_200_000, "15M"},
		{494_032_768, "0.5B"},
		{8_030_261_248, "8.0B"},
		{70_550_000_000, "70.5B"},
	} {
		require.Equal(t, tc.want, ParameterSize(tc.n), tc.n)
	}
}

// TestInferBody: an Ollama generate or chat request becomes the worker's
// /v1/infer body: prompt or messages, options by their rbee names,
// num_predict as max_tokens, format as response_format, tool calls with
// their arguments as a JSON string.
func TestInferBody(t *testing.T) {
	cases := []struct {
		name string
		chat bool
		req  string
		want string
	}{
		{"generate", false, `{"model":"m","prompt":"Once","options":{"temperature":0,"num_predict":5,"top_k":3,"stop":["x"]}}`,
			`{"prompt":"Once","apply_template":true,"temperature":0,"max_tokens":5,"top_k":3,"stop":["x"]}`},
		{"generate raw: false", false, `{"model":"m","prompt":"Once","raw":false}`, `{"prompt":"Once","apply_template":true}`},
		{"generate raw", false, `{"model":"m","prompt":"Once","raw":true}`, `{"prompt":"Once"}`},
		{"generate with system", false, `{"model":"m","prompt":"Once","system":"Be brief"}`,
			`{"messages":[{"role":"system","content":"Be brief"},{"role":"user","content":"Once"}]}`},
		{"num_predict -1 is unbounded", false, `{"model":"m","prompt":"a","options":{"num_predict":-1}}`, `{"prompt":"a","apply_template":true}`},
		{"logprobs", false, `{"model":"m","prompt":"a","raw":true,"logprobs":true,"top_logprobs":3}`, `{"prompt":"a","logprobs":true,"top_logprobs":3}`},
		{"format json", false, `{"model":"m","prompt":"a","format":"json","raw":true}`, `{"prompt":"a","response_format":{"type":"json_object"}}`},
		{"format schema", false, `{"model":"m","prompt":"a","format":{"type":"object"},"raw":true}`,
			`{"prompt":"a","response_format":{"type":"json_object","schema":{"type":"object"}}}`},
		{"think false asks the template for none", true, `{"model":"m","messages":[{"role":"user","content":"hi"}],"think":false}`,
			`{"messages":[{"role":"user","content":"hi"}],"think":false,"chat_template_kwargs":{"enable_thinking":false}}`},
		{"think true is the worker's to decide", true, `{"model":"m","messages":[{"role":"user","content":"hi"}],"think":true}`,
			`{"messages":[{"role":"user","content":"hi"}],"think":true}`},
		{"think high", false, `{"model":"m","prompt":"hi","think":"high"}`, `{"prompt":"hi","apply_template":true,"think":"high","reasoning_effort":"high"}`},
		{"chat with a tool call", true, `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},{"role":"tool","content":"2","tool_name":"f"}],"tools":[{"type":"function","function":{"name":"f"}}]}`,
			`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"","tool_calls":[{"id":"call_1_0","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","content":"2","name":"f"}],"tools":[{"type":"function","function":{"name":"f"}}]}`},
		// Open WebUI sends a call's id (and index) back, and the tool's
		// answer names the call by tool_call_id: both reach the template.
		{"chat with tool call ids", true, `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"","tool_calls":[{"index":0,"id":"call_ab","function":{"name":"f","arguments":{"a":1}}}]},{"role":"tool","content":"2","tool_call_id":"call_ab"}]}`,
			`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"","tool_calls":[{"id":"call_ab","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","content":"2","tool_call_id":"call_ab"}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r Request
			require.NoError(t, json.Unmarshal([]byte(tc.req), &r))
			b, err := r.InferBody(tc.chat)
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(b))
		})
	}
	var r Request
	require.NoError(t, json.Unmarshal([]byte(`{"model":"m","prompt":"a","format":"yaml"}`), &r))
	_, err := r.InferBody(false)
	require.ErrorContains(t, err, "format must be")
}

func TestToolNamesAndCalls(t *testing.T) {
	var r Request
	require.NoError(t, json.Unmarshal([]byte(`{"tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{}},"junk"]}`), &r))
	require.Equal(t, []string{"a"}, r.ToolNames())
	calls := Calls([]worker.ToolCall{{ID: "c1", Type: "function", Function: worker.ToolCallFunction{Name: "f", Arguments: `{"x":2}`}}})
	b, err := json.Marshal(calls)
	require.NoError(t, err)
	require.JSONEq(t, `[{"id":"c1","function":{"name":"f","arguments":{"x":2}}}]`, string(b))
}

// TestThinkValues: think takes true, false or a level; anything else is
// refused with what it takes.
func TestThinkValues(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Think
		err  bool
	}{
		{`true`, Think{On: true}, false}, {`false`, Think{}, false},
		{`"low"`, Think{On: true, Level: "low"}, false}, {`"high"`, Think{On: true, Level: "high"}, false},
		{`"extreme"`, Think{}, true}, {`1`, Think{}, true}, {`""`, Think{}, true},
	} {
		var th Think
		err := json.Unmarshal([]byte(tc.in), &th)
		if tc.err {
			require.ErrorIs(t, err, ErrThink, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, th, tc.in)
		b, err := json.Marshal(th)
		require.NoError(t, err)
		require.JSONEq(t, tc.in, string(b), "written back as read")
	}
}

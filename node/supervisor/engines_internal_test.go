package supervisor

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/worker"
)

func TestParseEngineMetrics(t *testing.T) {
	tests := []struct {
		name             string
		text             string
		running, waiting int
	}{
		{"llama-server", "# HELP x\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\nllamacpp:requests_deferred 1\n", 2, 1},
		{"vllm with labels", `vllm:num_requests_running{model_name="a"} 3.0` + "\n" + `vllm:num_requests_waiting{model_name="a"} 4` + "\n" +
			`vllm:num_requests_running{model_name="b"} 1` + "\n", 4, 4},
		{"nothing known", "other_metric 5\ngarbage\n{\n", 0, 0},
		// A broken engine's gauges count nothing (NaN, negative) or are
		// capped (huge, infinite): never a negative load, which the router
		// would prefer to every healthy worker.
		{"NaN", "vllm:num_requests_running NaN\nvllm:num_requests_waiting nan\n", 0, 0},
		{"negative", "vllm:num_requests_running -100\nvllm:num_requests_waiting 2\nvllm:num_requests_waiting -5\n", 0, 2},
		{"huge", "vllm:num_requests_running 1e300\nllamacpp:requests_processing 9223372036854775807\nvllm:num_requests_waiting +Inf\n", maxEngineCount, maxEngineCount},
		{"-Inf", "llamacpp:requests_deferred -Inf\n", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w := parseEngineMetrics([]byte(tt.text))
			assert.Equal(t, tt.running, r)
			assert.Equal(t, tt.waiting, w)
		})
	}
}

func TestEngineRequest(t *testing.T) {
	path, b, err := engineRequest([]byte(`{"prompt":"hi","max_tokens":3,"temperature":0,"slots":9}`), "m1")
	require.NoError(t, err)
	assert.Equal(t, "/v1/completions", path)
	assert.JSONEq(t, `{"model":"m1","prompt":"hi","max_tokens":3,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`, string(b))
	path, b, err = engineRequest([]byte(`{"messages":[{"role":"user","content":"x"}],"prompt":"ignored"}`), "m1")
	require.NoError(t, err)
	assert.Equal(t, "/v1/chat/completions", path)
	assert.JSONEq(t, `{"model":"m1","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}`, string(b))
	assert.JSONEq(t, `{"model":"m1","prompt":"p"}`, string(setModel([]byte(`{"model":"alias","prompt":"p"}`), "m1")))

	// What the Ollama API's bodies carry reaches the engine: they were
	// dropped (a generate without raw went untemplated to completions,
	// format and tools were lost, the answer unconstrained and callless).
	const head = `"model":"m1","stream":true,"stream_options":{"include_usage":true}`
	for _, tc := range []struct {
		name, in, path, want string
	}{
		{"a prompt the template renders is the user's turn", `{"prompt":"Why?","apply_template":true,"max_tokens":4}`, "/v1/chat/completions",
			`{` + head + `,"messages":[{"role":"user","content":"Why?"}],"max_tokens":4}`},
		{"a raw prompt stays a completion", `{"prompt":"Why?","apply_template":false}`, "/v1/completions", `{` + head + `,"prompt":"Why?"}`},
		{"format as a schema is OpenAI's json_schema", `{"prompt":"x","response_format":{"type":"json_object","schema":{"type":"object"}}}`, "/v1/completions",
			`{` + head + `,"prompt":"x","response_format":{"type":"json_schema","json_schema":{"name":"response","schema":{"type":"object"}}}}`},
		{"format json", `{"messages":[],"response_format":{"type":"json_object"}}`, "/v1/chat/completions",
			`{` + head + `,"messages":[],"response_format":{"type":"json_object"}}`},
		{"tools, think and the template's variables", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],` +
			`"chat_template_kwargs":{"enable_thinking":false},"reasoning_effort":"high","repeat_last_n":32}`, "/v1/chat/completions",
			`{` + head + `,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],` +
				`"chat_template_kwargs":{"enable_thinking":false},"reasoning_effort":"high","repeat_last_n":32}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, b, err := engineRequest([]byte(tc.in), "m1")
			require.NoError(t, err)
			assert.Equal(t, tc.path, path)
			assert.JSONEq(t, tc.want, string(b))
		})
	}
	_, _, err = engineRequest([]byte(`{"prompt":"x","tools":[{"type":"function","function":{"name":"f"}}]}`), "m1")
	require.ErrorIs(t, err, ErrEngineField)
	require.ErrorContains(t, err, "tools")
	_, _, err = engineRequest([]byte(`{"messages":[],"logprobs":true}`), "m1")
	require.ErrorIs(t, err, ErrEngineField)
	require.ErrorContains(t, err, "logprobs")
	_, _, err = engineRequest([]byte(`{"messages":[],"logprobs":false}`), "m1")
	require.NoError(t, err)
}

// TestTranslateEngineToolCalls: the calls an engine streams in
// delta.tool_calls (name first, arguments in pieces, two calls) come out
// as one last piece in the <tool_call> markup, which the node's parser
// reads back into the same calls; finish_reason tool_calls is "stop".
func TestTranslateEngineToolCalls(t *testing.T) {
	in := `data: {"choices":[{"delta":{"role":"assistant","content":"Let me see."}}]}` + "\n\n" +
		`data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}` + "\n\n" +
		`data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}` + "\n\n" +
		`data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]}}]}` + "\n\n" +
		`data: {"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c2","type":"function","function":{"name":"add","arguments":"{}"}}]}}]}` + "\n\n" +
		`data: {"choices":[{"delta":{},"finish_reason":"tool_calls"}]}` + "\n\n" + "data: [DONE]\n\n"
	var out bytes.Buffer
	require.NoError(t, translateEngineStream(strings.NewReader(in), &out))
	text, end := readInferStream(t, &out)
	assert.Equal(t, "stop", end.StopReason)
	content, calls := worker.ParseToolCalls(text, []string{"get_weather", "add"})
	assert.Equal(t, "Let me see.", content)
	require.Len(t, calls, 2)
	assert.Equal(t, "get_weather", calls[0].Function.Name)
	assert.JSONEq(t, `{"city":"Oslo"}`, calls[0].Function.Arguments)
	assert.Equal(t, "add", calls[1].Function.Name)
	assert.JSONEq(t, `{}`, calls[1].Function.Arguments)
}

func TestTranslateEngineStream(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		tokens []string
		end    string // stop reason, "" for an error event
	}{
		{"completion", "data: {\"choices\":[{\"text\":\"Once\",\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"text\":\" upon\",\"finish_reason\":null}]}\n\n" +
			"data: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
			[]string{"Once", " upon"}, "length"},
		{"chat", "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
			"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n", []string{"Hi"}, "stop"},
		{"cut short", "data: {\"choices\":[{\"text\":\"On\"}]}\n\n", []string{"On"}, ""},
		{"engine error", "data: {\"error\":{\"message\":\"out of memory\"}}\n\n", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, translateEngineStream(strings.NewReader(tt.in), &out))
			var tokens []string
			end, failed := "", false
			require.NoError(t, sse.Read(&out, relay.MaxEvent, func(ev sse.Event) error {
				event, data := ev.Type, ev.Data
				var v map[string]any
				require.NoError(t, json.Unmarshal(data, &v))
				switch event {
				case "token":
					tokens = append(tokens, v["text"].(string))
				case "end":
					end = v["stop_reason"].(string)
				case "error":
					failed = true
				}
				return nil
			}))
			assert.Equal(t, tt.tokens, tokens)
			assert.Equal(t, tt.end, end)
			assert.Equal(t, tt.end == "", failed)
		})
	}
}

// The end event's figures come from the engine's usage chunk, unless it
// has none or nonsense (negative counts): then from the pieces received.
func TestTranslateEngineStreamUsage(t *testing.T) {
	pieces := "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\",\"finish_reason\":\"stop\"}]}\n\n"
	tests := []struct {
		name    string
		usage   string
		in, out int
	}{
		{"engine's counts", `{"prompt_tokens":7,"completion_tokens":3}`, 7, 3},
		{"no usage", "", 0, 2},
		{"negative", `{"prompt_tokens":-5,"completion_tokens":-1000000}`, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := pieces
			if tt.usage != "" {
				in += "data: {\"choices\":[],\"usage\":" + tt.usage + "}\n\n"
			}
			var out bytes.Buffer
			require.NoError(t, translateEngineStream(strings.NewReader(in+"data: [DONE]\n\n"), &out))
			var end *worker.EndEvent
			require.NoError(t, sse.Read(&out, relay.MaxEvent, func(ev sse.Event) error {
				if ev.Type == "end" {
					end = new(worker.EndEvent)
					return json.Unmarshal(ev.Data, end)
				}
				return nil
			}))
			require.NotNil(t, end)
			assert.Equal(t, tt.in, end.TokensIn)
			assert.Equal(t, tt.out, end.TokensOut)
			assert.GreaterOrEqual(t, end.TokensPerSecond, 0.0)
		})
	}
}

// readInferStream reads a /v1/infer stream that must succeed: the text of
// its token events and its end event.
func readInferStream(t *testing.T, r io.Reader) (string, worker.EndEvent) {
	t.Helper()
	var text strings.Builder
	var end worker.EndEvent
	require.NoError(t, sse.Read(r, relay.MaxEvent, func(ev sse.Event) error {
		switch ev.Type {
		case "token":
			var te worker.TokenEvent
			require.NoError(t, json.Unmarshal(ev.Data, &te))
			text.WriteString(te.Text)
		case "end":
			require.NoError(t, json.Unmarshal(ev.Data, &end))
		default:
			t.Fatalf("event %s: %s", ev.Type, ev.Data)
		}
		return nil
	}))
	return text.String(), end
}

// TestTranslateEngineReasoning: the reasoning an engine parsed itself
// (llama-server's and vLLM's delta.reasoning_content, newer vLLM's
// delta.reasoning) reaches the node as a think-tag stream (a started
// event: format think, the block open; the reasoning as text, then
// </think>), which the node's parser gives back as thinking, content and
// calls; it was dropped, so an Ollama client of a Qwen3 on llama-server
// got no thinking. An answer without reasoning stays as it was.
func TestTranslateEngineReasoning(t *testing.T) {
	chunk := func(delta string) string { return `data: {"choices":[{"delta":` + delta + `}]}` + "\n\n" }
	end := `data: {"choices":[{"delta":{},"finish_reason":"stop"}]}` + "\n\n" + "data: [DONE]\n\n"
	for _, tc := range []struct {
		name, in                    string
		format                      string
		content, thinking, callName string
	}{
		{"reasoning then answer", chunk(`{"role":"assistant","reasoning_content":"Let me"}`) + chunk(`{"reasoning_content":" think."}`) +
			chunk(`{"content":"Hi"}`) + chunk(`{"content":" there"}`) + end, worker.FormatThink, "Hi there", "Let me think.", ""},
		{"vLLM's reasoning", chunk(`{"reasoning":"Hm."}`) + chunk(`{"content":"Yes"}`) + end, worker.FormatThink, "Yes", "Hm.", ""},
		{"reasoning then a call", chunk(`{"reasoning_content":"Need weather."}`) +
			chunk(`{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]}`) + end,
			worker.FormatThink, "", "Need weather.", "get_weather"},
		{"cut inside the reasoning", chunk(`{"reasoning_content":"Still thinking"}`) + end, worker.FormatThink, "", "Still thinking", ""},
		{"no reasoning", chunk(`{"content":"Hi"}`) + end, "", "Hi", "", ""},
		{"reasoning after the answer began is dropped", chunk(`{"content":"Hi"}`) + chunk(`{"reasoning_content":"late"}`) + end, "", "Hi", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, translateEngineStream(strings.NewReader(tc.in), &out))
			var started worker.StartedEvent
			var texts []string
			require.NoError(t, sse.Read(&out, relay.MaxEvent, func(ev sse.Event) error {
				switch ev.Type {
				case "started":
					require.Empty(t, texts, "started comes first")
					require.NoError(t, json.Unmarshal(ev.Data, &started))
				case "token":
					var te worker.TokenEvent
					require.NoError(t, json.Unmarshal(ev.Data, &te))
					if started.Format != "" {
						require.Equal(t, int32(-1), te.ID, "no token ids after a started event")
					}
					texts = append(texts, te.Text)
				}
				return nil
			}))
			require.Equal(t, tc.format, started.Format)
			var content, thinking string
			var calls []worker.ToolCall
			if rs := worker.NewReasoningStream(started.Format, started.ThinkOpen, true); rs != nil {
				for _, s := range texts {
					c, r := rs.Push(s)
					content, thinking = content+c, thinking+r
				}
				c, r, k := rs.Finish([]string{"get_weather"})
				content, thinking, calls = content+c, thinking+r, k
			} else {
				content, calls = worker.ParseToolCalls(strings.Join(texts, ""), []string{"get_weather"})
			}
			require.Equal(t, tc.content, content)
			require.Equal(t, tc.thinking, thinking)
			if tc.callName != "" {
				require.Len(t, calls, 1)
				require.Equal(t, tc.callName, calls[0].Function.Name)
			} else {
				require.Empty(t, calls)
			}
		})
	}
}

package engine

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/synth"
)

// TestToolTemplates renders a tool conversation through the published
// Qwen 2.5 and Llama 3.1 templates (model/jinja/testdata/templates, see
// PROVENANCE.md there): the tools as the client sent them (key order
// kept), the assistant's call with its arguments as an object, and the
// tool's answer.
func TestToolTemplates(t *testing.T) {
	tools := []json.RawMessage{json.RawMessage(`{"type":"function","function":{"name":"get_weather","description":"Weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}`)}
	msgs := []Message{
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", ToolCalls: []ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
		{Role: "tool", ToolCallID: "call_1", Name: "get_weather", Content: "22C"},
	}
	toolJSON := `{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}`
	cases := []struct {
		file, arch string
		want       string
	}{
		{"qwen-2.5-tools.jinja", "qwen2", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n" +
			"You may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
			toolJSON + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
			"<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" +
			"<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
			"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n" +
			"<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n" +
			"<|im_start|>assistant\n"},
		{"llama-3.1-tools.jinja", "llama", "<s><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n" +
			"Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n" +
			indented + "\n\nWeather in Paris?<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>" +
			// A string is iterable in Jinja, so this template writes the
			// tool's answer with tojson, as under transformers.
			"<|start_header_id|>ipython<|end_header_id|>\n\n\"22C\"<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\n"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			src, err := os.ReadFile("../jinja/testdata/templates/" + c.file)
			require.NoError(t, err)
			cfg := synth.DefaultConfig()
			cfg.Arch, cfg.ChatTemplate = c.arch, string(src)
			m, err := Load(writeSynth(t, cfg), Options{Threads: 1})
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, string(src), m.ChatTemplate())
			got, err := m.ChatPromptTools(t.Context(), msgs, tools)
			require.NoError(t, err)
			require.Equal(t, c.want, got)
			// Without tools the template takes its plain branch.
			plain, err := m.ChatPromptTools(t.Context(), msgs[:1], nil)
			require.NoError(t, err)
			require.NotContains(t, plain, "get_weather")
		})
	}
	m := loadStories(t)
	got, err := m.ChatPromptTools(t.Context(), msgs, []json.RawMessage{json.RawMessage(`{"type":`)})
	require.NoError(t, err, "no template: the fallback renders no tools")
	require.Equal(t, "User: Weather in Paris?\nAssistant: {\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\nTool: 22C\nAssistant:", got)
	require.Contains(t, fallbackChat("qwen2", msgs), "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call><|im_end|>")
	bad := []Message{{Role: "assistant", ToolCalls: []ToolCall{{Name: "f", Arguments: `{"a":`}}}}
	cfg := synth.DefaultConfig()
	src, err := os.ReadFile("../jinja/testdata/templates/qwen-2.5-tools.jinja")
	require.NoError(t, err)
	cfg.Arch, cfg.ChatTemplate = "qwen2", string(src)
	mq, err := Load(writeSynth(t, cfg), Options{Threads: 1})
	require.NoError(t, err)
	defer mq.Close()
	_, err = mq.ChatPromptTools(t.Context(), bad, nil)
	require.ErrorIs(t, err, ErrBadRequest)
}

// indented is the tool as Llama 3.1's template writes it (tojson(indent=4)).
const indented = `{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string"
                }
            },
            "required": [
                "city"
            ]
        }
    }
}`

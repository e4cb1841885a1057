package jinja

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// orderedJSON decodes JSON into render data that keeps object key order
// (Object), as a Hugging Face caller's Python dicts do.
func orderedJSON(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var walk func() any
	walk = func() any {
		tok, err := dec.Token()
		require.NoError(t, err)
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				obj := Object{}
				for dec.More() {
					k, err := dec.Token()
					require.NoError(t, err)
					obj = append(obj, KV{Key: k.(string), Value: walk()})
				}
				_, err := dec.Token()
				require.NoError(t, err)
				return obj
			case '[':
				arr := []any{}
				for dec.More() {
					arr = append(arr, walk())
				}
				_, err := dec.Token()
				require.NoError(t, err)
				return arr
			}
		}
		return tok
	}
	return walk()
}

// Conversations the published templates are rendered with.
const (
	// chatConv has a system message and an assistant turn with spaces
	// around it (templates that trim show it).
	chatConv = `[{"role": "system", "content": "You are a helpful assistant."},
		{"role": "user", "content": "Hello"},
		{"role": "assistant", "content": " Hi there! "},
		{"role": "user", "content": "How are you?"}]`
	// altConv has no system message, for templates that reject one.
	altConv = `[{"role": "user", "content": "Hello"},
		{"role": "assistant", "content": " Hi there! "},
		{"role": "user", "content": "How are you?"}]`
	// toolConv calls a tool and returns its result.
	toolConv = `[{"role": "system", "content": "You are a helpful assistant."},
		{"role": "user", "content": "What is the weather in Paris?"},
		{"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function",
			"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
		{"role": "tool", "content": "20 degrees", "tool_call_id": "call12345"}]`
	weatherTool = `[{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather",
		"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}]`
	weatherToolJSON    = `{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}`
	weatherToolIndent4 = "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Get the current weather\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n                    \"type\": \"string\",\n                    \"description\": \"City name\"\n                }\n            },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}"
)

// renderChat renders testdata/templates/FILE.jinja the way transformers'
// apply_chat_template does: the conversation conv (JSON), tools (JSON, or ""
// for none), add_generation_prompt true, bos and eos tokens, and the
// template keywords in extra.
func renderChat(t *testing.T, file, conv, tools, bos, eos string, extra map[string]any) (string, error) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "templates", file+".jinja"))
	require.NoError(t, err)
	tm, err := Compile(string(src))
	require.NoError(t, err)
	data := map[string]any{
		"messages":              orderedJSON(t, conv),
		"add_generation_prompt": true,
		"bos_token":             bos,
		"eos_token":             eos,
	}
	if tools != "" {
		data["tools"] = orderedJSON(t, tools)
	}
	for k, v := range extra {
		data[k] = v
	}
	return tm.Render(t.Context(), data)
}

// TestPublishedTemplates renders the chat templates in testdata/templates
// (see testdata/PROVENANCE.md) the way transformers' apply_chat_template
// does (add_generation_prompt=True, bos_token, eos_token, tools when
// given). The expected texts were worked out by hand from Jinja's rules
// (trim_blocks, lstrip_blocks, "-" whitespace control, Python string and
// JSON semantics), not recorded from this implementation.
func TestPublishedTemplates(t *testing.T) {
	cases := []struct {
		file, conv string
		tools      bool
		bos, eos   string
		want       string
		wantErr    string // an ordinary render error (raise_exception)
	}{
		{file: "chatml", conv: chatConv,
			want: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there! <|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"},
		{file: "mistral-v0.2", conv: altConv, bos: "<s>", eos: "</s>",
			want: "<s>[INST] Hello [/INST] Hi there! </s>[INST] How are you? [/INST]"},
		{file: "mistral-v0.2", conv: chatConv, bos: "<s>", eos: "</s>",
			wantErr: "Conversation roles must alternate user/assistant/user/assistant/..."},
		{file: "mistral-v1", conv: chatConv, bos: "<s>", eos: "</s>",
			want: "<s> [INST] You are a helpful assistant.\n\nHello [/INST]  Hi there! </s> [INST] How are you? [/INST]"},
		{file: "mistral-v3-tools", conv: chatConv, bos: "<s>", eos: "</s>",
			want: "<s>[INST] Hello[/INST] Hi there!</s>[INST] You are a helpful assistant.\n\nHow are you?[/INST]"},
		{file: "mistral-v3-tools", conv: toolConv, tools: true, bos: "<s>", eos: "</s>",
			want: `<s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}][/AVAILABLE_TOOLS]` +
				`[INST] What is the weather in Paris?[/INST]` +
				`[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call12345"}]</s>` +
				`[TOOL_RESULTS] {"content": 20 degrees, "call_id": "call12345"}[/TOOL_RESULTS]`},
		{file: "gemma-it", conv: altConv,
			want: "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"},
		{file: "gemma-it", conv: chatConv, wantErr: "System role not supported"},
		{file: "llama-2-chat", conv: chatConv, bos: "<s>", eos: "</s>",
			want: "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi there! </s><s>[INST] How are you? [/INST]"},
		{file: "llama-2-chat", conv: altConv, bos: "<s>", eos: "</s>",
			want: "<s>[INST] Hello [/INST] Hi there! </s><s>[INST] How are you? [/INST]"},
		{file: "llama-3", conv: chatConv, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "llama-3.1-tools", conv: chatConv, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a helpful assistant.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "llama-3.1-tools", conv: toolConv, tools: true, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a helpful assistant.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n" +
				"Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n" +
				weatherToolIndent4 + "\n\nWhat is the weather in Paris?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>" +
				"<|start_header_id|>ipython<|end_header_id|>\n\n\"20 degrees\"<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "qwen-2.5-tools", conv: chatConv,
			want: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there! <|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"},
		{file: "qwen-2.5-tools", conv: altConv,
			want: "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there! <|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"},
		{file: "qwen-2.5-tools", conv: toolConv, tools: true,
			want: "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
				weatherToolJSON +
				"\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" +
				"<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n" +
				"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n" +
				"<|im_start|>user\n<tool_response>\n20 degrees\n</tool_response><|im_end|>\n" +
				"<|im_start|>assistant\n"},
		{file: "zephyr", conv: chatConv, eos: "</s>",
			want: "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello</s>\n<|assistant|>\n Hi there! </s>\n<|user|>\nHow are you?</s>\n<|assistant|>\n"},
		{file: "phi-3", conv: chatConv, bos: "<s>", eos: "<|endoftext|>",
			want: "<s><|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\n Hi there! <|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n"},
		{file: "command-r", conv: chatConv, bos: "<BOS_TOKEN>", eos: "<|END_OF_TURN_TOKEN|>",
			want: "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there!<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>How are you?<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"},
		{file: "deepseek-coder", conv: chatConv, bos: "<bos>",
			want: "<bos>You are a helpful assistant.### Instruction:\nHello\n### Response:\n Hi there! \n<|EOT|>\n### Instruction:\nHow are you?\n### Response:\n"},
		{file: "deepseek-coder", conv: altConv, bos: "<bos>",
			want: "<bos>You are an AI programming assistant, utilizing the Deepseek Coder model, developed by Deepseek Company, and you only answer questions related to computer science. For politically sensitive questions, security and privacy issues, and other non-computer science questions, you will refuse to answer\n" +
				"### Instruction:\nHello\n### Response:\n Hi there! \n<|EOT|>\n### Instruction:\nHow are you?\n### Response:\n"},
		{file: "deepseek-v2", conv: chatConv, bos: "<｜begin▁of▁sentence｜>", eos: "<｜end▁of▁sentence｜>",
			want: "<｜begin▁of▁sentence｜>You are a helpful assistant.\n\nUser: Hello\n\nAssistant:  Hi there! <｜end▁of▁sentence｜>User: How are you?\n\nAssistant:"},
		{file: "vicuna", conv: chatConv,
			want: "You are a helpful assistant.\n\nUSER: Hello\nASSISTANT:  Hi there! </s>\nUSER: How are you?\nASSISTANT:"},
		{file: "openchat", conv: altConv, bos: "<s>",
			want: "<s>GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant:  Hi there! <|end_of_turn|>GPT4 Correct User: How are you?<|end_of_turn|>GPT4 Correct Assistant:"},
		{file: "granite-3.0", conv: chatConv,
			want: "<|start_of_role|>system<|end_of_role|>You are a helpful assistant.<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|> Hi there! <|end_of_text|>\n<|start_of_role|>user<|end_of_role|>How are you?<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"},
	}
	for _, c := range cases {
		name := c.file
		switch c.conv {
		case altConv:
			name += "/alt"
		case toolConv:
			name += "/tools"
		default:
			name += "/chat"
		}
		t.Run(name, func(t *testing.T) {
			tools := ""
			if c.tools {
				tools = weatherTool
			}
			got, err := renderChat(t, c.file, c.conv, tools, c.bos, c.eos, nil)
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				require.False(t, errors.Is(err, ErrBudget))
				var je *Error
				require.ErrorAs(t, err, &je)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

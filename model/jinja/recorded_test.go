package jinja

import (
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Conversations and tools of the recorded cases, beside those in
// templates_test.go.
const (
	richTool = `[{"type": "function", "function": {"name": "search", "description": "Search the web",
		"parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "Query"},
			"topn": {"type": "integer", "default": 10}, "mode": {"type": "string", "enum": ["fast", "deep"], "default": "fast"},
			"tags": {"type": "array", "items": {"type": "string"}}, "filter": {"type": "object", "properties": {"site": {"type": "string", "nullable": true}}},
			"ids": {"type": ["string", "integer"]}, "when": {"oneOf": [{"type": "string", "description": "a date"}, {"type": "number"}]}},
			"required": ["query"]}}}]`
	reasonConv = `[{"role": "system", "content": "You are a helpful assistant."},
		{"role": "user", "content": "What is 2+2?"},
		{"role": "assistant", "content": "4", "reasoning_content": "Add 2 and 2.", "thinking": "Add 2 and 2."},
		{"role": "user", "content": "And 3+3?"}]`
	reasonToolConv = `[{"role": "user", "content": "What is the weather in Paris?"},
		{"role": "assistant", "content": "", "reasoning_content": "I should call get_weather.", "thinking": "I should call get_weather.",
			"tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
		{"role": "tool", "content": "20 degrees", "tool_call_id": "call12345"}]`
	thinkTagConv = `[{"role": "user", "content": "What is 2+2?"},
		{"role": "assistant", "content": "<think>\nAdd 2 and 2.\n</think>\n\n4"},
		{"role": "user", "content": "And 3+3?"}]`
	toolStrConv = `[{"role": "user", "content": "What is the weather in Paris?"},
		{"role": "assistant", "content": null, "tool_calls": [{"id": "call12345", "type": "function",
			"function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
		{"role": "tool", "content": "20 degrees", "tool_call_id": "call12345"},
		{"role": "assistant", "content": "It is 20 degrees."},
		{"role": "user", "content": "Thanks"}]`
	blocksConv = `[{"role": "user", "content": [{"type": "text", "text": "Describe this."}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
		{"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
		{"role": "user", "content": "Thanks"}]`
	unicodeConv = `[{"role": "user", "content": "Grüße, 東京 — \"quoted\" \\ tab\t"}]`
)

// recordedDate is the time strftime_now returned when the expected texts of
// TestRecordedTemplates were recorded; the test writes today's date back to
// it so the expectations hold on any day.
var recordedDate = time.Date(2025, 8, 5, 12, 0, 0, 0, time.UTC)

// recordedDateFormats are the strftime_now formats the recorded templates
// use (gpt-oss: %Y-%m-%d; Llama 3.2: %d %b %Y).
var recordedDateFormats = []string{"%Y-%m-%d", "%d %b %Y"}

// TestRecordedTemplates renders the chat templates models publish now
// (gpt-oss, Qwen3, the DeepSeek-R1 distills, Llama 3.2 and 3.3, Mistral
// Small 3.2, functionary v3.1 without tools; see
// testdata/PROVENANCE.md) and compares with the texts Python's jinja2 3.1.6
// rendered, in the environment transformers' apply_chat_template uses:
// ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the
// loopcontrols extension; tojson as json.dumps with ensure_ascii=False;
// raise_exception; strftime_now (pinned to recordedDate);
// add_generation_prompt=True plus the template keywords in extra. The
// expected strings were recorded from jinja2, not from this package. A
// wantErr starting with "*" is a Python TypeError jinja2 raised (a null
// content where the template expects a string): any render error (not a
// budget error) matches it, as the wording is Python's.
func TestRecordedTemplates(t *testing.T) {
	cases := []struct {
		file, conv  string
		tools, rich bool
		bos, eos    string
		extra       map[string]any
		want        string
		wantErr     string
	}{
		{file: "gpt-oss", conv: chatConv, tools: false, bos: "<|startoftext|>", eos: "<|return|>",
			want: "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>developer<|message|># Instructions\n\nYou are a helpful assistant.\n\n<|end|><|start|>user<|message|>Hello<|end|><|start|>assistant<|channel|>final<|message|> Hi there! <|end|><|start|>user<|message|>How are you?<|end|><|start|>assistant"},
		{file: "gpt-oss", conv: altConv, tools: false, bos: "<|startoftext|>", eos: "<|return|>", extra: map[string]any{"reasoning_effort": "high"},
			want: "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: high\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>user<|message|>Hello<|end|><|start|>assistant<|channel|>final<|message|> Hi there! <|end|><|start|>user<|message|>How are you?<|end|><|start|>assistant"},
		{file: "gpt-oss", conv: toolConv, tools: true, bos: "<|startoftext|>", eos: "<|return|>",
			want: "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.\nCalls to these tools must go to the commentary channel: 'functions'.<|end|><|start|>developer<|message|># Instructions\n\nYou are a helpful assistant.\n\n# Tools\n\n## functions\n\nnamespace functions {\n\n// Get the current weather\ntype get_weather = (_: {\n// City name\ncity: string,\n}) => any;\n\n} // namespace functions<|end|><|start|>user<|message|>What is the weather in Paris?<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\"}<|call|><|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>\"20 degrees\"<|end|><|start|>assistant"},
		{file: "gpt-oss", conv: reasonConv, tools: false, bos: "<|startoftext|>", eos: "<|return|>", extra: map[string]any{"reasoning_effort": "low"},
			want: "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: low\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>developer<|message|># Instructions\n\nYou are a helpful assistant.\n\n<|end|><|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>final<|message|>4<|end|><|start|>user<|message|>And 3+3?<|end|><|start|>assistant"},
		{file: "gpt-oss", conv: reasonToolConv, tools: true, bos: "<|startoftext|>", eos: "<|return|>",
			want: "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.\nCalls to these tools must go to the commentary channel: 'functions'.<|end|><|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n// Get the current weather\ntype get_weather = (_: {\n// City name\ncity: string,\n}) => any;\n\n} // namespace functions<|end|><|start|>user<|message|>What is the weather in Paris?<|end|><|start|>assistant<|channel|>analysis<|message|>I should call get_weather.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\"}<|call|><|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>\"20 degrees\"<|end|><|start|>assistant"},
		{file: "gpt-oss", conv: unicodeConv, tools: false, bos: "<|startoftext|>", eos: "<|return|>",
			want: "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>user<|message|>Grüße, 東京 — \"quoted\" \\ tab\t<|end|><|start|>assistant"},
		{file: "qwen3", conv: chatConv, tools: false, bos: "", eos: "<|im_end|>",
			want: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there! <|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"},
		{file: "qwen3", conv: chatConv, tools: false, bos: "", eos: "<|im_end|>", extra: map[string]any{"enable_thinking": false},
			want: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there! <|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"},
		{file: "qwen3", conv: toolConv, tools: true, bos: "", eos: "<|im_end|>",
			want: "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n20 degrees\n</tool_response><|im_end|>\n<|im_start|>assistant\n"},
		{file: "qwen3", conv: reasonConv, tools: false, bos: "", eos: "<|im_end|>",
			want: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"},
		{file: "qwen3", conv: reasonToolConv, tools: true, bos: "", eos: "<|im_end|>",
			want: "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n<think>\nI should call get_weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n20 degrees\n</tool_response><|im_end|>\n<|im_start|>assistant\n"},
		{file: "qwen3", conv: thinkTagConv, tools: false, bos: "", eos: "<|im_end|>", extra: map[string]any{"enable_thinking": true},
			want: "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"},
		{file: "qwen3", conv: unicodeConv, tools: true, bos: "", eos: "<|im_end|>",
			want: "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nGrüße, 東京 — \"quoted\" \\ tab\t<|im_end|>\n<|im_start|>assistant\n"},
		{file: "deepseek-r1-distill-qwen", conv: chatConv, tools: false, bos: "<｜begin▁of▁sentence｜>", eos: "<｜end▁of▁sentence｜>",
			want: "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hello<｜Assistant｜> Hi there! <｜end▁of▁sentence｜><｜User｜>How are you?<｜Assistant｜><think>\n"},
		{file: "deepseek-r1-distill-qwen", conv: thinkTagConv, tools: false, bos: "<｜begin▁of▁sentence｜>", eos: "<｜end▁of▁sentence｜>",
			want: "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜User｜>And 3+3?<｜Assistant｜><think>\n"},
		{file: "deepseek-r1-distill-qwen", conv: toolConv, tools: false, bos: "<｜begin▁of▁sentence｜>", eos: "<｜end▁of▁sentence｜>",
			want: "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>What is the weather in Paris?<｜Assistant｜><｜end▁of▁sentence｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>20 degrees<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"},
		{file: "llama-3.2", conv: chatConv, tools: false, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 05 Aug 2025\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "llama-3.2", conv: toolConv, tools: true, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 05 Aug 2025\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Get the current weather\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n                    \"type\": \"string\",\n                    \"description\": \"City name\"\n                }\n            },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}\n\nWhat is the weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"20 degrees\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "gpt-oss", conv: toolStrConv, tools: true, bos: "<|startoftext|>", eos: "<|return|>",
			wantErr: "*argument of type 'NoneType' is not iterable"},
		{file: "gpt-oss", conv: altConv, tools: true, rich: true, bos: "<|startoftext|>", eos: "<|return|>",
			want: "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.\nCalls to these tools must go to the commentary channel: 'functions'.<|end|><|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n// Search the web\ntype search = (_: {\n// Query\nquery: string,\ntopn?: number, // default: 10,\nmode?: \"fast\" | \"deep\", // default: fast,\ntags?: string[],\nfilter?: {\nsite?: \n                string | null},\nids?: string | integer,\nwhen?: string// a date | \nnumber,\n}) => any;\n\n} // namespace functions<|end|><|start|>user<|message|>Hello<|end|><|start|>assistant<|channel|>final<|message|> Hi there! <|end|><|start|>user<|message|>How are you?<|end|><|start|>assistant"},
		{file: "qwen3", conv: toolStrConv, tools: true, bos: "", eos: "<|im_end|>",
			wantErr: "*argument of type 'NoneType' is not iterable"},
		{file: "deepseek-r1-distill-qwen", conv: toolStrConv, tools: false, bos: "<｜begin▁of▁sentence｜>", eos: "<｜end▁of▁sentence｜>",
			want: "<｜begin▁of▁sentence｜><｜User｜>What is the weather in Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>20 degrees<｜tool▁output▁end｜><｜tool▁outputs▁end｜>It is 20 degrees.<｜end▁of▁sentence｜><｜User｜>Thanks<｜Assistant｜><think>\n"},
		{file: "llama-3.2", conv: toolStrConv, tools: true, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 05 Aug 2025\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Get the current weather\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n                    \"type\": \"string\",\n                    \"description\": \"City name\"\n                }\n            },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}\n\nWhat is the weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": \"{\\\"city\\\": \\\"Paris\\\"}\"}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"20 degrees\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nIt is 20 degrees.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "mistral-small-3.2", conv: chatConv, tools: false, bos: "<s>", eos: "</s>",
			want: "<s>[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT][INST]Hello[/INST] Hi there! </s>[INST]How are you?[/INST]"},
		{file: "mistral-small-3.2", conv: altConv, tools: false, bos: "<s>", eos: "</s>",
			want: "<s>[SYSTEM_PROMPT]You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, a French startup headquartered in Paris.\nYour knowledge base was last updated on 2023-10-01. The current date is 2025-08-05.\n\nWhen you're not sure about some information or when the user's request requires up-to-date or specific data, you must use the available tools to fetch the information. Do not hesitate to use tools whenever they can provide a more accurate or complete response. If no relevant tools are available, then clearly state that you don't have the information and avoid making up anything.\n\nIf the user's question is not clear, ambiguous, or does not provide enough context for you to accurately answer the question, you do not try to answer it right away and you rather ask the user to clarify their request (e.g. \"What are some good restaurants around me?\" => \"Where are you?\" or \"When is the next flight to Tokyo\" => \"Where do you travel from?\").\nYou are always very attentive to dates, and when asked about information at specific dates, you discard information that is at another date.\nYou follow these instructions in all languages, and always respond to the user in the language they use or request.\nNext sections describe the capabilities that you have.\n\n# WEB BROWSING INSTRUCTIONS\n\nYou cannot perform any web search or access internet to open URLs, links etc. If it seems like the user is expecting you to do so, you clarify the situation and ask the user to copy paste the text directly in the chat.\n\n# MULTI-MODAL INSTRUCTIONS\n\nYou have the ability to read images, but you cannot generate images. You also cannot transcribe audio files or videos.\nYou cannot read nor transcribe audio files or videos.\n\n# TOOL CALLING INSTRUCTIONS\n\nYou may have access to tools that you can use to fetch information or perform actions. You must use these tools in the following situations:\n\n1. When the request requires up-to-date information.\n2. When the request requires specific data that you do not have in your knowledge base.\n3. When the request involves actions that you cannot perform without tools.\n\nAlways prioritize using tools to provide the most accurate and helpful response. If tools are not available, inform the user that you cannot perform the requested action at the moment.[/SYSTEM_PROMPT][INST]Hello[/INST] Hi there! </s>[INST]How are you?[/INST]"},
		{file: "mistral-small-3.2", conv: toolConv, tools: true, bos: "<s>", eos: "</s>",
			want: "<s>[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}}, \"required\": [\"city\"]}}}][/AVAILABLE_TOOLS][INST]What is the weather in Paris?[/INST][TOOL_CALLS]get_weather[CALL_ID]call12345[ARGS]{\"city\": \"Paris\"}</s>[TOOL_RESULTS]call12345[TOOL_CONTENT]20 degrees[/TOOL_RESULTS]"},
		{file: "mistral-small-3.2", conv: blocksConv, tools: false, bos: "<s>", eos: "</s>",
			want: "<s>[SYSTEM_PROMPT]You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, a French startup headquartered in Paris.\nYour knowledge base was last updated on 2023-10-01. The current date is 2025-08-05.\n\nWhen you're not sure about some information or when the user's request requires up-to-date or specific data, you must use the available tools to fetch the information. Do not hesitate to use tools whenever they can provide a more accurate or complete response. If no relevant tools are available, then clearly state that you don't have the information and avoid making up anything.\n\nIf the user's question is not clear, ambiguous, or does not provide enough context for you to accurately answer the question, you do not try to answer it right away and you rather ask the user to clarify their request (e.g. \"What are some good restaurants around me?\" => \"Where are you?\" or \"When is the next flight to Tokyo\" => \"Where do you travel from?\").\nYou are always very attentive to dates, and when asked about information at specific dates, you discard information that is at another date.\nYou follow these instructions in all languages, and always respond to the user in the language they use or request.\nNext sections describe the capabilities that you have.\n\n# WEB BROWSING INSTRUCTIONS\n\nYou cannot perform any web search or access internet to open URLs, links etc. If it seems like the user is expecting you to do so, you clarify the situation and ask the user to copy paste the text directly in the chat.\n\n# MULTI-MODAL INSTRUCTIONS\n\nYou have the ability to read images, but you cannot generate images. You also cannot transcribe audio files or videos.\nYou cannot read nor transcribe audio files or videos.\n\n# TOOL CALLING INSTRUCTIONS\n\nYou may have access to tools that you can use to fetch information or perform actions. You must use these tools in the following situations:\n\n1. When the request requires up-to-date information.\n2. When the request requires specific data that you do not have in your knowledge base.\n3. When the request involves actions that you cannot perform without tools.\n\nAlways prioritize using tools to provide the most accurate and helpful response. If tools are not available, inform the user that you cannot perform the requested action at the moment.[/SYSTEM_PROMPT][INST]Describe this.[IMG][/INST]A cat.</s>[INST]Thanks[/INST]"},
		{file: "mistral-small-3.2", conv: reasonToolConv, tools: true, bos: "<s>", eos: "</s>",
			want: "<s>[SYSTEM_PROMPT]You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, a French startup headquartered in Paris.\nYour knowledge base was last updated on 2023-10-01. The current date is 2025-08-05.\n\nWhen you're not sure about some information or when the user's request requires up-to-date or specific data, you must use the available tools to fetch the information. Do not hesitate to use tools whenever they can provide a more accurate or complete response. If no relevant tools are available, then clearly state that you don't have the information and avoid making up anything.\n\nIf the user's question is not clear, ambiguous, or does not provide enough context for you to accurately answer the question, you do not try to answer it right away and you rather ask the user to clarify their request (e.g. \"What are some good restaurants around me?\" => \"Where are you?\" or \"When is the next flight to Tokyo\" => \"Where do you travel from?\").\nYou are always very attentive to dates, and when asked about information at specific dates, you discard information that is at another date.\nYou follow these instructions in all languages, and always respond to the user in the language they use or request.\nNext sections describe the capabilities that you have.\n\n# WEB BROWSING INSTRUCTIONS\n\nYou cannot perform any web search or access internet to open URLs, links etc. If it seems like the user is expecting you to do so, you clarify the situation and ask the user to copy paste the text directly in the chat.\n\n# MULTI-MODAL INSTRUCTIONS\n\nYou have the ability to read images, but you cannot generate images. You also cannot transcribe audio files or videos.\nYou cannot read nor transcribe audio files or videos.\n\n# TOOL CALLING INSTRUCTIONS\n\nYou may have access to tools that you can use to fetch information or perform actions. You must use these tools in the following situations:\n\n1. When the request requires up-to-date information.\n2. When the request requires specific data that you do not have in your knowledge base.\n3. When the request involves actions that you cannot perform without tools.\n\nAlways prioritize using tools to provide the most accurate and helpful response. If tools are not available, inform the user that you cannot perform the requested action at the moment.[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}}, \"required\": [\"city\"]}}}][/AVAILABLE_TOOLS][INST]What is the weather in Paris?[/INST][TOOL_CALLS]get_weather[CALL_ID]call12345[ARGS]{\"city\": \"Paris\"}</s>[TOOL_RESULTS]call12345[TOOL_CONTENT]20 degrees[/TOOL_RESULTS]"},
		{file: "llama-3.3", conv: chatConv, tools: false, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "llama-3.3", conv: toolConv, tools: true, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Get the current weather\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n                    \"type\": \"string\",\n                    \"description\": \"City name\"\n                }\n            },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}\n\nWhat is the weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"20 degrees\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "functionary-v3.1", conv: chatConv, tools: false, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\nCutting Knowledge Date: December 2023\n\n<|eot_id|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n Hi there! <|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{file: "functionary-v3.1", conv: toolConv, tools: false, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			wantErr: "*can only concatenate str (not \"dict\") to str"},
		{file: "llama-3.2", conv: unicodeConv, tools: true, bos: "<|begin_of_text|>", eos: "<|eot_id|>",
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 05 Aug 2025\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Get the current weather\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n                    \"type\": \"string\",\n                    \"description\": \"City name\"\n                }\n            },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}\n\nGrüße, 東京 — \"quoted\" \\ tab<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
	}
	names := map[string]bool{}
	for _, c := range cases {
		name := c.file + "/" + convName(c.conv)
		if c.rich {
			name += "/rich-tool"
		}
		keys := make([]string, 0, len(c.extra))
		for k := range c.extra {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name += "/" + k
		}
		require.False(t, names[name], "duplicate case %s", name)
		names[name] = true
		t.Run(name, func(t *testing.T) {
			tools := ""
			switch {
			case c.rich:
				tools = richTool
			case c.tools:
				tools = weatherTool
			}
			before := time.Now()
			got, err := renderChat(t, c.file, c.conv, tools, c.bos, c.eos, c.extra)
			after := time.Now()
			if c.wantErr != "" {
				require.Error(t, err)
				require.False(t, errors.Is(err, ErrBudget))
				var je *Error
				require.ErrorAs(t, err, &je)
				if !strings.HasPrefix(c.wantErr, "*") {
					require.ErrorContains(t, err, c.wantErr)
				}
				return
			}
			require.NoError(t, err)
			for _, f := range recordedDateFormats {
				for _, at := range []time.Time{before, after} {
					got = strings.ReplaceAll(got, strftime(at, f), strftime(recordedDate, f))
				}
			}
			require.Equal(t, c.want, got)
		})
	}
}

// convName names a conversation constant for a subtest.
func convName(conv string) string {
	for name, c := range map[string]string{
		"chat": chatConv, "alt": altConv, "tools": toolConv, "reason": reasonConv,
		"reason-tools": reasonToolConv, "think-tag": thinkTagConv, "tool-str": toolStrConv,
		"blocks": blocksConv, "unicode": unicodeConv,
	} {
		if c == conv {
			return name
		}
	}
	return "conv"
}

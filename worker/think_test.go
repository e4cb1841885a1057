package worker

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rbee-project/rbee/internal/ggufedit"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/model/tokenizer"
	"github.com/stretchr/testify/require"
)

// thinkTestTemplate renders turns as Qwen3's template does (written for
// these tests): the tools and how to call them (in <tool_call> markup)
// in a system turn, an earlier answer's reasoning_content as a think block
// before its content, and the assistant's turn opened at the end; with
// enable_thinking false an empty think block closes it (Qwen3's), and
// with open_think the generation prompt opens the block itself (QwQ's,
// the later R1 distills').
const thinkTestTemplate = `{% if tools %}<|im_start|>system
# Tools{% for t in tools %} {{ t.function.name }}{% endfor %}; call one as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>
{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}
{% if m.reasoning_content %}<think>
{{ m.reasoning_content }}
</think>

{% endif %}{{ m.content }}<|im_end|>
{% endfor %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking == false %}<think>

</think>

{% elif open_think %}<think>
{% endif %}`

// thinkModelFile writes a tiny model whose chat template is
// thinkTestTemplate (a random-weight model: what it writes is scripted),
// with no space put before a text, as Qwen's BPE puts none.
func thinkModelFile(t *testing.T) string {
	t.Helper()
	mcfg := synth.DefaultConfig()
	mcfg.ChatTemplate = thinkTestTemplate
	plain := filepath.Join(t.TempDir(), "plain.gguf")
	require.NoError(t, synth.Write(plain, mcfg))
	src, err := gguf.Open(plain)
	require.NoError(t, err)
	defer src.Close()
	path := filepath.Join(t.TempDir(), "think.gguf")
	require.NoError(t, ggufedit.Write(path, src, nil, map[string]any{"tokenizer.ggml.add_space_prefix": false}))
	return path
}

// thinkCases are answers as a think-tag model writes them (after the
// prompt) and what the chat API makes of them.
var thinkCases = []struct {
	name, answer       string
	open               bool // the prompt opened the block
	content, reasoning string
	calls              []ToolCallFunction
}{
	{name: "reasoning then answer", answer: "<think>\nThe user says hi.\nAnswer.\n</think>\n\nHello there!",
		content: "Hello there!", reasoning: "The user says hi.\nAnswer."},
	{name: "the prompt opened the block", open: true, answer: "The user says hi.\n</think>\n\nHello there!",
		content: "Hello there!", reasoning: "The user says hi."},
	{name: "no block", answer: "Hello there!", content: "Hello there!"},
	{name: "an empty block", answer: "<think>\n\n</think>\n\nHello", content: "Hello"},
	{name: "cut inside the reasoning", answer: "<think>\nThinking about it", reasoning: "Thinking about it"},
	{name: "cut inside the prompt's block", open: true, answer: "Thinking </thi", reasoning: "Thinking </thi"},
	{name: "cut after the block", answer: "<think>\nhm\n</think>\n\n", reasoning: "hm"},
	{name: "a tag that is not one", answer: "<thinking> is a word", content: "<thinking> is a word"},
	{name: "tags inside the reasoning", answer: "<think>a </thinker> b <think></think>c", content: "c", reasoning: "a </thinker> b <think>"},
	{name: "a later block is text", answer: "Hi <think>x</think>", content: "Hi <think>x</think>"},
	{name: "a call after the reasoning",
		answer:    "<think>\nNeed weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
		reasoning: "Need weather.", calls: []ToolCallFunction{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
	{name: "text and a call after the prompt's block", open: true,
		answer:    "Need weather.\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
		reasoning: "Need weather.", content: "Let me check.\n", calls: []ToolCallFunction{{Name: "get_weather", Arguments: `{}`}}},
}

// thinkRun pushes an answer's parts through a ThinkStream with tools.
func thinkRun(open bool, names []string, parts ...string) (content, reasoning string, calls []ToolCall) {
	return reasoningRun(NewReasoningStream(FormatThink, open, true), names, parts...)
}

// TestThinkStream: think-tag answers, as a real tokenizer cuts them,
// parse into content, reasoning and calls, pushed token by token, whole,
// and split in two at every token boundary, always the same.
func TestThinkStream(t *testing.T) {
	m, err := engine.Load(thinkModelFile(t), engine.Options{Threads: 1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	names := []string{"get_weather"}
	for _, tc := range thinkCases {
		t.Run(tc.name, func(t *testing.T) {
			_, pieces := harmonyPieces(t, m.Tokenizer(), tc.answer)
			check := func(how string, parts []string) {
				content, reasoning, calls := thinkRun(tc.open, names, parts...)
				require.Equal(t, tc.content, content, how)
				require.Equal(t, tc.reasoning, reasoning, how)
				var got []ToolCallFunction
				for _, c := range calls {
					got = append(got, c.Function)
				}
				require.Equal(t, tc.calls, got, how)
			}
			check("token by token", pieces)
			check("whole", []string{tc.answer})
			check("byte by byte", strings.Split(tc.answer, ""))
			for i := 1; i < len(pieces); i++ {
				check("split", []string{strings.Join(pieces[:i], ""), strings.Join(pieces[i:], "")})
			}
		})
	}
}

// FuzzThinkStream: whatever the model writes, an answer pushed in two
// pieces (split anywhere) parses as it does whole.
func FuzzThinkStream(f *testing.F) {
	for _, tc := range thinkCases {
		f.Add(tc.answer, uint(len(tc.answer)/2), tc.open)
	}
	f.Fuzz(func(t *testing.T, answer string, at uint, open bool) {
		at %= uint(len(answer) + 1)
		c1, r1, k1 := thinkRun(open, []string{"get_weather"}, answer)
		c2, r2, k2 := thinkRun(open, []string{"get_weather"}, answer[:at], answer[at:])
		require.Equal(t, c1, c2)
		require.Equal(t, r1, r2)
		require.Equal(t, len(k1), len(k2))
	})
}

// TestThinkChat: a think-tag model's answers (scripted through the real
// engine, the model given a Qwen3-style template) come out of
// /v1/chat/completions as reasoning_content, content and tool calls,
// streamed and whole alike: an answer whose block the prompt opened
// (open_think), stop strings that cut the answer but not the reasoning,
// reasoning_format none (the raw text; another value is refused),
// max_tokens inside the reasoning (reasoning alone, length), logprobs of
// every token both ways.
func TestThinkChat(t *testing.T) {
	var script atomic.Pointer[[]int32]
	var tok *tokenizer.Tokenizer
	cfg := testConfig(t)
	cfg.ModelPath, cfg.Load = thinkModelFile(t), scriptedLoad(&script, &tok)
	_, base := startServer(t, cfg)

	tools := []any{map[string]any{"type": "function", "function": map[string]any{"name": "get_weather",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}}}}}
	open := map[string]any{"open_think": true}
	for _, tc := range []struct {
		name, answer string
		extra        map[string]any
		want         Message
		finish       string
		cut          string // max_tokens ends the answer before it
	}{
		{name: "answer", answer: thinkCases[0].answer,
			want: Message{Content: "Hello there!", ReasoningContent: "The user says hi.\nAnswer."}, finish: "stop"},
		{name: "the prompt opened the block", answer: thinkCases[1].answer, extra: map[string]any{"chat_template_kwargs": open},
			want: Message{Content: "Hello there!", ReasoningContent: "The user says hi."}, finish: "stop"},
		{name: "thinking off", answer: "Hello there!", extra: map[string]any{"chat_template_kwargs": map[string]any{"enable_thinking": false}},
			want: Message{Content: "Hello there!"}, finish: "stop"},
		{name: "tool call", answer: thinkCases[10].answer, extra: map[string]any{"tools": tools},
			want:   Message{ReasoningContent: "Need weather.", ToolCalls: []ToolCall{{Type: "function", Function: ToolCallFunction{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}},
			finish: "tool_calls"},
		// A stop string is the answer's: met in the reasoning it does
		// not fire (it ended the answer before it began).
		{name: "stop strings", answer: thinkCases[0].answer, extra: map[string]any{"stop": []string{"says", "there"}},
			want: Message{Content: "Hello ", ReasoningContent: "The user says hi.\nAnswer."}, finish: "stop"},
		{name: "stop strings, the prompt opened the block", answer: thinkCases[1].answer,
			extra: map[string]any{"chat_template_kwargs": open, "stop": []string{"user", "!"}},
			want:  Message{Content: "Hello there", ReasoningContent: "The user says hi."}, finish: "stop"},
		// reasoning_format none (llama-server's): the text as the model
		// wrote it, stop strings matched in all of it.
		{name: "reasoning_format none", answer: thinkCases[0].answer, extra: map[string]any{"reasoning_format": "none"},
			want: Message{Content: thinkCases[0].answer}, finish: "stop"},
		{name: "reasoning_format none with a stop string", answer: thinkCases[0].answer, extra: map[string]any{"reasoning_format": "none", "stop": []string{"says"}},
			want: Message{Content: "<think>\nThe user "}, finish: "stop"},
		{name: "reasoning_format auto", answer: thinkCases[0].answer, extra: map[string]any{"reasoning_format": "auto"},
			want: Message{Content: "Hello there!", ReasoningContent: "The user says hi.\nAnswer."}, finish: "stop"},
		{name: "max_tokens inside the reasoning", answer: thinkCases[0].answer, cut: "says", finish: "length"},
		{name: "max_tokens inside the prompt's block", answer: thinkCases[1].answer, extra: map[string]any{"chat_template_kwargs": open},
			cut: "says", finish: "length"},
		// A call that max_tokens cuts after the reasoning is the call as
		// far as it went, as other models' (not its markup as content).
		{name: "max_tokens inside a call", answer: thinkCases[10].answer, extra: map[string]any{"tools": tools}, cut: "Paris",
			want:   Message{ReasoningContent: "Need weather.", ToolCalls: []ToolCall{{Type: "function", Function: ToolCallFunction{Name: "get_weather", Arguments: `{"city": "`}}}},
			finish: "length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, _ := harmonyPieces(t, tok, tc.answer)
			ids = append(ids, tok.EOS())
			script.Store(&ids)
			body := map[string]any{"messages": []Message{{Role: "user", Content: "hi"}}, "temperature": 0, "logprobs": true}
			for k, v := range tc.extra {
				body[k] = v
			}
			if tc.cut != "" {
				body["max_tokens"] = len(tok.Encode(tc.answer[:strings.Index(tc.answer, tc.cut)], false, true))
			}
			got, cc := chatBothWays(t, base, body)
			want := tc.want
			want.Role = "assistant"
			if tc.cut == "says" {
				// Cut inside the reasoning: no content, some reasoning.
				require.NotEmpty(t, got.ReasoningContent)
				require.True(t, strings.HasPrefix("The user says hi.", got.ReasoningContent), got.ReasoningContent)
				want.ReasoningContent = got.ReasoningContent
			}
			require.Equal(t, want, got)
			require.Equal(t, tc.finish, cc.Choices[0].FinishReason)
			if tc.extra["stop"] == nil {
				require.Len(t, cc.Choices[0].Logprobs.Content, cc.Usage.CompletionTokens, "an entry for every token, the reasoning's too")
			}
		})
	}
	resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: "hi"}}, "reasoning_format": "deepseek-legacy"})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var eb ErrorBody
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
	require.Equal(t, "reasoning_format", *eb.Error.Param)

}

// TestThinkInfer: /v1/info says a think-tag model thinks (the node's
// /api/show lists the thinking capability by it); /v1/infer's started event says a think-tag model's
// answers have think tags and whether the prompt opened the block (the
// node's Ollama API parses them by it); think true or false is taken,
// false reaching the template as enable_thinking false, a level is
// refused (this model thinks or not), and think true on a model that
// writes no reasoning is refused, each naming think; the OpenAI endpoint
// refuses think as unknown. An earlier answer's reasoning reaches the
// template, as reasoning_content and as Ollama's thinking.
func TestThinkInfer(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelPath = thinkModelFile(t)
	_, base := startServer(t, cfg)
	_, plainBase := startServer(t, testConfig(t))
	hi := []any{map[string]any{"role": "user", "content": "hi"}}

	var info, plainInfo Info
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/info", &info))
	require.True(t, info.Thinking, "Ollama's thinking capability")
	require.Equal(t, http.StatusOK, getJSON(t, plainBase+"/v1/info", &plainInfo))
	require.False(t, plainInfo.Thinking)

	s := infer(t, base, map[string]any{"messages": hi, "max_tokens": 1})
	require.Equal(t, FormatThink, s.Started.Format)
	require.False(t, s.Started.ThinkOpen)
	on := infer(t, base, map[string]any{"messages": hi, "max_tokens": 1, "think": true})
	require.Equal(t, s.Started.PromptTokens, on.Started.PromptTokens)
	s = infer(t, base, map[string]any{"messages": hi, "max_tokens": 1, "chat_template_kwargs": map[string]any{"open_think": true}})
	require.True(t, s.Started.ThinkOpen)
	off := infer(t, base, map[string]any{"messages": hi, "max_tokens": 1, "think": false, "chat_template_kwargs": map[string]any{"open_think": true}})
	require.False(t, off.Started.ThinkOpen, "think false closes the block")
	require.Greater(t, off.Started.PromptTokens, on.Started.PromptTokens, "the empty block is in the prompt")
	// A constrained answer is written by the grammar from its first
	// token: it starts outside the block.
	s = infer(t, base, map[string]any{"messages": hi, "max_tokens": 1, "chat_template_kwargs": map[string]any{"open_think": true},
		"response_format": map[string]any{"type": "json_object"}})
	require.False(t, s.Started.ThinkOpen)

	msgs := func(asst map[string]any) []any {
		return []any{hi[0], asst, map[string]any{"role": "user", "content": "and?"}}
	}
	plain := infer(t, base, map[string]any{"messages": msgs(map[string]any{"role": "assistant", "content": "hello"}), "max_tokens": 1})
	with := infer(t, base, map[string]any{"messages": msgs(map[string]any{"role": "assistant", "content": "hello", "thinking": "a greeting"}), "max_tokens": 1})
	require.Greater(t, with.Started.PromptTokens, plain.Started.PromptTokens, "the thinking is in the prompt")

	for _, tc := range []struct {
		name, url string
		body      map[string]any
		code      string
	}{
		{"a level", base, map[string]any{"messages": hi, "think": "high"}, codeUnsupportedParam},
		{"think true on a model that does not think", plainBase, map[string]any{"messages": hi, "think": true}, codeUnsupportedParam},
		{"think and the template's variable disagree", base, map[string]any{"messages": hi, "think": true,
			"chat_template_kwargs": map[string]any{"enable_thinking": false}}, "invalid_value"},
		{"think true with a raw prompt", base, map[string]any{"prompt": "hi", "think": true}, "invalid_value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, testCtx(t), tc.url+"/v1/infer", tc.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			var eb ErrorBody
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
			require.NotNil(t, eb.Error.Param)
			require.Equal(t, "think", *eb.Error.Param)
			require.Equal(t, tc.code, eb.Error.Code, eb.Error.Message)
		})
	}
	// think false on a model that does not think asks for nothing.
	infer(t, plainBase, map[string]any{"messages": hi, "max_tokens": 1, "think": false})
	resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": hi, "think": true})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

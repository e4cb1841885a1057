package worker

import (
	"encoding/json"
	"maps"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/model/tokenizer"
	"github.com/stretchr/testify/require"
)

// harmonyTestTemplate renders turns as harmony does (written for these
// tests): a system message with the reasoning effort when there is one,
// a developer message naming the tools when there are some, each message <|start|>ROLE<|message|>TEXT<|end|>, an assistant's
// thinking as an analysis message before it, and the assistant's header
// opened at the end.
const harmonyTestTemplate = `{% if reasoning_effort is defined %}<|start|>system<|message|>Reasoning: {{ reasoning_effort }}<|end|>{% endif %}` +
	`{% if tools %}<|start|>developer<|message|># Tools{% for t in tools %} {{ t.function.name }}{% endfor %}<|end|>{% endif %}` +
	`{% for m in messages %}{% if m.thinking %}<|start|>assistant<|channel|>analysis<|message|>{{ m.thinking }}<|end|>{% endif %}` +
	`<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}<|start|>assistant`

// harmonyModelFile writes a tiny gpt-oss model whose vocabulary has the
// harmony tokens and whose template is harmonyTestTemplate.
func harmonyModelFile(t *testing.T) string {
	t.Helper()
	mcfg := synth.DefaultConfig()
	mcfg.Arch, mcfg.Experts, mcfg.ExpertsUsed, mcfg.SlidingWindow = "gpt-oss", 4, 2, 4
	mcfg.Harmony, mcfg.ChatTemplate = true, harmonyTestTemplate
	path := filepath.Join(t.TempDir(), "harmony.gguf")
	require.NoError(t, synth.Write(path, mcfg))
	return path
}

// harmonyPieces tokenizes an answer with the model's real tokenizer and
// returns the texts the engine emits for its tokens, one per token.
func harmonyPieces(t *testing.T, tok *tokenizer.Tokenizer, answer string) ([]int32, []string) {
	t.Helper()
	ids := tok.Encode(answer, false, true)
	dec := tok.NewStreamDecoder()
	pieces := make([]string, len(ids))
	for i, id := range ids {
		pieces[i] = dec.Next(id)
	}
	require.Equal(t, answer, strings.Join(pieces, ""), "the tokens give the answer back")
	return ids, pieces
}

// harmonyCases are answers as gpt-oss writes them (after the prompt's
// "<|start|>assistant"; <|return|> and <|call|> end generation and are
// not in the text) and what the chat API makes of them.
var harmonyCases = []struct {
	name, answer       string
	content, reasoning string
	calls              []ToolCallFunction
}{
	{name: "reasoning then answer",
		answer:  "<|channel|>analysis<|message|>The user says hi. Answer.<|end|><|start|>assistant<|channel|>final<|message|>Hello there!",
		content: "Hello there!", reasoning: "The user says hi. Answer."},
	{name: "call, recipient after the channel",
		answer:    `<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}`,
		reasoning: "Need weather.", calls: []ToolCallFunction{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
	{name: "call, recipient in the open header",
		answer: ` to=functions.get_weather<|channel|>commentary json<|message|>{"city":"Oslo"}`,
		calls:  []ToolCallFunction{{Name: "get_weather", Arguments: `{"city":"Oslo"}`}}},
	{name: "preamble then call",
		answer:  "<|channel|>commentary<|message|>Let me check.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{}",
		content: "Let me check.", calls: []ToolCallFunction{{Name: "get_weather", Arguments: `{}`}}},
	{name: "cut inside the reasoning",
		answer: "<|channel|>analysis<|message|>Thinking about it", reasoning: "Thinking about it"},
	{name: "cut inside a header",
		answer: "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>fin", reasoning: "x"},
	{name: "angle brackets in the answer",
		answer: "<|channel|>final<|message|>a < b, <|x|> and <|", content: "a < b, <|x|> and <|"},
	{name: "not harmony", answer: "Hello world", content: "Hello world"},
	{name: "the prompt opened the final message", answer: "Hi.<|end|><|start|>assistant<|channel|>analysis<|message|>hm",
		content: "Hi.", reasoning: "hm"},
	{name: "JSON that is no call is content", answer: `{"a": 1}`, content: `{"a": 1}`},
	{name: "a forced call (bare JSON)", answer: `{"name":"get_weather","parameters":{"city":"Rome"}}`,
		calls: []ToolCallFunction{{Name: "get_weather", Arguments: `{"city":"Rome"}`}}},
	{name: "call to an unknown function",
		answer: `<|channel|>commentary to=functions.nope<|message|>{"a":1}`, content: `{"a":1}`},
	{name: "arguments cut short",
		answer: `<|channel|>commentary to=functions.get_weather<|message|>{"city":`, content: `{"city":`},
}

// TestHarmonyStream: gpt-oss's answers, as the real tokenizer of a
// harmony vocabulary cuts them, parse into content, reasoning and calls,
// pushed token by token, whole, and split in two at every token boundary,
// always the same.
func TestHarmonyStream(t *testing.T) {
	m, err := engine.Load(harmonyModelFile(t), engine.Options{Threads: 1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	tok := m.Tokenizer()
	for _, s := range synth.HarmonyTokens() {
		id, ok := tok.TokenID(s)
		require.True(t, ok, s)
		if s == harmonyReturn || s == harmonyCall {
			require.True(t, tok.IsEOG(id), "%s ends generation", s)
		} else {
			require.False(t, tok.IsEOG(id), "%s does not end generation", s)
			require.Equal(t, s, tok.Piece(id), "%s is in the text", s)
		}
	}
	names := []string{"get_weather"}
	for _, tc := range harmonyCases {
		t.Run(tc.name, func(t *testing.T) {
			_, pieces := harmonyPieces(t, tok, tc.answer)
			check := func(how string, parts []string) {
				content, reasoning, calls := harmonyRun(names, parts...)
				require.Equal(t, tc.content, content, how)
				require.Equal(t, tc.reasoning, reasoning, how)
				var got []ToolCallFunction
				for _, c := range calls {
					require.True(t, strings.HasPrefix(c.ID, "call_"), how)
					got = append(got, c.Function)
				}
				require.Equal(t, tc.calls, got, how)
			}
			check("token by token", pieces)
			check("whole", []string{tc.answer})
			for i := 1; i < len(pieces); i++ {
				check("split", []string{strings.Join(pieces[:i], ""), strings.Join(pieces[i:], "")})
			}
		})
	}
}

// harmonyRun pushes an answer's parts through a HarmonyStream (with
// tools names) and returns all it gave: content, reasoning, calls.
func harmonyRun(names []string, parts ...string) (content, reasoning string, calls []ToolCall) {
	return reasoningRun(NewHarmonyStream(true), names, parts...)
}

// reasoningRun pushes an answer's parts through hs and returns all it
// gave: content, reasoning, calls (names are the tools').
func reasoningRun(hs ReasoningStream, names []string, parts ...string) (content, reasoning string, calls []ToolCall) {
	var c, r strings.Builder
	for _, p := range parts {
		pc, pr := hs.Push(p)
		c.WriteString(pc)
		r.WriteString(pr)
	}
	fc, fr, calls := hs.Finish(names)
	return c.String() + fc, r.String() + fr, calls
}

// scriptedLoad loads the model with the real engine, and makes each
// generation write the ids in *script (a constraint that allows the next
// one alone): the forward passes, the end-of-generation check, stop
// strings and max_tokens are the engine's own.
func scriptedLoad(script *atomic.Pointer[[]int32], tok **tokenizer.Tokenizer) LoadFunc {
	return func(path string, opts LoadOptions) (Model, error) {
		m, err := LoadEngine(path, opts)
		if err != nil {
			return nil, err
		}
		em := m.(*engineModel)
		*tok = em.m.Tokenizer()
		em.constrain = func() engine.Constraint {
			if ids := script.Load(); ids != nil {
				return &scripted{ids: *ids}
			}
			return nil
		}
		return m, nil
	}
}

// scripted is a constraint that allows ids in order.
type scripted struct {
	ids []int32
	at  int
}

func (s *scripted) Mask(logits []float32) {
	want := s.ids[min(s.at, len(s.ids)-1)]
	for i := range logits {
		if int32(i) != want {
			logits[i] = float32(math.Inf(-1))
		}
	}
}

func (s *scripted) Accept(int32) error { s.at++; return nil }
func (s *scripted) Done() bool         { return s.at >= len(s.ids) }

// chatStreamed reads a streamed chat answer: content, reasoning, calls,
// finish reason, logprobs entries.
func chatStreamed(t *testing.T, resp *http.Response) (msg Message, finish string, lps int) {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	msg.Role = "assistant"
	for _, ev := range readAllSSE(t, resp.Body) {
		if ev.Data == "[DONE]" {
			continue
		}
		var c ChatCompletionChunk
		require.NoError(t, json.Unmarshal([]byte(ev.Data), &c), ev.Data)
		for _, ch := range c.Choices {
			msg.Content += ch.Delta.Content
			msg.ReasoningContent += ch.Delta.ReasoningContent
			for _, tc := range ch.Delta.ToolCalls {
				if tc.ID != "" {
					msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: tc.ID, Type: tc.Type, Function: tc.Function})
				} else {
					msg.ToolCalls[*tc.Index].Function.Arguments += tc.Function.Arguments
				}
			}
			if ch.Logprobs != nil {
				lps += len(ch.Logprobs.Content)
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	return msg, finish, lps
}

// chatBothWays posts a chat (body) whole and streamed and checks that
// the two agree: the message (tool call ids checked, then cleared), the
// finish reason and the number of logprobs entries. It returns the
// message and the whole answer.
func chatBothWays(t *testing.T, base string, body map[string]any) (Message, ChatCompletion) {
	t.Helper()
	resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
	got := cc.Choices[0].Message
	for i := range got.ToolCalls {
		require.True(t, strings.HasPrefix(got.ToolCalls[i].ID, "call_"))
		got.ToolCalls[i].ID = ""
	}
	lps := 0
	if lp := cc.Choices[0].Logprobs; lp != nil {
		lps = len(lp.Content)
	}
	stream := maps.Clone(body)
	stream["stream"] = true
	smsg, sfinish, slps := chatStreamed(t, post(t, testCtx(t), base+"/v1/chat/completions", stream))
	for i := range smsg.ToolCalls {
		smsg.ToolCalls[i].ID = ""
	}
	require.Equal(t, got, smsg, "streamed as whole")
	require.Equal(t, cc.Choices[0].FinishReason, sfinish)
	require.Equal(t, lps, slps, "the same logprobs entries")
	return got, cc
}

// TestHarmonyChat: a gpt-oss model's answers (scripted through the real
// engine over a harmony vocabulary) come out of /v1/chat/completions as
// content, reasoning_content and tool calls, streamed and whole alike;
// <|return|> and <|call|> end them, max_tokens and stop strings cut
// them, and logprobs count the same tokens both ways.
func TestHarmonyChat(t *testing.T) {
	var script atomic.Pointer[[]int32]
	var tok *tokenizer.Tokenizer
	cfg := testConfig(t)
	cfg.ModelPath, cfg.Load = harmonyModelFile(t), scriptedLoad(&script, &tok)
	_, base := startServer(t, cfg)
	var info map[string]any
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/info", &info))

	tools := []any{map[string]any{"type": "function", "function": map[string]any{"name": "get_weather",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}}}}}
	eog := func(s string) int32 { id, ok := tok.TokenID(s); require.True(t, ok); return id }
	for _, tc := range []struct {
		name, answer, end string
		extra             map[string]any
		want              Message
		finish            string
	}{
		{name: "answer", answer: harmonyCases[0].answer, end: harmonyReturn,
			want: Message{Content: "Hello there!", ReasoningContent: "The user says hi. Answer."}, finish: "stop"},
		{name: "tool call", answer: harmonyCases[1].answer, end: harmonyCall, extra: map[string]any{"tools": tools},
			want:   Message{ReasoningContent: "Need weather.", ToolCalls: []ToolCall{{Type: "function", Function: ToolCallFunction{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}},
			finish: "tool_calls"},
		{name: "no tools: the call is text", answer: harmonyCases[1].answer, end: harmonyCall,
			want: Message{Content: `{"city": "Paris"}`, ReasoningContent: "Need weather."}, finish: "stop"},
		{name: "max_tokens inside the reasoning", answer: harmonyCases[0].answer, end: harmonyReturn, extra: map[string]any{"max_tokens": 0}, // set below
			finish: "length"},
		{name: "stop string in the answer", answer: harmonyCases[0].answer, end: harmonyReturn, extra: map[string]any{"stop": []string{"there"}},
			want: Message{Content: "Hello ", ReasoningContent: "The user says hi. Answer."}, finish: "stop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, _ := harmonyPieces(t, tok, tc.answer)
			ids = append(ids, eog(tc.end))
			script.Store(&ids)
			body := map[string]any{"messages": []Message{{Role: "user", Content: "hi"}}, "temperature": 0, "logprobs": true}
			for k, v := range tc.extra {
				body[k] = v
			}
			cut := len(tok.Encode("<|channel|>analysis<|message|>The user", false, true))
			if tc.finish == "length" {
				body["max_tokens"] = cut
			}
			got, cc := chatBothWays(t, base, body)
			want := tc.want
			want.Role = "assistant"
			if tc.finish == "length" {
				// Cut inside the reasoning: no content, some reasoning.
				require.Equal(t, cut, cc.Usage.CompletionTokens)
				require.NotEmpty(t, got.ReasoningContent)
				require.True(t, strings.HasPrefix(harmonyCases[0].reasoning, got.ReasoningContent))
				want.ReasoningContent = got.ReasoningContent
			}
			require.Equal(t, want, got)
			require.Equal(t, tc.finish, cc.Choices[0].FinishReason)
			require.Positive(t, len(cc.Choices[0].Logprobs.Content))
		})
	}

	// A forced call: the grammar makes the model write the bare call
	// (no harmony header), which is a call all the same.
	script.Store(nil)
	body := map[string]any{"messages": []Message{{Role: "user", Content: "hi"}}, "temperature": 0, "max_tokens": 100,
		"tools": tools, "tool_choice": "required"}
	resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
	require.Equal(t, "tool_calls", cc.Choices[0].FinishReason)
	require.Len(t, cc.Choices[0].Message.ToolCalls, 1)
	require.Equal(t, "get_weather", cc.Choices[0].Message.ToolCalls[0].Function.Name)
	body["stream"] = true
	smsg, sfinish, _ := chatStreamed(t, post(t, testCtx(t), base+"/v1/chat/completions", body))
	require.Equal(t, "tool_calls", sfinish)
	require.Len(t, smsg.ToolCalls, 1)
	require.Equal(t, cc.Choices[0].Message.ToolCalls[0].Function.Arguments, smsg.ToolCalls[0].Function.Arguments)
}

// TestHarmonyThinkingToTemplate: an earlier assistant turn's
// reasoning_content reaches the chat template as thinking (gpt-oss's
// template renders it as an analysis message), and a client sending
// back an answer with its reasoning is not refused.
func TestHarmonyThinkingToTemplate(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelPath = harmonyModelFile(t)
	_, base := startServer(t, cfg)
	prompt := func(asst map[string]any) int {
		body := map[string]any{"max_tokens": 1, "messages": []any{
			map[string]any{"role": "user", "content": "hi"}, asst, map[string]any{"role": "user", "content": "and?"}}}
		resp := post(t, testCtx(t), base+"/v1/chat/completions", body)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var cc ChatCompletion
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
		return cc.Usage.PromptTokens
	}
	plain := prompt(map[string]any{"role": "assistant", "content": "hello"})
	with := prompt(map[string]any{"role": "assistant", "content": "hello", "reasoning_content": "a greeting"})
	require.Greater(t, with, plain, "the reasoning is in the prompt")
	require.Equal(t, with, prompt(map[string]any{"role": "assistant", "content": "hello", "thinking": "a greeting"}))

	resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []any{
		map[string]any{"role": "user", "content": "hi", "reasoning_content": 3}}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

// TestHarmonyInferFormat: /v1/infer's started event says a harmony
// model's answers are harmony (the node's Ollama chat parses them by it),
// and a plain model's are not; its messages take an earlier answer's
// thinking (Ollama's name), which reaches the template.
func TestHarmonyInferFormat(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelPath = harmonyModelFile(t)
	_, base := startServer(t, cfg)
	msgs := func(asst map[string]any) []any {
		return []any{map[string]any{"role": "user", "content": "hi"}, asst, map[string]any{"role": "user", "content": "and?"}}
	}
	plain := infer(t, base, map[string]any{"messages": msgs(map[string]any{"role": "assistant", "content": "hello"}), "max_tokens": 2})
	require.Equal(t, FormatHarmony, plain.Started.Format)
	with := infer(t, base, map[string]any{"messages": msgs(map[string]any{"role": "assistant", "content": "hello", "thinking": "a greeting"}), "max_tokens": 2})
	require.Greater(t, with.Started.PromptTokens, plain.Started.PromptTokens, "the thinking is in the prompt")

	_, other := startServer(t, testConfig(t))
	require.Empty(t, infer(t, other, map[string]any{"prompt": "Once", "max_tokens": 2}).Started.Format)
}

// FuzzHarmonyStream: whatever the model writes, an answer pushed in two
// pieces (split anywhere) parses as it does whole.
func FuzzHarmonyStream(f *testing.F) {
	for _, tc := range harmonyCases {
		f.Add(tc.answer, uint(len(tc.answer)/2))
	}
	names := []string{"get_weather", "nope"}
	functions := func(calls []ToolCall) (fs []ToolCallFunction) {
		for _, c := range calls {
			fs = append(fs, c.Function)
		}
		return fs
	}
	f.Fuzz(func(t *testing.T, answer string, at uint) {
		at %= uint(len(answer) + 1)
		c1, r1, k1 := harmonyRun(names, answer)
		c2, r2, k2 := harmonyRun(names, answer[:at], answer[at:])
		require.Equal(t, c1, c2)
		require.Equal(t, r1, r2)
		require.Equal(t, functions(k1), functions(k2))
	})
}

// TestReasoningEffort: OpenAI's reasoning_effort reaches a template that
// reads it (gpt-oss's says "Reasoning: high" in its system message); a
// value it does not take, a model whose template does not read it, a
// disagreeing chat_template_kwargs and a raw prompt are refused, each a
// 400 naming reasoning_effort.
func TestReasoningEffort(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelPath = harmonyModelFile(t)
	_, base := startServer(t, cfg)
	_, plainBase := startServer(t, testConfig(t))
	msgs := []Message{{Role: "user", Content: "hi"}}
	chat := func(url string, extra map[string]any) *http.Response {
		body := map[string]any{"messages": msgs, "max_tokens": 1}
		for k, v := range extra {
			body[k] = v
		}
		return post(t, testCtx(t), url+"/v1/chat/completions", body)
	}
	promptTokens := func(extra map[string]any) int {
		resp := chat(base, extra)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var cc ChatCompletion
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
		return cc.Usage.PromptTokens
	}
	none := promptTokens(nil)
	high := promptTokens(map[string]any{"reasoning_effort": "high"})
	require.Greater(t, high, none, "the effort is in the prompt")
	require.Equal(t, high, promptTokens(map[string]any{"reasoning_effort": "high", "chat_template_kwargs": map[string]any{"reasoning_effort": "high"}}))
	require.Equal(t, none, promptTokens(map[string]any{"reasoning_effort": nil}))

	for _, tc := range []struct {
		name, url string
		extra     map[string]any
		code      string
	}{
		{"a value it does not take", base, map[string]any{"reasoning_effort": "extreme"}, "invalid_value"},
		{"not a string", base, map[string]any{"reasoning_effort": 3}, "invalid_type"},
		{"disagreeing kwargs", base, map[string]any{"reasoning_effort": "low", "chat_template_kwargs": map[string]any{"reasoning_effort": "high"}}, "invalid_value"},
		{"a template without it", plainBase, map[string]any{"reasoning_effort": "low"}, codeUnsupportedParam},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := chat(tc.url, tc.extra)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			var eb ErrorBody
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
			require.NotNil(t, eb.Error.Param)
			require.Equal(t, "reasoning_effort", *eb.Error.Param)
			require.Equal(t, tc.code, eb.Error.Code)
		})
	}
	for _, path := range []string{"/v1/completions", "/v1/infer"} {
		resp := post(t, testCtx(t), base+path, map[string]any{"prompt": "hi", "max_tokens": 1, "reasoning_effort": "low"})
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, path)
	}
}

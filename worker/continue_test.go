package worker

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/tokenizer"
)

// TestContinueChat: a chat that ends with the assistant's unfinished
// answer is continued (llama-server's and Ollama's default, vLLM's
// continue_final_message): the prompt ends right after that text, and the
// answer, streamed and whole, is the continuation alone, content for a
// think-tag and a harmony model (their templates write the message as a
// past answer: no open think block, no channel to open). vLLM's fields
// choose a new turn instead, and contradictory or impossible choices are
// refused with 400 naming the field, as is a continuation that a grammar
// would shape (a JSON response_format, a forced call: a whole document
// after the text). The native /v1/infer (the node's
// Ollama /api/chat) continues the same way.
func TestContinueChat(t *testing.T) {
	const cont = " is 4."
	type model struct {
		name, file      string
		prompt, newTurn string // the continued prompt, and a new turn's
	}
	for _, mc := range []model{
		{name: "think tags", file: thinkModelFile(t),
			prompt:  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nThe answer",
			newTurn: "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nThe answer<|im_end|>\n<|im_start|>assistant\n"},
		{name: "harmony", file: harmonyModelFile(t),
			prompt:  "<|start|>user<|message|>hi<|end|><|start|>assistant<|message|>The answer",
			newTurn: "<|start|>user<|message|>hi<|end|><|start|>assistant<|message|>The answer<|end|><|start|>assistant"},
	} {
		t.Run(mc.name, func(t *testing.T) {
			var script atomic.Pointer[[]int32]
			var tok *tokenizer.Tokenizer
			cfg := testConfig(t)
			cfg.ModelPath, cfg.Load = mc.file, scriptedLoad(&script, &tok)
			_, base := startServer(t, cfg)
			ids, _ := harmonyPieces(t, tok, cont)
			ids = append(ids, tok.EOS())
			script.Store(&ids)
			tokens := func(text string) int { return len(tok.Encode(text, tok.AddBOS(), true)) }
			require.NotEqual(t, tokens(mc.prompt), tokens(mc.newTurn))

			partial := []Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "The answer"}}
			for _, tc := range []struct {
				name   string
				extra  map[string]any
				prompt string
			}{
				{name: "by default", prompt: mc.prompt},
				{name: "continue_final_message", extra: map[string]any{"continue_final_message": true, "add_generation_prompt": false}, prompt: mc.prompt},
				{name: "add_generation_prompt false", extra: map[string]any{"add_generation_prompt": false}, prompt: mc.prompt},
				{name: "continue_final_message false", extra: map[string]any{"continue_final_message": false}, prompt: mc.newTurn},
				{name: "add_generation_prompt true", extra: map[string]any{"add_generation_prompt": true}, prompt: mc.newTurn},
			} {
				t.Run(tc.name, func(t *testing.T) {
					body := map[string]any{"messages": partial, "temperature": 0}
					for k, v := range tc.extra {
						body[k] = v
					}
					got, cc := chatBothWays(t, base, body)
					require.Equal(t, Message{Role: "assistant", Content: cont}, got, "the continuation alone, as content")
					require.Equal(t, "stop", cc.Choices[0].FinishReason)
					require.Equal(t, tokens(tc.prompt), cc.Usage.PromptTokens)
				})
			}

			s := infer(t, base, map[string]any{"messages": partial})
			require.Equal(t, tokens(mc.prompt), s.Started.PromptTokens)
			require.False(t, s.Started.ThinkOpen)
			require.Equal(t, cont, s.text())

			// A call is no answer to continue: a new turn, as before.
			called := []Message{{Role: "user", Content: "hi"}, {Role: "assistant", ToolCalls: []ToolCall{{ID: "call_1", Type: "function",
				Function: ToolCallFunction{Name: "f", Arguments: "{}"}}}}}
			_, cc := chatBothWays(t, base, map[string]any{"messages": called})
			require.Equal(t, "stop", cc.Choices[0].FinishReason)

			for _, tc := range []struct {
				name, param string
				body        map[string]any
			}{
				{"both true", "continue_final_message", map[string]any{"messages": partial, "continue_final_message": true, "add_generation_prompt": true}},
				{"nothing to continue", "continue_final_message", map[string]any{"messages": []Message{{Role: "user", Content: "hi"}}, "continue_final_message": true}},
				{"a call to continue", "continue_final_message", map[string]any{"messages": called, "continue_final_message": true}},
				{"no turn for the answer", "add_generation_prompt", map[string]any{"messages": []Message{{Role: "user", Content: "hi"}}, "add_generation_prompt": false}},
				{"not a boolean", "continue_final_message", map[string]any{"messages": partial, "continue_final_message": "yes"}},
				// A grammar writes a whole document: after the text
				// the two would not parse together.
				{"a JSON answer", "response_format", map[string]any{"messages": partial, "response_format": map[string]any{"type": "json_object"}}},
				{"a forced call", "tool_choice", map[string]any{"messages": partial, "tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "f"}}}, "tool_choice": "required"}},
			} {
				resp := post(t, testCtx(t), base+"/v1/chat/completions", tc.body)
				require.Equal(t, http.StatusBadRequest, resp.StatusCode, tc.name)
				var eb ErrorBody
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
				require.NotNil(t, eb.Error.Param, tc.name)
				require.Equal(t, tc.param, *eb.Error.Param, tc.name)
			}
		})
	}
}

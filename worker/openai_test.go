package worker

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/reqbody/reqbodytest"
)

// openAIStream reads a "data: {...}" stream up to "[DONE]" and returns the
// decoded chunks; it fails if [DONE] is missing or not last.
func openAIStream[T any](t *testing.T, resp *http.Response) []T {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	evs := readAllSSE(t, resp.Body)
	require.NotEmpty(t, evs)
	require.Equal(t, "[DONE]", evs[len(evs)-1].Data)
	out := make([]T, 0, len(evs)-1)
	for _, ev := range evs[:len(evs)-1] {
		require.Empty(t, ev.Event, "OpenAI streams carry no event names")
		var c T
		require.NoError(t, json.Unmarshal([]byte(ev.Data), &c), ev.Data)
		out = append(out, c)
	}
	return out
}

func TestChatCompletions(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	msgs := []Message{{Role: "user", Content: "Once upon a time"}}

	// Non-streaming, greedy.
	resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"model": "whatever", "messages": msgs, "max_tokens": 10, "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
	require.True(t, strings.HasPrefix(cc.ID, "chatcmpl-"), cc.ID)
	require.Equal(t, "chat.completion", cc.Object)
	require.Positive(t, cc.Created)
	require.Equal(t, "stories260K", cc.Model)
	require.Len(t, cc.Choices, 1)
	require.Equal(t, 0, cc.Choices[0].Index)
	require.Equal(t, "assistant", cc.Choices[0].Message.Role)
	require.NotEmpty(t, cc.Choices[0].Message.Content)
	require.Equal(t, "length", cc.Choices[0].FinishReason)
	require.Equal(t, 10, cc.Usage.CompletionTokens)
	require.Positive(t, cc.Usage.PromptTokens)
	require.Equal(t, cc.Usage.PromptTokens+10, cc.Usage.TotalTokens)
	require.Zero(t, cc.Usage.PromptTokensDetails.CachedTokens, "a fresh worker's cache holds nothing")

	// The same prompt as an array of text parts gives the same answer.
	resp = post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []map[string]any{{"role": "user",
		"content": []map[string]any{{"type": "text", "text": "Once upon"}, {"type": "text", "text": "a time"}}}}, "max_tokens": 10, "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var parts ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&parts))
	resp = post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: "Once upon\na time"}}, "max_tokens": 10, "temperature": 0})
	var joined ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&joined))
	require.Equal(t, joined.Choices[0].Message.Content, parts.Choices[0].Message.Content)

	// Streaming, same request: same text, chunk shapes, usage chunk, [DONE].
	resp = post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{
		"messages": msgs, "max_tokens": 10, "temperature": 0, "stream": true,
		"stream_options": map[string]any{"include_usage": true},
	})
	chunks := openAIStream[ChatCompletionChunk](t, resp)
	require.GreaterOrEqual(t, len(chunks), 3)
	var text strings.Builder
	for i, c := range chunks {
		require.Equal(t, "chat.completion.chunk", c.Object)
		require.Equal(t, chunks[0].ID, c.ID)
		require.True(t, strings.HasPrefix(c.ID, "chatcmpl-"))
		require.Equal(t, "stories260K", c.Model)
		last := i == len(chunks)-1
		if last {
			require.Empty(t, c.Choices, "usage chunk has no choices")
			require.NotNil(t, c.Usage)
			u := *c.Usage
			// Its prompt shares a prefix with the one before (the one
			// slot's cache held it), which the first request's did not.
			require.Positive(t, u.PromptTokensDetails.CachedTokens)
			u.PromptTokensDetails = cc.Usage.PromptTokensDetails
			require.Equal(t, cc.Usage, u)
			continue
		}
		require.Len(t, c.Choices, 1)
		require.Nil(t, c.Usage)
		if i == 0 {
			require.Equal(t, "assistant", c.Choices[0].Delta.Role)
		}
		if i == len(chunks)-2 {
			require.NotNil(t, c.Choices[0].FinishReason)
			require.Equal(t, "length", *c.Choices[0].FinishReason)
		} else {
			require.Nil(t, c.Choices[0].FinishReason)
		}
		text.WriteString(c.Choices[0].Delta.Content)
	}
	require.Equal(t, cc.Choices[0].Message.Content, text.String())
}

func TestCompletions(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	ref := loadLlamacppRef(t)
	var run = ref.Runs[0]
	for _, r := range ref.Runs {
		if r.Prompt == "Joe loves writing stories" && r.KVCacheType == "f32" {
			run = r
		}
	}
	require.Equal(t, "Joe loves writing stories", run.Prompt)

	resp := post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": run.Prompt, "max_tokens": run.NPredict, "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tc TextCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tc))
	require.True(t, strings.HasPrefix(tc.ID, "cmpl-"), tc.ID)
	require.Equal(t, "text_completion", tc.Object)
	require.Positive(t, tc.Created)
	require.Equal(t, "stories260K", tc.Model)
	require.Len(t, tc.Choices, 1)
	require.Equal(t, run.GeneratedText, tc.Choices[0].Text)
	require.NotNil(t, tc.Choices[0].FinishReason)
	require.Equal(t, "length", *tc.Choices[0].FinishReason)
	require.NotNil(t, tc.Usage)
	require.Equal(t, Usage{PromptTokens: len(run.PromptIDs), CompletionTokens: run.NPredict, TotalTokens: len(run.PromptIDs) + run.NPredict}, *tc.Usage)

	// A prompt given as a one-element array, streamed.
	resp = post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": []string{run.Prompt}, "max_tokens": run.NPredict, "temperature": 0, "stream": true})
	chunks := openAIStream[TextCompletion](t, resp)
	var text strings.Builder
	for i, c := range chunks {
		require.Equal(t, "text_completion", c.Object)
		require.Equal(t, chunks[0].ID, c.ID)
		require.Len(t, c.Choices, 1)
		if i == len(chunks)-1 {
			require.NotNil(t, c.Choices[0].FinishReason)
			require.Equal(t, "length", *c.Choices[0].FinishReason)
		} else {
			require.Nil(t, c.Choices[0].FinishReason)
		}
		text.WriteString(c.Choices[0].Text)
	}
	require.Equal(t, run.GeneratedText, text.String())
}

// TestBadRequests: every invalid request gets its status and names the
// field at fault, on each endpoint that takes the field.
func TestBadRequests(t *testing.T) {
	cfg := testConfig(t)
	cfg.ContextSize = 64
	_, base := startServer(t, cfg)
	long := strings.Repeat("Once upon a time there was a girl. ", 20) // far over 64 tokens

	const (
		infer  = "/v1/infer"
		chat   = "/v1/chat/completions"
		cmpl   = "/v1/completions"
		noPar  = "<null>"
		okCode = 200
	)
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		name   string
		path   string
		body   string
		status int
		param  string
	}{
		{"empty body", infer, ``, 400, noPar},
		{"malformed json", infer, `{"prompt": "hi"`, 400, noPar},
		{"not an object", cmpl, `[1,2]`, 400, noPar},
		{"no prompt", infer, `{"max_tokens": 3}`, 400, "prompt"},
		{"empty prompt", infer, `{"prompt": ""}`, 400, "prompt"},
		{"empty prompt completions", cmpl, `{"prompt": ""}`, 400, "prompt"},
		{"two prompts", cmpl, `{"prompt": ["a","b"]}`, 400, "prompt"},
		{"prompt wrong type", infer, `{"prompt": 5}`, 400, "prompt"},
		{"stop wrong type", chat, `{` + msgs + `,"stop":{"a":1}}`, 400, "stop"},
		{"messages wrong type", chat, `{"messages":"hi"}`, 400, "messages"},
		{"no messages", chat, `{"max_tokens": 3}`, 400, "messages"},
		{"empty messages", chat, `{"messages": []}`, 400, "messages"},
		{"message without role", chat, `{"messages":[{"content":"hi"}]}`, 400, "messages[0].role"},
		{"image part on a text model", chat, `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]}]}`, 400, "messages[0].content"},
		{"unknown part type", chat, `{"messages":[{"role":"user","content":[{"type":"bogus","bogus":1}]}]}`, 400, "messages[0].content"},
		{"content of a wrong type", chat, `{"messages":[{"role":"user","content":5}]}`, 400, "messages[0].content"},
		{"text part without text", chat, `{"messages":[{"role":"user","content":[{"type":"text"}]}]}`, 400, "messages[0].content[0].text"},
		{"max_tokens zero", infer, `{"prompt":"hi","max_tokens":0}`, 400, "max_tokens"},
		{"max_tokens negative", cmpl, `{"prompt":"hi","max_tokens":-1}`, 400, "max_tokens"},
		{"max_tokens over context", chat, `{` + msgs + `,"max_tokens":65}`, 400, "max_tokens"},
		{"max_completion_tokens zero", chat, `{` + msgs + `,"max_completion_tokens":0}`, 400, "max_completion_tokens"},
		{"max_tokens wrong type", infer, `{"prompt":"hi","max_tokens":"ten"}`, 400, "max_tokens"},
		{"prompt over context", infer, `{"prompt":"` + long + `"}`, 400, "prompt"},
		{"prompt over context completions", cmpl, `{"prompt":"` + long + `"}`, 400, "prompt"},
		{"messages over context", chat, `{"messages":[{"role":"user","content":"` + long + `"}]}`, 400, "messages"},
		{"temperature negative", infer, `{"prompt":"hi","temperature":-1}`, 400, "temperature"},
		{"temperature too high", chat, `{` + msgs + `,"temperature":3}`, 400, "temperature"},
		{"top_p over one", cmpl, `{"prompt":"hi","top_p":1.01}`, 400, "top_p"},
		{"top_k negative", infer, `{"prompt":"hi","top_k":-2}`, 400, "top_k"},
		{"min_p over one", infer, `{"prompt":"hi","min_p":1.5}`, 400, "min_p"},
		{"repeat_penalty negative", infer, `{"prompt":"hi","repeat_penalty":-0.5}`, 400, "repeat_penalty"},
		{"repeat_last_n below -1", infer, `{"prompt":"hi","repeat_last_n":-2}`, 400, "repeat_last_n"},
		{"empty stop", chat, `{` + msgs + `,"stop":[""]}`, 400, "stop"},
		{"n two", chat, `{` + msgs + `,"n":2}`, 400, "n"},
		{"unknown fields ignored by the native API", infer, `{"prompt":"hi","max_tokens":2,"frobnicate":true}`, okCode, ""},
		// OpenAI endpoints: nothing is silently ignored (see params.go).
		{"unknown field chat", chat, `{` + msgs + `,"frobnicate":true}`, 400, "frobnicate"},
		{"unknown field completions", cmpl, `{"prompt":"hi","frobnicate":1}`, 400, "frobnicate"},
		{"prompt on chat", chat, `{` + msgs + `,"prompt":"hi"}`, 400, "prompt"},
		{"messages on completions", cmpl, `{"prompt":"hi",` + msgs + `}`, 400, "messages"},
		{"tool without a name", chat, `{` + msgs + `,"tools":[{"type":"function","function":{}}]}`, 400, "tools[0].function.name"},
		{"tool_choice required", chat, `{` + msgs + `,"tool_choice":"required"}`, 400, "tool_choice"},
		{"json_schema without a schema", chat, `{` + msgs + `,"response_format":{"type":"json_schema","json_schema":{"name":"x"}}}`, 400, "response_format.json_schema.schema"},
		{"logprobs not a boolean", chat, `{` + msgs + `,"logprobs":"yes"}`, 400, "logprobs"},
		{"top_logprobs", chat, `{` + msgs + `,"top_logprobs":2}`, 400, "top_logprobs"},
		{"logprobs completions over 20", cmpl, `{"prompt":"hi","logprobs":21}`, 400, "logprobs"},
		{"frequency_penalty", chat, `{` + msgs + `,"frequency_penalty":0.5}`, 400, "frequency_penalty"},
		{"presence_penalty", cmpl, `{"prompt":"hi","presence_penalty":-1}`, 400, "presence_penalty"},
		{"logit_bias", chat, `{` + msgs + `,"logit_bias":{"50256":-100}}`, 400, "logit_bias"},
		{"echo", cmpl, `{"prompt":"hi","echo":true}`, 400, "echo"},
		{"best_of", cmpl, `{"prompt":"hi","best_of":3}`, 400, "best_of"},
		{"suffix", cmpl, `{"prompt":"hi","suffix":"end"}`, 400, "suffix"},
		{"audio", chat, `{` + msgs + `,"audio":{"voice":"alloy","format":"wav"}}`, 400, "audio"},
		{"n two completions", cmpl, `{"prompt":"hi","n":2}`, 400, "n"},
		{"neutral values accepted", chat, `{` + msgs + `,"max_tokens":2,"model":"m","n":1,"frequency_penalty":0,"presence_penalty":0.0,` +
			`"logit_bias":{},"logprobs":false,"top_logprobs":null,"tools":[],"tool_choice":"none","parallel_tool_calls":true,` +
			`"response_format":{"type":"text"},"user":"u1","metadata":{"k":"v"},"store":false,"stream":true,"stream_options":{"include_usage":true}}`, okCode, ""},
		{"neutral values accepted completions", cmpl, `{"prompt":"hi","max_tokens":2,"echo":false,"best_of":1,"suffix":null,"logprobs":null,"user":"u"}`, okCode, ""},
		{"stop as string", cmpl, `{"prompt":"hi","max_tokens":2,"stop":"\n"}`, okCode, ""},
		{"negative seed is random", infer, `{"prompt":"hi","max_tokens":2,"seed":-1}`, okCode, ""},
		{"max_tokens at context", infer, `{"prompt":"hi","max_tokens":64}`, okCode, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, testCtx(t), base+tc.path, tc.body)
			require.Equal(t, tc.status, resp.StatusCode)
			if tc.status == okCode {
				readAllSSE(t, resp.Body)
				return
			}
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var eb ErrorBody
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
			require.Equal(t, "invalid_request_error", eb.Error.Type)
			require.NotEmpty(t, eb.Error.Message)
			require.NotEmpty(t, eb.Error.Code)
			if tc.param == noPar {
				require.Nil(t, eb.Error.Param, "param")
			} else {
				require.NotNil(t, eb.Error.Param, "param")
				require.Equal(t, tc.param, *eb.Error.Param)
			}
		})
	}

	t.Run("body over 1 MiB", func(t *testing.T) {
		big := `{"prompt":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
		resp := post(t, testCtx(t), base+infer, big)
		require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
		var eb ErrorBody
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
		require.Equal(t, "request_too_large", eb.Error.Code)
	})
	t.Run("wrong method", func(t *testing.T) {
		var v map[string]any
		resp, err := authed.Get(base + infer)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		_ = v
	})
}

// TestAnnouncedBodyOverLimit: a request that announces a body over
// MaxBodyBytes (10 GB) and sends none is answered 413 with the JSON
// error at once, on every route that takes a body, and so is one without
// the secret (401, its body unread). Before, the worker waited for the
// body until its body deadline and then answered 400.
func TestAnnouncedBodyOverLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.BodyTimeout = time.Hour
	_, base := startServer(t, cfg)
	auth := http.Header{"Authorization": {"Bearer " + testSecret}}
	for _, path := range []string{"/v1/infer", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"} {
		t.Run(path, func(t *testing.T) {
			resp, b := reqbodytest.Announce(t, http.MethodPost, base+path, auth)
			require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "%s", b)
			var eb ErrorBody
			require.NoError(t, json.Unmarshal(b, &eb))
			require.Equal(t, "request_too_large", eb.Error.Code)
			require.Contains(t, eb.Error.Message, strconv.Itoa(MaxBodyBytes))
		})
	}
	resp, _ := reqbodytest.Announce(t, http.MethodPost, base+"/v1/infer", nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

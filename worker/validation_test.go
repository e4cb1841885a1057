package worker

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
)

// TestRequestValidation: message roles, content and fields, conflicting
// token limits and the wording of type errors. Every refusal is a 400 in
// OpenAI's error shape naming the field, in words a client understands
// (no Go type).
func TestRequestValidation(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	const (
		infer = "/v1/infer"
		chat  = "/v1/chat/completions"
		cmpl  = "/v1/completions"
		embed = "/v1/embeddings"
	)
	call := `{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}`
	for _, tc := range []struct {
		name, path, body string
		param            string // "" = accepted (200)
		code, msg        string
	}{
		// 1. Roles.
		{"unknown role", chat, `{"messages":[{"role":"wizard","content":"Hi"}]}`, "messages[0].role", "invalid_value", `"wizard" is not a role`},
		{"unknown role native", infer, `{"messages":[{"role":"user","content":"Hi"},{"role":"robot","content":"Hi"}]}`, "messages[1].role", "invalid_value", "expected system, developer, user, assistant, tool, function"},
		{"role not a string", chat, `{"messages":[{"role":5,"content":"Hi"}]}`, "messages[0].role", "invalid_type", "messages[0].role must be a string"},
		{"empty role", chat, `{"messages":[{"role":"","content":"Hi"}]}`, "messages[0].role", "missing", "needs a role"},
		{"every OpenAI role", chat, `{"messages":[{"role":"system","content":"S"},{"role":"developer","content":"D"},{"role":"user","content":"U"},` +
			`{"role":"assistant","content":null,"tool_calls":[` + call + `]},{"role":"tool","tool_call_id":"c1","content":"1"},` +
			`{"role":"function","name":"f","content":"2"}],"max_tokens":2}`, "", "", ""},
		// Template variables (chat_template_kwargs).
		{"template variables", chat, `{"messages":[{"role":"user","content":"Hi"}],"chat_template_kwargs":{"enable_thinking":false,"x":[1]},"max_tokens":2}`, "", "", ""},
		{"template variables native", infer, `{"messages":[{"role":"user","content":"Hi"}],"chat_template_kwargs":{"enable_thinking":false},"max_tokens":2}`, "", "", ""},
		{"template variable the request sets", chat, `{"messages":[{"role":"user","content":"Hi"}],"chat_template_kwargs":{"messages":[]}}`, "chat_template_kwargs.messages", "invalid_value", "comes from the request itself"},
		{"template variables not an object", chat, `{"messages":[{"role":"user","content":"Hi"}],"chat_template_kwargs":[1]}`, "chat_template_kwargs", "invalid_type", "an object of template variables"},
		// 2. Content.
		{"no content", chat, `{"messages":[{"role":"user"}]}`, "messages[0].content", "missing", "messages[0].content is required"},
		{"null content", chat, `{"messages":[{"role":"user","content":null}]}`, "messages[0].content", "missing", "only an assistant message with tool_calls"},
		{"assistant without content or calls", chat, `{"messages":[{"role":"user","content":"Hi"},{"role":"assistant"}]}`, "messages[1].content", "missing", "required"},
		{"assistant with no calls", chat, `{"messages":[{"role":"assistant","content":null,"tool_calls":[]}]}`, "messages[0].content", "missing", "required"},
		{"tool without content", chat, `{"messages":[{"role":"tool","tool_call_id":"c1"}]}`, "messages[0].content", "missing", "required"},
		{"no content native", infer, `{"messages":[{"role":"system"}]}`, "messages[0].content", "missing", "required"},
		{"empty content", chat, `{"messages":[{"role":"user","content":""},{"role":"user","content":"Hi"}],"max_tokens":2}`, "", "", ""},
		// 3. Message fields.
		{"unknown message field", chat, `{"messages":[{"role":"user","content":"Hi","bogus":1}]}`, "messages[0].bogus", codeUnknownParam, `unknown field "bogus" in messages[0]`},
		{"unknown message field native", infer, `{"messages":[{"role":"user","content":"Hi","images":["x"]}]}`, "messages[0].images", codeUnknownParam, `"images"`},
		{"answer sent back", chat, `{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello","refusal":null,"annotations":[],"audio":null,"function_call":null},` +
			`{"role":"user","content":"Hi","name":"joe"}],"max_tokens":2}`, "", "", ""},
		{"refusal with a value", chat, `{"messages":[{"role":"assistant","content":"x","refusal":"no"}]}`, "messages[0].refusal", codeUnsupportedParam, "only null"},
		{"name not a string", chat, `{"messages":[{"role":"user","content":"Hi","name":1}]}`, "messages[0].name", "invalid_type", "must be a string"},
		{"tool_calls not an array", chat, `{"messages":[{"role":"assistant","tool_calls":{"id":"c"}}]}`, "messages[0].tool_calls", "invalid_type", "must be an array of tool calls"},
		// 5. max_tokens and max_completion_tokens.
		{"limits disagree", chat, `{"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":3,"max_tokens":7}`, "max_completion_tokens", "invalid_value", "max_tokens (7) and max_completion_tokens (3) disagree"},
		{"limits disagree completions", cmpl, `{"prompt":"Hi","max_completion_tokens":3,"max_tokens":7}`, "max_completion_tokens", "invalid_value", "disagree"},
		{"limits disagree native", infer, `{"prompt":"Hi","max_completion_tokens":7,"max_tokens":3}`, "max_completion_tokens", "invalid_value", "disagree"},
		{"limits agree", chat, `{"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":2,"max_tokens":2}`, "", "", ""},
		// 6. Type errors, in the client's words.
		{"array body", chat, `[]`, "", "invalid_type", "the request body must be a JSON object"},
		{"string body", cmpl, `"Hi"`, "", "invalid_type", "the request body must be a JSON object"},
		{"null body", infer, `null`, "", "invalid_type", "the request body must be a JSON object"},
		{"messages a string", chat, `{"messages":"Hi"}`, "messages", "invalid_type", "messages must be an array of message objects"},
		{"message a string", chat, `{"messages":["Hi"]}`, "messages[0]", "invalid_type", "messages[0] must be a message object"},
		{"response_format a string", chat, `{"messages":[{"role":"user","content":"Hi"}],"response_format":"json"}`, "response_format", "invalid_type", `response_format must be an object such as {"type":"json_object"}, not a string`},
		{"response_format type a number", chat, `{"messages":[{"role":"user","content":"Hi"}],"response_format":{"type":1}}`, "response_format.type", "invalid_type", "response_format.type must be a string, not a number"},
		{"tools a string", chat, `{"messages":[{"role":"user","content":"Hi"}],"tools":"f"}`, "tools", "invalid_type", "tools must be an array of tool objects"},
		{"temperature overflows", chat, `{"messages":[{"role":"user","content":"Hi"}],"temperature":1e308}`, "temperature", "invalid_type", "temperature must be a number between 0 and 2, not 1e308"},
		{"temperature a string", cmpl, `{"prompt":"Hi","temperature":"hot"}`, "temperature", "invalid_type", "temperature must be a number between 0 and 2, not a string"},
		{"max_tokens a fraction", cmpl, `{"prompt":"Hi","max_tokens":1.5}`, "max_tokens", "invalid_type", "max_tokens must be a positive integer, not 1.5"},
		{"include_usage a number", chat, `{"messages":[{"role":"user","content":"Hi"}],"stream_options":{"include_usage":1}}`, "stream_options.include_usage", "invalid_type", "must be a boolean"},
		{"stream_options a string", chat, `{"messages":[{"role":"user","content":"Hi"}],"stream_options":"usage"}`, "stream_options", "invalid_type", `stream_options must be an object such as {"include_usage":true}, not a string`},
		// stream_options: with stream false taken and without effect (a
		// whole answer has usage), as llama.cpp's server does; an option
		// rbee lacks is refused, not ignored.
		{"stream_options without stream", chat, `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"stream":false,"stream_options":{"include_usage":true}}`, "", "", ""},
		{"stream_options without stream completions", cmpl, `{"prompt":"Hi","max_tokens":2,"stream_options":{"include_usage":false,"include_obfuscation":false}}`, "", "", ""},
		{"unknown stream option", chat, `{"messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true,"usage_every_chunk":true}}`,
			"stream_options.usage_every_chunk", codeUnknownParam, `unknown field "usage_every_chunk" in stream_options: stream_options takes include_usage`},
		{"vLLM's continuous usage", cmpl, `{"prompt":"Hi","stream":true,"stream_options":{"continuous_usage_stats":true}}`,
			"stream_options.continuous_usage_stats", codeUnsupportedParam, "only false or null"},
		{"text part a number", chat, `{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`, "messages[0].content[0].text", "invalid_type", "messages[0].content[0].text must be a string"},
		{"part a string", chat, `{"messages":[{"role":"user","content":["Hi"]}]}`, "messages[0].content[0]", "invalid_type", "must be a content part object"},
		{"content an object", chat, `{"messages":[{"role":"user","content":{"text":"Hi"}}]}`, "messages[0].content", "invalid_type", "must be a string or an array of content parts"},
		{"token id prompt", cmpl, `{"prompt":[1,2,3]}`, "prompt", "invalid_type", "prompt as token ids is not supported"},
		{"token id prompts", cmpl, `{"prompt":[[1,2],[3]]}`, "prompt", "invalid_type", "token ids"},
		{"prompt an object", cmpl, `{"prompt":{"text":"Hi"}}`, "prompt", "invalid_type", "prompt must be a string, not an object"},
		{"token id input", embed, `{"input":[1,2,3]}`, "input", "invalid_type", "input as token ids is not supported"},
		// Arrays that are not token ids are not called so.
		{"prompt arrays of strings", cmpl, `{"prompt":[["Hi"]]}`, "prompt", "invalid_type", "prompt must be a string, not an array with an element that is not a string"},
		{"input arrays of strings", embed, `{"input":[["a","b"]]}`, "input", "invalid_type", "input must be a string or an array of strings, not an array with an element that is not a string"},
		{"prompt a number then text", cmpl, `{"prompt":[1,"Hi"]}`, "prompt", "invalid_type", "prompt must be a string, not an array with an element that is not a string"},
		{"stop a number", cmpl, `{"prompt":"Hi","stop":5}`, "stop", "invalid_type", "stop must be a string or an array of strings, not a number"},
		{"extension version a string", infer, `{"prompt":"Hi","rbee":{"v":"1"}}`, "rbee.v", "invalid_type", "rbee.v must be an integer, not a string"},
		{"malformed", chat, `{"messages":[`, "", "malformed_json", "malformed JSON body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, testCtx(t), base+tc.path, tc.body)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			if tc.code == "" {
				require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
				return
			}
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(body))
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var eb ErrorBody
			require.NoError(t, json.Unmarshal(body, &eb), string(body))
			require.Equal(t, errTypeInvalid, eb.Error.Type)
			require.Equal(t, tc.code, eb.Error.Code, eb.Error.Message)
			if tc.param == "" {
				require.Nil(t, eb.Error.Param, eb.Error.Message)
			} else {
				require.NotNil(t, eb.Error.Param, eb.Error.Message)
				require.Equal(t, tc.param, *eb.Error.Param, eb.Error.Message)
			}
			require.Contains(t, eb.Error.Message, tc.msg)
			for _, goName := range []string{"Go value", "Go struct", "worker.", "json.", "[]", "struct {", "float32", "int64", "got JSON"} {
				require.NotContains(t, eb.Error.Message, goName)
			}
		})
	}
}

// TestInferJobFieldsReachTheWorker: the fields an infer job passes to
// /v1/infer besides api.InferRequest's own are fields the worker takes.
func TestInferJobFieldsReachTheWorker(t *testing.T) {
	tags := map[string]bool{}
	rt := reflect.TypeFor[genRequest]()
	for i := range rt.NumField() {
		if name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ","); name != "" {
			tags[name] = true
		}
	}
	for _, f := range api.InferWorkerFields() {
		require.True(t, tags[f], "infer jobs pass %q, which /v1/infer does not take", f)
	}
}

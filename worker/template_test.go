package worker

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/jinja"
	"github.com/rbee-project/rbee/model/synth"
)

// hostileTemplate renders normally unless the last message asks for one
// of the attacks a malicious tokenizer.chat_template could carry.
const hostileTemplate = `{%- macro f(n) %}{{ f(n) }}{% endmacro -%}
{%- set attack = messages[-1].content -%}
{%- if attack == 'recurse' %}{{ f(1) }}
{%- elif attack == 'range' %}{% for i in range(20000000) %}{% endfor %}
{%- elif attack == 'repeat' %}{{ 'a' * 100000000 }}
{%- elif attack == 'spin' %}{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}
{%- else %}{% for m in messages %}{{ m.role }}: {{ m.content }}
{% endfor %}assistant:{% endif %}`

// TestHostileChatTemplate runs a worker on a model whose chat template
// attacks the process: each attack is answered 400 template_error naming
// the limit, on the OpenAI and the native endpoint, and the worker keeps
// serving chat and completion requests.
func TestHostileChatTemplate(t *testing.T) {
	mcfg := synth.DefaultConfig()
	mcfg.ChatTemplate = hostileTemplate
	path := filepath.Join(t.TempDir(), "hostile.gguf")
	require.NoError(t, synth.Write(path, mcfg))
	cfg := testConfig(t)
	cfg.ModelPath = path
	_, base := startServer(t, cfg)

	chat := func(content string) map[string]any {
		return map[string]any{"messages": []Message{{Role: "user", Content: content}}, "max_tokens": 3, "temperature": 0}
	}
	for _, c := range []struct{ attack, limit string }{
		{"recurse", jinja.LimitDepth},
		{"range", jinja.LimitLoop},
		{"repeat", jinja.LimitString},
		// 5 M steps take about 0.3 s, but several seconds under the race
		// detector: then the deadline stops it first.
		{"spin", jinja.LimitSteps + "|" + jinja.LimitDeadline},
	} {
		for _, endpoint := range []string{"/v1/chat/completions", "/v1/infer"} {
			t.Run(c.attack+endpoint, func(t *testing.T) {
				resp := post(t, testCtx(t), base+endpoint, chat(c.attack))
				require.Equal(t, http.StatusBadRequest, resp.StatusCode)
				require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				var eb ErrorBody
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
				require.Equal(t, "template_error", eb.Error.Code)
				require.Equal(t, errTypeInvalid, eb.Error.Type)
				require.NotNil(t, eb.Error.Param)
				require.Equal(t, "messages", *eb.Error.Param)
				require.Regexp(t, c.limit, eb.Error.Message)
				require.Contains(t, eb.Error.Message, "chat template")
			})
		}
	}

	// Still alive: a benign chat renders the template and generates, and
	// a raw completion works.
	resp := post(t, testCtx(t), base+"/v1/chat/completions", chat("Once upon a time"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
	require.Equal(t, 3, cc.Usage.CompletionTokens)
	resp = post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 3})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tc TextCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tc))
	require.Equal(t, 3, tc.Usage.CompletionTokens)
	var h map[string]any
	require.Equal(t, http.StatusOK, getJSON(t, base+"/health", &h))
}

// TestInferApplyTemplate: /v1/infer's apply_template (Ollama's
// /api/generate without raw) renders the prompt as the user turn of a
// chat on a model with a chat template, exactly as a chat of that one
// message, and sends it as it is on a model without one (the bundled
// stories260K); without the field the prompt is raw. The OpenAI endpoints
// refuse the field, and it takes no messages.
func TestInferApplyTemplate(t *testing.T) {
	mcfg := synth.DefaultConfig()
	mcfg.ChatTemplate = `{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>`
	templated := filepath.Join(t.TempDir(), "templated.gguf")
	require.NoError(t, synth.Write(templated, mcfg))
	const prompt = "Once upon a time"
	for _, tc := range []struct {
		name, model string
		hasTemplate bool
	}{
		{"with a chat template", templated, true},
		{"without one", testModelPath, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ModelPath = tc.model
			s, base := startServer(t, cfg)
			require.Equal(t, tc.hasTemplate, s.model.Info().ChatTemplate)

			var cc ChatCompletion
			resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: prompt}}, "max_tokens": 4, "temperature": 0})
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
			var tcmp TextCompletion
			resp = post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 4, "temperature": 0})
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&tcmp))

			for _, c := range []struct {
				name   string
				body   map[string]any
				asChat bool
			}{
				{"apply_template", map[string]any{"prompt": prompt, "apply_template": true}, tc.hasTemplate},
				{"apply_template false", map[string]any{"prompt": prompt, "apply_template": false}, false},
				{"raw", map[string]any{"prompt": prompt}, false},
			} {
				c.body["max_tokens"], c.body["temperature"] = 4, 0
				got := infer(t, base, c.body)
				want, text := tcmp.Usage.PromptTokens, tcmp.Choices[0].Text
				if c.asChat {
					want, text = cc.Usage.PromptTokens, cc.Choices[0].Message.Content
				}
				require.Equal(t, want, got.Started.PromptTokens, c.name)
				require.Equal(t, text, got.text(), c.name)
			}
			if tc.hasTemplate {
				require.NotEqual(t, cc.Usage.PromptTokens, tcmp.Usage.PromptTokens, "the template adds its markup")
			}

			for _, c := range []struct {
				path string
				body map[string]any
				code string
			}{
				{"/v1/completions", map[string]any{"prompt": prompt, "apply_template": true}, codeUnknownParam},
				{"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: prompt}}, "apply_template": true}, codeUnknownParam},
				{"/v1/infer", map[string]any{"messages": []Message{{Role: "user", Content: prompt}}, "apply_template": true}, "invalid_value"},
			} {
				resp := post(t, testCtx(t), base+c.path, c.body)
				require.Equal(t, http.StatusBadRequest, resp.StatusCode, c.path)
				var eb ErrorBody
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
				require.Equal(t, c.code, eb.Error.Code, c.path)
				require.Equal(t, "apply_template", *eb.Error.Param, c.path)
			}
		})
	}
}

// TestInfoTemplate: /v1/info says whether the model has a chat template
// and whether it renders tools (what /api/show's capabilities read).
func TestInfoTemplate(t *testing.T) {
	for _, tc := range []struct {
		name, template     string
		hasTemplate, tools bool
	}{
		{"none", "", false, false},
		{"blank", "  \n", false, false},
		{"without tools", `{% for m in messages %}{{ m.content }}{% endfor %}`, true, false},
		{"with tools", `{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}`, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mcfg := synth.DefaultConfig()
			mcfg.ChatTemplate = tc.template
			path := filepath.Join(t.TempDir(), "m.gguf")
			require.NoError(t, synth.Write(path, mcfg))
			cfg := testConfig(t)
			cfg.ModelPath = path
			_, base := startServer(t, cfg)
			var in Info
			require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/info", &in))
			require.Equal(t, tc.hasTemplate, in.ChatTemplate)
			require.Equal(t, tc.tools, in.Tools)
		})
	}
}

// TestDeveloperRoleIsSystem: OpenAI's developer role is the system role
// under its newer name, so the chat template sees system: one that checks
// roles (as Mistral's raise on any other) renders the same prompt for
// both, instead of failing into the fallback format.
func TestDeveloperRoleIsSystem(t *testing.T) {
	mcfg := synth.DefaultConfig()
	mcfg.ChatTemplate = `{%- for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' + m.role) }}{% endif %}` +
		`{% if m.role == 'system' %}[SYS]{{ m.content }}[/SYS]{% else %}<|{{ m.role }}|>{{ m.content }}{% endif %}{% endfor %}<|assistant|>`
	path := filepath.Join(t.TempDir(), "roles.gguf")
	require.NoError(t, synth.Write(path, mcfg))
	cfg := testConfig(t)
	cfg.ModelPath = path
	_, base := startServer(t, cfg)
	answer := func(role string) ChatCompletion {
		resp := post(t, testCtx(t), base+"/v1/chat/completions", map[string]any{"messages": []map[string]any{
			{"role": role, "content": "Answer in one word."}, {"role": "user", "content": "Once upon a time"}}, "max_tokens": 6, "temperature": 0})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var cc ChatCompletion
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&cc))
		return cc
	}
	sys, dev := answer("system"), answer("developer")
	// The same prompt: the second request reuses all of it but the last
	// token (evaluated for its logits) from the slot's cache.
	require.Equal(t, dev.Usage.PromptTokens-1, dev.Usage.PromptTokensDetails.CachedTokens, "the same rendered prompt")
	dev.Usage.PromptTokensDetails = sys.Usage.PromptTokensDetails
	require.Equal(t, sys.Usage, dev.Usage)
	require.Equal(t, sys.Choices[0].Message.Content, dev.Choices[0].Message.Content)
}

package node_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/ggufedit"
	"github.com/rbee-project/rbee/model/gguf"
)

// thinkTemplate opens the assistant's think block in the generation
// prompt, as QwQ's and the later DeepSeek-R1 distills' templates do, and
// closes it empty when enable_thinking is false, as Qwen3's does.
const thinkTemplate = `{% for m in messages %}<|im_start|>{{ m.role }}
{% if m.reasoning_content %}<think>
{{ m.reasoning_content }}
</think>

{% endif %}{{ m.content }}<|im_end|>
{% endfor %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking == false %}<think>

</think>

{% else %}<think>
{% endif %}`

// TestOllamaThink: a think-tag model (a worker process on stories260k
// given a template that opens the think block) answers /api/chat with
// its reasoning as message.thinking and /api/generate with it as
// thinking, streamed and whole alike, as Ollama does, with think unset
// or true, and a stop string that the reasoning holds does not cut it;
// think false closes the block (the answer is content) and
// drops what reasoning there is; a level is refused (the model thinks
// or not), as think true is for a model that writes no reasoning. The
// reasoning came back as content, and think true was refused for every
// model but gpt-oss. /api/show lists the thinking capability.
func TestOllamaThink(t *testing.T) {
	c, n := storiesNode(t)
	src, err := gguf.Open("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	defer src.Close()
	path := filepath.Join(t.TempDir(), "qwq-like.gguf")
	require.NoError(t, ggufedit.Write(path, src, nil, map[string]any{"tokenizer.chat_template": thinkTemplate}))
	model := spawnModel(t, n, n.Name(), path, 1).Model
	waitSchedulable(t, c, 2)
	st, b := ollamaCall(t, n, "POST", "/api/show", "", `{"model":"`+model+`"}`)
	require.Equal(t, http.StatusOK, st, "%s", b)
	var show struct{ Capabilities []string }
	require.NoError(t, json.Unmarshal(b, &show))
	require.Contains(t, show.Capabilities, "thinking", "clients read it before they send think")

	type answer struct{ content, thinking string }
	const opts = `"num_predict":8,"temperature":0`
	ask := func(t *testing.T, path, extra string, stream bool) answer {
		t.Helper()
		if !strings.Contains(extra, `"options"`) {
			extra += `,"options":{` + opts + `}`
		}
		body := `{"model":"` + model + `","stream":` + strconv.FormatBool(stream) + extra
		if path == "/api/chat" {
			body += `,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello","thinking":"a greeting"},{"role":"user","content":"and?"}]}`
		} else {
			body += `,"prompt":"hi"}`
		}
		st, b := ollamaCall(t, n, "POST", path, "", body)
		require.Equal(t, http.StatusOK, st, "%s", b)
		var a answer
		for _, l := range ndjson(t, b) {
			if m, ok := l["message"].(map[string]any); ok {
				a.content += m["content"].(string)
				th, _ := m["thinking"].(string)
				a.thinking += th
			} else {
				a.content += l["response"].(string)
				th, _ := l["thinking"].(string)
				a.thinking += th
			}
		}
		return a
	}
	for _, path := range []string{"/api/chat", "/api/generate"} {
		t.Run(path, func(t *testing.T) {
			whole := ask(t, path, "", false)
			require.Empty(t, whole.content, "all of it is reasoning")
			require.NotEmpty(t, whole.thinking)
			require.Equal(t, whole, ask(t, path, "", true), "streamed as whole")
			require.Equal(t, whole, ask(t, path, `,"think":true`, false), "think true: the same")
			off := ask(t, path, `,"think":false`, false)
			require.NotEmpty(t, off.content, "think false: the answer")
			require.Empty(t, off.thinking)
			require.Equal(t, off, ask(t, path, `,"think":false`, true))
			// A stop string is the answer's: one the reasoning holds
			// does not end it.
			word, _ := json.Marshal(strings.Fields(whole.thinking)[1])
			stopped := `,"options":{` + opts + `,"stop":[` + string(word) + `]}`
			require.Equal(t, whole, ask(t, path, stopped, false), "stop %s", word)
			require.Equal(t, whole, ask(t, path, stopped, true))
		})
	}

	// Continuing an answer (Open WebUI's "Continue response", a
	// prefill): a chat that ends with the assistant's text extends it,
	// as Ollama does, and the template writes that text as a past answer
	// (no think block opened), so the continuation is content. It opened
	// a new turn, whose think block took all of the answer.
	t.Run("continue", func(t *testing.T) {
		partial := `"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Once upon a time"}]`
		var whole answer
		for _, stream := range []bool{false, true} {
			st, b := ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"`+model+`","stream":`+strconv.FormatBool(stream)+`,"options":{`+opts+`},`+partial+`}`)
			require.Equal(t, http.StatusOK, st, "%s", b)
			var a answer
			for _, l := range ndjson(t, b) {
				m := l["message"].(map[string]any)
				a.content += m["content"].(string)
				th, _ := m["thinking"].(string)
				a.thinking += th
			}
			require.NotEmpty(t, a.content, "the continuation")
			require.Empty(t, a.thinking)
			if stream {
				require.Equal(t, whole, a, "streamed as whole")
			}
			whole = a
		}
		// The OpenAI route continues the same text the same way.
		st, b := ollamaCall(t, n, "POST", "/v1/chat/completions", "", `{"model":"`+model+`","max_tokens":8,"temperature":0,`+partial+`}`)
		require.Equal(t, http.StatusOK, st, "%s", b)
		var cc struct {
			Choices []struct {
				Message struct {
					Content          string
					ReasoningContent string `json:"reasoning_content"`
				}
			}
		}
		require.NoError(t, json.Unmarshal(b, &cc))
		require.Equal(t, whole.content, cc.Choices[0].Message.Content)
		require.Empty(t, cc.Choices[0].Message.ReasoningContent)
	})

	for _, tc := range []struct{ name, model, think, contains string }{
		{"a level", model, `"high"`, "takes no reasoning level"},
		{"think true on a model that does not think", "stories260k", `true`, "does not think"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, b := ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"`+tc.model+`","messages":[{"role":"user","content":"x"}],"think":`+tc.think+`}`)
			require.Equal(t, http.StatusBadRequest, st, "%s", b)
			require.Contains(t, ollamaErr(t, b), tc.contains)
		})
	}
}

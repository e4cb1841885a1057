package node

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCheckOllamaEmbed: /api/embed takes input, truncate, dimensions (a
// positive integer), options and keep_alive (without effect), and refuses
// any other field naming it; /api/embeddings takes prompt instead of input
// and neither truncate nor dimensions.
func TestCheckOllamaEmbed(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		legacy     bool
		bad        string // "" accepted
	}{
		{"input", `{"model":"m","input":"x"}`, false, ""},
		{"all fields", `{"model":"m","input":["x"],"truncate":false,"dimensions":64,"options":{"num_ctx":8,"temperature":0},"keep_alive":"5m"}`, false, ""},
		{"nulls", `{"name":"m","input":"x","truncate":null,"dimensions":null,"options":null,"keep_alive":-1}`, false, ""},
		{"unknown field", `{"model":"m","input":"x","pooling":"cls"}`, false, `unknown field "pooling"`},
		{"prompt on embed", `{"model":"m","prompt":"x"}`, false, `unknown field "prompt"`},
		{"truncate not a boolean", `{"model":"m","input":"x","truncate":"yes"}`, false, "truncate must be a boolean"},
		{"dimensions 0", `{"model":"m","input":"x","dimensions":0}`, false, "dimensions must be a positive integer"},
		{"dimensions not a number", `{"model":"m","input":"x","dimensions":"64"}`, false, "dimensions must be a positive integer"},
		{"options not an object", `{"model":"m","input":"x","options":[1]}`, false, "options must be an object"},
		{"legacy prompt", `{"model":"m","prompt":"x","options":{},"keep_alive":0}`, true, ""},
		{"legacy input", `{"model":"m","input":"x"}`, true, `unknown field "input"`},
		{"legacy truncate", `{"model":"m","prompt":"x","truncate":true}`, true, `unknown field "truncate"`},
		{"legacy dimensions", `{"model":"m","prompt":"x","dimensions":64}`, true, `unknown field "dimensions"`},
		{"not an object", `[]`, false, "must be an object"},
		{"keep_alive not a duration", `{"model":"m","input":"x","keep_alive":"soon"}`, false, `keep_alive "soon"`},
		{"keep_alive an array", `{"model":"m","input":"x","keep_alive":[1]}`, false, "keep_alive must be"},
		{"keep_alive 0 as a string", `{"model":"m","input":"x","keep_alive":"0"}`, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkOllamaEmbed([]byte(tc.body), tc.legacy)
			if tc.bad == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.bad)
		})
	}
}

// TestOllamaCapabilities: "completion" for every model, "tools" when the
// chat template renders tools (read from the GGUF's template or told by a
// worker); never "embedding", which Ollama gives embedding models alone.
func TestOllamaCapabilities(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    modelFacts
		want []string
	}{
		{"no template", modelFacts{}, []string{"completion"}},
		{"template without tools", modelFacts{Template: "{% for m in messages %}{{ m.content }}{% endfor %}"}, []string{"completion"}},
		{"Qwen-like template", modelFacts{Template: "{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>{% endif %}"}, []string{"completion", "tools"}},
		{"a worker says tools", modelFacts{Tools: true}, []string{"completion", "tools"}},
		{"a word containing tools", modelFacts{Template: "{{ messages | toolset }}"}, []string{"completion"}},
		{"Qwen3-like template", modelFacts{Template: "{%- if tools %}{{ tools }}{% endif %}<|im_start|>assistant\n<think>\n"}, []string{"completion", "tools", "thinking"}},
		{"gpt-oss-like template", modelFacts{Template: "<|start|>assistant<|channel|>final<|message|>"}, []string{"completion", "thinking"}},
		{"a worker says thinking", modelFacts{Thinking: true}, []string{"completion", "thinking"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.f.capabilities())
		})
	}
}

package engine

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/synth"
)

const chatMLTemplate = `{% for message in messages %}{{ bos_token if loop.first else '' }}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}`

func TestChatPrompt(t *testing.T) {
	msgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}
	cases := []struct {
		name, arch, tmpl, want string
	}{
		{"template", "llama", chatMLTemplate,
			"<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"no template llama", "llama", "", "System: Be brief.\nUser: Hi\nAssistant:"},
		{"no template qwen2", "qwen2", "",
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"broken template", "llama", "{% for m in messages %}{{ m.role }", "System: Be brief.\nUser: Hi\nAssistant:"},
		{"template raising", "llama", "{{ raise_exception('nope') }}", "System: Be brief.\nUser: Hi\nAssistant:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := synth.DefaultConfig()
			cfg.Arch, cfg.ChatTemplate = c.arch, c.tmpl
			m, err := Load(writeSynth(t, cfg), Options{Threads: 1})
			require.NoError(t, err)
			defer m.Close()
			got, err := m.ChatPrompt(msgs)
			require.NoError(t, err)
			require.Equal(t, c.want, got)
			ids, err := m.ChatTokens(msgs)
			require.NoError(t, err)
			require.Equal(t, m.Tokenizer().BOS(), ids[0])
			if len(ids) > 1 {
				require.NotEqual(t, m.Tokenizer().BOS(), ids[1], "BOS added twice")
			}
		})
	}
	m := loadStories(t)
	_, err := m.ChatPrompt(nil)
	require.ErrorIs(t, err, ErrBadRequest)
}

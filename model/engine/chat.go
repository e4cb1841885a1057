package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rbee-project/rbee/model/jinja"
)

// Message is one chat turn.
type Message struct {
	Role    string // "system", "user", "assistant" (templates may accept more)
	Content string
}

// errNoChatTemplate is recorded when a model
// has no tokenizer.chat_template and ChatPrompt uses the fallback format.
var errNoChatTemplate = errors.New("engine: model has no chat template")

func (m *Model) initChat() {
	src, ok := m.file.String("tokenizer.chat_template")
	if !ok || strings.TrimSpace(src) == "" {
		m.chatErr = errNoChatTemplate
		return
	}
	t, err := jinja.Compile(src)
	if err != nil {
		m.chatErr = fmt.Errorf("engine: compile chat template: %w", err)
		m.log.Warn("chat template does not compile; using the fallback format", "err", err)
		return
	}
	m.chatTmpl = t
}

// ChatPrompt renders msgs with the model's tokenizer.chat_template (Jinja,
// with messages, add_generation_prompt = true, bos_token and eos_token) and
// ends with the assistant's turn opened. The template runs under
// model/jinja's default budget; ctx's deadline, if sooner, bounds it too.
//
// If the model has no template, or it does not compile or fails to render
// with an ordinary error (raise_exception, a type error...), ChatPrompt falls
// back to ChatML for qwen2 and to a plain "User: …\nAssistant:" layout
// otherwise (see DESIGN.md); the fallback never fails. A template that hits
// a budget limit (recursion, steps, output, string or memory size, loop
// length, deadline) is hostile or broken, not merely unusual: ChatPrompt
// returns an error wrapping ErrTemplate that names the limit, and no
// prompt. A cancelled ctx returns its error.
//
// The text may contain special tokens such as the BOS text: tokenize it
// with parseSpecial = true, and without adding a second BOS when it already
// starts with one (see ChatTokens).
func (m *Model) ChatPrompt(ctx context.Context, msgs []Message) (string, error) {
	if len(msgs) == 0 {
		return "", fmt.Errorf("%w: no messages", ErrBadRequest)
	}
	if m.chatTmpl != nil {
		list := make([]any, len(msgs))
		for i, msg := range msgs {
			list[i] = jinja.Object{{Key: "role", Value: msg.Role}, {Key: "content", Value: msg.Content}}
		}
		out, err := m.chatTmpl.Render(ctx, map[string]any{
			"messages":              list,
			"add_generation_prompt": true,
			"bos_token":             m.tok.TokenText(m.tok.BOS()),
			"eos_token":             m.tok.TokenText(m.tok.EOS()),
		})
		switch {
		case err == nil:
			return out, nil
		case errors.Is(err, jinja.ErrBudget):
			m.log.Warn("chat template exceeded its budget", "err", err)
			return "", fmt.Errorf("%w: %w", ErrTemplate, err)
		case ctx.Err() != nil:
			return "", fmt.Errorf("engine: chat template: %w", ctx.Err())
		}
		m.log.Warn("chat template failed to render; using the fallback format", "err", err)
	}
	return fallbackChat(m.hp.arch, msgs), nil
}

// fallbackChat formats msgs without a model template.
func fallbackChat(arch string, msgs []Message) string {
	var b strings.Builder
	if arch == "qwen2" {
		for _, msg := range msgs {
			fmt.Fprintf(&b, "<|im_start|>%s\n%s<|im_end|>\n", msg.Role, msg.Content)
		}
		b.WriteString("<|im_start|>assistant\n")
		return b.String()
	}
	for _, msg := range msgs {
		role := msg.Role
		if role != "" {
			role = strings.ToUpper(role[:1]) + role[1:]
		}
		fmt.Fprintf(&b, "%s: %s\n", role, msg.Content)
	}
	b.WriteString("Assistant:")
	return b.String()
}

// ChatTokens renders msgs with ChatPrompt (returning its errors, ErrTemplate
// included) and tokenizes the result with special tokens parsed, adding BOS
// only when the model wants one and the rendered text does not already
// start with it.
func (m *Model) ChatTokens(ctx context.Context, msgs []Message) ([]int32, error) {
	text, err := m.ChatPrompt(ctx, msgs)
	if err != nil {
		return nil, err
	}
	addBOS := m.tok.AddBOS()
	if bos := m.tok.TokenText(m.tok.BOS()); bos != "" && strings.HasPrefix(text, bos) {
		addBOS = false
	}
	return m.tok.Encode(text, addBOS, true), nil
}

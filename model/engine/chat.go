package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/rbee-project/rbee/model/jinja"
)

// Message is one chat turn.
type Message struct {
	Role    string // "system", "user", "assistant", "tool" (templates may accept more)
	Content string
	// ToolCalls are the calls an assistant turn made; templates see them
	// as tool_calls[].{id, type, function: {name, arguments}}, arguments
	// parsed into an object (as Hugging Face's templates expect).
	ToolCalls []ToolCall
	// ToolCallID is the call a "tool" turn answers; Name the tool's name.
	ToolCallID string
	Name       string
	// Thinking is an assistant turn's reasoning (an earlier answer's
	// reasoning_content); templates see it as thinking (gpt-oss's
	// renders it as an analysis message) and reasoning_content (Qwen3's
	// reads that name). Empty: the turn has neither key.
	Thinking string
}

// ToolCall is one function call of an assistant turn.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // a JSON object, as OpenAI sends it
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
// back to ChatML for qwen2 and qwen3, Gemma's turns for the gemma family and to a plain "User: …\nAssistant:" layout
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
	return m.ChatPromptTools(ctx, msgs, nil)
}

// ChatPromptTools is ChatPrompt with the tools (OpenAI's function
// definitions, JSON) passed to the template as `tools`, the way Hugging
// Face's apply_chat_template and llama.cpp do; nil passes no tools. The
// fallback formats render no tools, but do write messages' tool calls. Malformed tool JSON or tool-call
// arguments are an error wrapping ErrBadRequest.
func (m *Model) ChatPromptTools(ctx context.Context, msgs []Message, tools []json.RawMessage) (string, error) {
	return m.chatPrompt(ctx, msgs, tools, nil, nil, false)
}

// ReservedChatVars lists the template variables the engine sets itself;
// ChatTokensVars refuses them as extra variables.
func ReservedChatVars() []string {
	return []string{"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"}
}

// chatPrompt is ChatPromptTools with the request's strings scrubbed by g
// (nil: as they are) and vars (JSON values) as extra template variables;
// open leaves the final assistant message open (see ChatTokensContinue).
func (m *Model) chatPrompt(ctx context.Context, msgs []Message, tools []json.RawMessage, vars map[string]json.RawMessage, g *literalGuard, open bool) (string, error) {
	if len(msgs) == 0 {
		return "", fmt.Errorf("%w: no messages", ErrBadRequest)
	}
	extra := make(map[string]any, len(vars))
	for k, raw := range vars {
		if slices.Contains(ReservedChatVars(), k) {
			return "", fmt.Errorf("%w: template variable %q is set from the request itself", ErrBadRequest, k)
		}
		v, err := jinja.ParseJSON(raw)
		if err != nil {
			return "", fmt.Errorf("%w: template variable %q is not JSON: %v", ErrBadRequest, k, err)
		}
		extra[k] = g.scrubValue(v)
	}
	if !open {
		return m.renderChat(ctx, msgs, tools, extra, g)
	}
	last := msgs[len(msgs)-1]
	if last.Role != "assistant" || len(last.ToolCalls) > 0 {
		return "", fmt.Errorf("%w: %w", ErrBadRequest, ErrNotContinuable)
	}
	if out, ok, err := m.renderOpen(ctx, msgs, tools, extra, g); err != nil || ok {
		return out, err
	}
	// The template does not write the message's text as it is, or has
	// failed: the conversation before it, with the assistant's turn
	// opened, then the text (llama-server's prefill).
	prompt, err := m.renderChat(ctx, msgs[:len(msgs)-1], tools, extra, g)
	if err != nil {
		return "", err
	}
	return prompt + g.scrub(last.Content), nil
}

// ErrNotContinuable: continuing a chat (ChatTokensContinue) needs a final
// assistant message without tool calls, the text the answer extends.
var ErrNotContinuable = errors.New("engine: only a final assistant message without tool calls can be continued")

// renderChat renders msgs with the assistant's turn opened: the template,
// or the fallback format when the model has none or it fails with an
// ordinary error.
func (m *Model) renderChat(ctx context.Context, msgs []Message, tools []json.RawMessage, extra map[string]any, g *literalGuard) (string, error) {
	if m.chatTmpl != nil {
		data, err := chatData(msgs, tools, g)
		if err != nil {
			return "", err
		}
		out, ok, err := m.renderTemplate(ctx, data, extra)
		if err != nil || ok {
			return out, err
		}
	}
	return fallbackChat(m.hp.arch, g.scrubMessages(msgs)), nil
}

// renderTemplate renders the template with data and extra, bos_token and
// eos_token. ok false: it failed with an ordinary error (raise_exception, a
// type error), for which the caller has a fallback; err: it went over its
// budget (ErrTemplate) or ctx ended.
func (m *Model) renderTemplate(ctx context.Context, data, extra map[string]any) (out string, ok bool, err error) {
	for k, v := range extra {
		data[k] = v
	}
	data["bos_token"] = m.tok.TokenText(m.tok.BOS())
	data["eos_token"] = m.tok.TokenText(m.tok.EOS())
	out, err = m.chatTmpl.Render(ctx, data)
	switch {
	case err == nil:
		return out, true, nil
	case errors.Is(err, jinja.ErrBudget):
		m.log.Warn("chat template exceeded its budget", "err", err)
		return "", false, fmt.Errorf("%w: %w", ErrTemplate, err)
	case ctx.Err() != nil:
		return "", false, fmt.Errorf("engine: chat template: %w", ctx.Err())
	}
	m.log.Warn("chat template failed to render; using the fallback format", "err", err)
	return "", false, nil
}

// renderOpen renders msgs, whose last is the assistant's partial answer,
// with the template as a finished conversation (add_generation_prompt
// false, as transformers' continue_final_message renders it) and cuts the
// text right after that message's content, so the model's answer extends
// it: what the template writes before the content stays (Qwen3's empty
// think block, gpt-oss's final channel header, a past reasoning the
// template keeps), its end-of-turn markup goes. The content carries an
// end marker (a private-use character and a random number no request can
// guess) to find its end by. ok false: no template, an ordinary render
// error, or a template that does not write the content as it is (the
// marker is missing, or the text before it does not end with the content,
// leading blanks aside, which templates trim; blanks is the stopper's set).
func (m *Model) renderOpen(ctx context.Context, msgs []Message, tools []json.RawMessage, extra map[string]any, g *literalGuard) (string, bool, error) {
	if m.chatTmpl == nil {
		return "", false, nil
	}
	data, err := chatData(msgs, tools, g)
	if err != nil {
		return "", false, err
	}
	list := data["messages"].([]any)
	lastObj := slices.Clone(list[len(list)-1].(jinja.Object))
	end := placeholderRune + strconv.FormatUint(rand.Uint64(), 10) + "$"
	content := ""
	for i, kv := range lastObj {
		if kv.Key == "content" {
			content = kv.Value.(string)
			lastObj[i].Value = content + end
		}
	}
	list[len(list)-1] = lastObj
	data["add_generation_prompt"] = false
	out, ok, err := m.renderTemplate(ctx, data, extra)
	if err != nil || !ok {
		return "", false, err
	}
	i := strings.LastIndex(out, end)
	if i < 0 || !strings.HasSuffix(out[:i], strings.TrimLeft(content, blanks)) {
		m.log.Warn("chat template does not write the continued message as it is; appending it to a new turn")
		return "", false, nil
	}
	return out[:i], true, nil
}

// chatData is the template's input: messages (role, content and, when
// present, tool_calls, tool_call_id, name), add_generation_prompt, tools;
// every string from the request scrubbed by g.
func chatData(msgs []Message, tools []json.RawMessage, g *literalGuard) (map[string]any, error) {
	list := make([]any, len(msgs))
	for i, msg := range msgs {
		o := jinja.Object{{Key: "role", Value: g.scrub(msg.Role)}, {Key: "content", Value: g.scrub(msg.Content)}}
		if len(msg.ToolCalls) > 0 {
			calls := make([]any, len(msg.ToolCalls))
			for j, c := range msg.ToolCalls {
				args, err := jinja.ParseJSON([]byte(c.Arguments))
				if err != nil {
					return nil, fmt.Errorf("%w: messages[%d].tool_calls[%d].function.arguments is not JSON: %v", ErrBadRequest, i, j, err)
				}
				calls[j] = jinja.Object{{Key: "id", Value: g.scrub(c.ID)}, {Key: "type", Value: "function"},
					{Key: "function", Value: jinja.Object{{Key: "name", Value: g.scrub(c.Name)}, {Key: "arguments", Value: g.scrubValue(args)}}}}
			}
			o = append(o, jinja.KV{Key: "tool_calls", Value: calls})
		}
		if msg.ToolCallID != "" {
			o = append(o, jinja.KV{Key: "tool_call_id", Value: g.scrub(msg.ToolCallID)})
		}
		if msg.Name != "" {
			o = append(o, jinja.KV{Key: "name", Value: g.scrub(msg.Name)})
		}
		if msg.Thinking != "" {
			o = append(o, jinja.KV{Key: "thinking", Value: g.scrub(msg.Thinking)}, jinja.KV{Key: "reasoning_content", Value: g.scrub(msg.Thinking)})
		}
		list[i] = o
	}
	data := map[string]any{"messages": list, "add_generation_prompt": true}
	if len(tools) > 0 {
		tl := make([]any, len(tools))
		for i, raw := range tools {
			v, err := jinja.ParseJSON(raw)
			if err != nil {
				return nil, fmt.Errorf("%w: tools[%d] is not JSON: %v", ErrBadRequest, i, err)
			}
			tl[i] = g.scrubValue(v)
		}
		data["tools"] = tl
	}
	return data, nil
}

// fallbackChat formats msgs without a model template.
func fallbackChat(arch string, msgs []Message) string {
	var b strings.Builder
	if qwenArch(arch) {
		for _, msg := range msgs {
			fmt.Fprintf(&b, "<|im_start|>%s\n%s<|im_end|>\n", msg.Role, fallbackContent(arch, msg))
		}
		b.WriteString("<|im_start|>assistant\n")
		return b.String()
	}
	if gemmaArch(arch) {
		// Gemma's turns: "user" and "model"; a system message opens the
		// next user turn, as Gemma's own templates put it.
		system := ""
		for _, msg := range msgs {
			content := fallbackContent(arch, msg)
			switch msg.Role {
			case "system":
				system += content + "\n\n"
				continue
			case "assistant":
				fmt.Fprintf(&b, "<start_of_turn>model\n%s<end_of_turn>\n", content)
				continue
			}
			fmt.Fprintf(&b, "<start_of_turn>user\n%s%s<end_of_turn>\n", system, content)
			system = ""
		}
		if system != "" {
			fmt.Fprintf(&b, "<start_of_turn>user\n%s<end_of_turn>\n", strings.TrimSuffix(system, "\n\n"))
		}
		b.WriteString("<start_of_turn>model\n")
		return b.String()
	}
	for _, msg := range msgs {
		role := msg.Role
		if role != "" {
			role = strings.ToUpper(role[:1]) + role[1:]
		}
		fmt.Fprintf(&b, "%s: %s\n", role, fallbackContent(arch, msg))
	}
	b.WriteString("Assistant:")
	return b.String()
}

// fallbackContent is a message's text in the fallback formats: its tool
// calls follow as {"name", "arguments"} objects, in <tool_call> tags for
// ChatML (the markup Qwen's templates use).
func fallbackContent(arch string, msg Message) string {
	var b strings.Builder
	b.WriteString(msg.Content)
	for _, c := range msg.ToolCalls {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		name, _ := json.Marshal(c.Name)
		call := fmt.Sprintf(`{"name": %s, "arguments": %s}`, name, c.Arguments)
		if qwenArch(arch) {
			call = "<tool_call>\n" + call + "\n</tool_call>"
		}
		b.WriteString(call)
	}
	return b.String()
}

// ChatTokens renders msgs with ChatPrompt (returning its errors, ErrTemplate
// included) and tokenizes the result with special tokens parsed, adding BOS
// only when the model wants one and the rendered text does not already
// start with it. Special-token text inside the messages (and tools) is read
// as plain text: only the template's own markup becomes special tokens, so
// a message cannot open a turn of another role (see literalGuard).
func (m *Model) ChatTokens(ctx context.Context, msgs []Message) ([]int32, error) {
	return m.ChatTokensTools(ctx, msgs, nil)
}

// ChatTokensTools is ChatTokens with tools (see ChatPromptTools).
func (m *Model) ChatTokensTools(ctx context.Context, msgs []Message, tools []json.RawMessage) ([]int32, error) {
	return m.ChatTokensVars(ctx, msgs, tools, nil)
}

// ChatTokensVars is ChatTokensTools with extra template variables (JSON
// values by name), as the chat_template_kwargs of llama.cpp's and vLLM's
// servers: e.g. {"enable_thinking": false} for Qwen3's template. The
// names the engine sets (messages, tools, add_generation_prompt,
// bos_token, eos_token) are refused with ErrBadRequest; the fallback
// formats read none.
func (m *Model) ChatTokensVars(ctx context.Context, msgs []Message, tools []json.RawMessage, vars map[string]json.RawMessage) ([]int32, error) {
	return m.chatTokens(ctx, msgs, tools, vars, false)
}

// ChatTokensContinue is ChatTokensVars for a conversation whose final
// message is the assistant's unfinished answer (a client's "continue" or
// prefill, as llama-server and Ollama take one and vLLM's
// continue_final_message): the prompt ends inside that message, right
// after its content, and the model's answer extends it instead of opening
// a new turn. The template renders the conversation as a finished one and
// the text is cut after the content (see renderOpen), so what a template
// writes before an assistant's content in that place stays: Qwen3's
// think block (empty, or the message's Thinking), gpt-oss's final-channel
// header (after an analysis message of the Thinking). Where the template
// does not write the content as it is, the other messages are rendered
// with the assistant's turn opened and the content follows (as
// llama-server does; the fallback formats too). The content is text like
// every request string: it writes no special token. A final message that
// is not the assistant's, or has tool calls, is an error wrapping
// ErrBadRequest and ErrNotContinuable.
func (m *Model) ChatTokensContinue(ctx context.Context, msgs []Message, tools []json.RawMessage, vars map[string]json.RawMessage) ([]int32, error) {
	return m.chatTokens(ctx, msgs, tools, vars, true)
}

// chatTokens renders and tokenizes msgs; open leaves the final message
// open (ChatTokensContinue).
func (m *Model) chatTokens(ctx context.Context, msgs []Message, tools []json.RawMessage, vars map[string]json.RawMessage, open bool) ([]int32, error) {
	g := newLiteralGuard(m.tok)
	text, err := m.chatPrompt(ctx, msgs, tools, vars, g, open)
	if err != nil {
		return nil, err
	}
	text, literal := g.restore(text)
	// A text that cannot fit whatever its tokens is not tokenized: that
	// costs memory in proportion to it (hundreds of MB for a megabyte of
	// tool-call arguments or tool definitions the template wrote).
	if mtb := m.info.MaxTokenBytes; mtb > 0 && len(text)/mtb >= m.hp.nCtx {
		return nil, fmt.Errorf("%w: the chat prompt is %d bytes, at least %d tokens; the context holds %d", ErrContextOverflow, len(text), len(text)/mtb, m.hp.nCtx)
	}
	addBOS := m.tok.AddBOS()
	// A BOS the template wrote is there already; one a message wrote is
	// text.
	fromRequest := len(literal) > 0 && literal[0][0] == 0
	if bos := m.tok.TokenText(m.tok.BOS()); bos != "" && strings.HasPrefix(text, bos) && !fromRequest {
		addBOS = false
	}
	return m.tok.EncodeLiteral(text, addBOS, literal), nil
}

// ChatTemplate returns the model's tokenizer.chat_template source, "" if
// it has none (callers read it to learn, e.g., how the model writes tool
// calls).
func (m *Model) ChatTemplate() string {
	src, _ := m.file.String("tokenizer.chat_template")
	return src
}

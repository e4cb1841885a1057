package worker

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/rbee-project/rbee/model/engine"
)

// Think tags are how Qwen3, QwQ and the DeepSeek-R1 distills (and other
// models trained on their data) write their reasoning: between <think>
// and </think>, before the answer (and before its tool calls):
//
//	<think>
//	…reasoning…
//	</think>
//
//	…answer…
//
// A template may open the block itself (the generation prompt ends with
// "<think>\n": DeepSeek-R1's later templates, QwQ's), so the answer starts
// inside the reasoning; Qwen3's writes "<think>\n\n</think>\n\n" when
// enable_thinking is false, so the answer starts outside it. On
// /v1/chat/completions the reasoning is reasoning_content and the rest is
// content (and tool calls), as llama-server's --reasoning-format
// deepseek and vLLM's reasoning parsers return it; Ollama's /api/chat
// returns it as message.thinking (the node parses the /v1/infer text
// with the same stream).

// FormatThink is StartedEvent.Format of a model that writes its
// reasoning between think tags.
const FormatThink = "think"

// The think tags. ThinkClose is exported for a node that writes an
// external engine's parsed reasoning back as a think block.
const (
	thinkOpen  = "<think>"
	ThinkClose = "</think>"
)

// ThinkTagFormat reports whether a model writes its reasoning between
// think tags: its vocabulary has <think> and </think> tokens (hasToken
// looks a token up by its text; Qwen3's and the R1 distills' have them),
// or its chat template writes <think> (QwQ's and Qwen3's open or close a
// block, R1's strips earlier ones). Either says the model was trained to
// write the tags; a model that has them and never writes <think> (an
// instruct variant) loses nothing, its answers being content. No
// configuration: the model file says it. A harmony model is not one
// (its own format wins).
func ThinkTagFormat(hasToken func(string) bool, tmpl string) bool {
	return hasToken(thinkOpen) && hasToken(ThinkClose) || strings.Contains(tmpl, thinkOpen)
}

// thinkOpener is implemented by a Model that can tell whether a rendered
// prompt ends inside an open <think> block.
type thinkOpener interface {
	OpensThink(prompt []int32) bool
}

// quietReasoning is the span of a chat answer in which stop strings are
// not looked for: a think-tag model's reasoning block (from the
// answer's leading <think>, or from its start when the prompt opened
// it, to </think>), nil for other answers. A stop string is meant for
// the answer the client reads (the content): one the model writes while
// reasoning ("\n\n", "User:") ended the whole answer before it began.
// The reasoning comes apart on /v1/chat/completions and, through the
// node, on Ollama's /api/chat and templated /api/generate, whose
// requests are the chats of /v1/infer; a raw prompt's answer is text.
func (j *job) quietReasoning() *engine.QuietSpan {
	if !j.g.chat || len(j.req.Stop) == 0 || j.format() != FormatThink || j.g.rawReasoning() {
		return nil
	}
	return &engine.QuietSpan{Open: thinkOpen, Close: ThinkClose, Inside: j.thinkOpen()}
}

// reasoningFormats are the values of reasoning_format rbee takes
// (llama-server's names): none answers the raw text, auto and deepseek
// (the default) the reasoning apart, as rbee reads every model's
// format itself. llama-server's deepseek-legacy (the reasoning both
// apart and in the content) is not offered.
var reasoningFormats = []string{"none", "auto", "deepseek"}

// checkReasoningFormat refuses a reasoning_format rbee does not take.
func (g *genRequest) checkReasoningFormat() *apiError {
	if f := g.ReasoningFormat; f != nil && !slices.Contains(reasoningFormats, *f) {
		return badRequest("reasoning_format", "invalid_value", fmt.Sprintf("reasoning_format %q: expected %s", *f, strings.Join(reasoningFormats, ", ")))
	}
	return nil
}

// rawReasoning reports whether the request asks for the model's text as
// it is (reasoning_format none): reasoning and markup are content, and
// stop strings match all of it.
func (g *genRequest) rawReasoning() bool {
	return g.ReasoningFormat != nil && *g.ReasoningFormat == "none"
}

// ReasoningStream parses an answer that carries reasoning as it is
// generated: Push takes the engine's text and returns the content and
// reasoning to stream now; Finish returns what is left and the tool
// calls (names are the callable functions). Feeding a whole answer
// through one Push and Finish gives what the pushes of its pieces give
// together, so streamed and whole answers agree. StreamedContent reports
// whether any content has been given out: an answer without is tool
// calls alone.
type ReasoningStream interface {
	Push(text string) (content, reasoning string)
	Finish(names []string) (content, reasoning string, calls []ToolCall)
	StreamedContent() bool
}

// NewReasoningStream returns the stream for answers in format (a
// StartedEvent's Format), or nil for plain text. open says the prompt
// opened a think block (StartedEvent.ThinkOpen); tools whether the
// request has tools (calls are parsed).
func NewReasoningStream(format string, open, tools bool) ReasoningStream {
	switch format {
	case FormatHarmony:
		return NewHarmonyStream(tools)
	case FormatThink:
		return NewThinkStream(open, tools)
	}
	return nil
}

// Where a ThinkStream is in the answer.
const (
	thinkBegin     = iota // nothing decided: a think block or the answer
	thinkReasoning        // inside the block, up to </think>
	thinkLead             // after </think>: the blank lines before the answer
	thinkContent          // the answer
)

// ThinkStream parses an answer of a think-tag model (ThinkTagFormat):
// a leading <think>…</think> block is the reasoning, the rest the
// content, read by a ToolStream when the request has tools (Qwen3 writes
// its <tool_call>s after the block). Only a leading block counts: a
// <think> inside the answer is its text. The whitespace around the
// reasoning and before the content is dropped (the template's and the
// model's line breaks), and text that may be the beginning of a tag is
// held back until the next Push. An answer cut inside the block is
// reasoning alone.
type ThinkStream struct {
	state int
	buf   string      // text not yet consumed
	tools *ToolStream // the content's, with tools
	sent  int         // bytes of content given out
	// reasoned: some reasoning has been given out (the block's leading
	// blanks are behind).
	reasoned bool
}

// NewThinkStream returns a stream for an answer; open says the prompt
// opened the think block (the answer starts inside it), tools whether
// the request has tools.
func NewThinkStream(open, tools bool) *ThinkStream {
	ts := &ThinkStream{}
	if open {
		ts.state = thinkReasoning
	}
	if tools {
		ts.tools = &ToolStream{}
	}
	return ts
}

// blank is the whitespace dropped around the reasoning.
const blank = " \t\r\n"

// Push adds generated text and returns the content and reasoning to
// stream now.
func (ts *ThinkStream) Push(text string) (content, reasoning string) {
	ts.buf += text
	var c, r strings.Builder
	for {
		switch ts.state {
		case thinkBegin:
			lead := strings.TrimLeft(ts.buf, blank)
			switch {
			case len(lead) < len(thinkOpen) && strings.HasPrefix(thinkOpen, lead):
				return ts.out(&c, &r) // may still become <think>
			case strings.HasPrefix(lead, thinkOpen):
				ts.buf, ts.state = lead[len(thinkOpen):], thinkReasoning
			default:
				ts.state = thinkContent
			}
		case thinkReasoning:
			if !ts.reasoned {
				ts.buf = strings.TrimLeft(ts.buf, blank)
			}
			i := strings.Index(ts.buf, ThinkClose)
			if i < 0 {
				// Hold back what may begin </think>, and the blanks
				// before it (dropped if the tag follows).
				keep := tagPrefix(ts.buf, ThinkClose)
				body := strings.TrimRight(ts.buf[:len(ts.buf)-keep], blank)
				ts.write(&r, body)
				ts.buf = ts.buf[len(body):]
				return ts.out(&c, &r)
			}
			ts.write(&r, strings.TrimRight(ts.buf[:i], blank))
			ts.buf, ts.state = ts.buf[i+len(ThinkClose):], thinkLead
		case thinkLead:
			ts.buf = strings.TrimLeft(ts.buf, blank)
			if ts.buf == "" {
				return ts.out(&c, &r)
			}
			ts.state = thinkContent
		case thinkContent:
			if ts.tools != nil {
				c.WriteString(ts.tools.Push(ts.buf))
			} else {
				c.WriteString(ts.buf)
			}
			ts.buf = ""
			return ts.out(&c, &r)
		}
	}
}

// write adds reasoning.
func (ts *ThinkStream) write(r *strings.Builder, s string) {
	if s != "" {
		r.WriteString(s)
		ts.reasoned = true
	}
}

// out returns what one Push streams, counting the content.
func (ts *ThinkStream) out(c, r *strings.Builder) (string, string) {
	ts.sent += c.Len()
	return c.String(), r.String()
}

// Finish ends the answer: the content and reasoning not yet streamed,
// and the tool calls. An answer cut inside the block (max_tokens) ends
// as reasoning alone.
func (ts *ThinkStream) Finish(names []string) (content, reasoning string, calls []ToolCall) {
	switch ts.state {
	case thinkBegin:
		// Blanks or a beginning of <think> that was not one: content.
		ts.state = thinkContent
		content, _ = ts.Push("")
	case thinkReasoning:
		reasoning = strings.TrimRight(ts.buf, blank)
	}
	ts.buf = ""
	if ts.tools != nil {
		rest, c := ts.tools.Finish(names)
		content += rest
		calls = c
	}
	ts.sent += len(content)
	return content, reasoning, calls
}

// StreamedContent reports whether any content has been given out (by
// Push or Finish).
func (ts *ThinkStream) StreamedContent() bool { return ts.sent > 0 }

// tagPrefix is the length of the longest end of s that is a proper
// prefix of tag: held back until the next text says.
func tagPrefix(s, tag string) int {
	for k := min(len(tag)-1, len(s)); k > 0; k-- {
		if strings.HasSuffix(s, tag[:k]) {
			return k
		}
	}
	return 0
}

// ErrThink: a think value is neither a boolean nor one of the levels.
var ErrThink = errors.New("think must be true, false, or one of low, medium, high")

// Think is Ollama's think, which the node passes on /v1/infer: a
// boolean, or a reasoning level (low, medium, high).
type Think struct {
	On    bool
	Level string // "" for a boolean
}

// UnmarshalJSON reads true, false or a level.
func (t *Think) UnmarshalJSON(b []byte) error {
	var on bool
	if json.Unmarshal(b, &on) == nil {
		*t = Think{On: on}
		return nil
	}
	var level string
	if json.Unmarshal(b, &level) == nil && slices.Contains(reasoningEfforts, level) {
		*t = Think{On: true, Level: level}
		return nil
	}
	return ErrThink
}

// MarshalJSON writes the boolean or the level.
func (t Think) MarshalJSON() ([]byte, error) {
	if t.Level != "" {
		return json.Marshal(t.Level)
	}
	return json.Marshal(t.On)
}

// defaultThinkLevel is the effort think true asks of a template that
// takes one: Ollama's default level for gpt-oss.
const defaultThinkLevel = "medium"

// applyThink turns the request's think (/v1/infer's, from Ollama's API)
// into the template variables it means for the model, or refuses what
// the model cannot do: true asks for reasoning (enable_thinking true for
// a think-tag template; the default level for one that reads
// reasoning_effort), which a model that writes no reasoning format
// cannot give; a level needs a template that reads reasoning_effort
// (gpt-oss's: Qwen3 and R1 think or not, at no level); false asks the
// template for none (enable_thinking false, as Qwen3's reads it). A
// think that disagrees with the request's own variables is refused.
func (g *genRequest) applyThink(info ModelInfo) *apiError {
	t := g.Think
	if t == nil {
		return nil
	}
	setVar := func(k string, v any) *apiError {
		raw, _ := json.Marshal(v)
		if old, ok := g.ChatTemplateKwargs[k]; ok && !bytes.Equal(bytes.TrimSpace(old), raw) {
			return badRequest("think", "invalid_value", fmt.Sprintf("think and chat_template_kwargs.%s disagree: send one of them", k))
		}
		kw := make(map[string]json.RawMessage, len(g.ChatTemplateKwargs)+1)
		maps.Copy(kw, g.ChatTemplateKwargs)
		kw[k] = raw
		g.ChatTemplateKwargs = kw
		return nil
	}
	level := t.Level
	switch {
	case !t.On:
		return setVar("enable_thinking", false)
	case !info.Harmony && !info.ThinkTags && !info.ReasoningEffort:
		return badRequest("think", codeUnsupportedParam, "think: this model does not think (it writes no reasoning: no think tags, no harmony channels)")
	case level != "" && !info.ReasoningEffort:
		return badRequest("think", codeUnsupportedParam, fmt.Sprintf("think %q: this model thinks or not (think true or false); its chat template takes no reasoning level", level))
	case info.ThinkTags:
		if aerr := setVar("enable_thinking", true); aerr != nil {
			return aerr
		}
	}
	if info.ReasoningEffort {
		level = cmp.Or(level, defaultThinkLevel)
		if g.ReasoningEffort != nil && *g.ReasoningEffort != level {
			return badRequest("think", "invalid_value", "think and reasoning_effort disagree: send one of them")
		}
		g.ReasoningEffort = &level
	}
	return nil
}

package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Harmony is the output format of gpt-oss (OpenAI's open-weight models;
// the vocabulary is o200k_harmony). The model answers in messages, each a
// header and a body:
//
//	<|channel|>analysis<|message|>…reasoning…<|end|>
//	<|start|>assistant<|channel|>final<|message|>…answer…<|return|>
//	<|start|>assistant to=functions.NAME<|channel|>commentary <|constrain|>json<|message|>{…}<|call|>
//
// (the first message's "<|start|>assistant" is the prompt's; "to=" may come
// before or after the channel). <|return|> and <|call|> end generation
// (the tokenizer counts them among the end-of-generation tokens, so they
// never reach the text); the other markers are user-defined tokens whose
// text the engine emits, so the answer is parsed from its text, as
// llama.cpp and Ollama parse it.
//
// On /v1/chat/completions the final channel (and a commentary message
// addressed to nobody, a preamble for the user) is content, the analysis
// channel is reasoning_content, and a message addressed to=functions.NAME
// is a tool call. An answer that begins with no marker is the body of a
// content message the prompt opened (a template that ends its generation
// prompt with <|channel|>final<|message|>; a model that does not write
// harmony reads the same), and with tools one that begins with "{" is a
// bare call (what the grammar writes for a forced one), read as the other
// models' answers are (ToolStream).

// FormatHarmony is StartedEvent.Format of a model that answers in
// harmony.
const FormatHarmony = "harmony"

// format is the started event's Format of the job's model.
func (j *job) format() string {
	switch info := j.model.Info(); {
	case info.Harmony:
		return FormatHarmony
	case info.ThinkTags:
		return FormatThink
	}
	return ""
}

// thinkOpen reports whether the job's prompt (the request's own, without
// resumed tokens) ends inside an open think block, so the answer starts
// as reasoning. A constrained answer (a JSON response, a forced call)
// never does: the grammar writes it from its first token.
func (j *job) thinkOpen() bool {
	to, ok := j.model.(thinkOpener)
	return ok && j.req.Schema == nil && to.OpensThink(j.req.Prompt[:len(j.req.Prompt)-j.req.Resume])
}

// reasoning is the stream that parses the job's chat answer, nil for a
// model that writes no reasoning format or a request for the raw text
// (reasoning_format none).
func (j *job) reasoning() ReasoningStream {
	if j.g.rawReasoning() {
		return nil
	}
	return NewReasoningStream(j.format(), j.thinkOpen(), j.g.tools.names != nil)
}

// Harmony's markers: special tokens of o200k_harmony.
const (
	harmonyStart     = "<|start|>"
	harmonyEnd       = "<|end|>"
	harmonyMessage   = "<|message|>"
	harmonyChannel   = "<|channel|>"
	harmonyConstrain = "<|constrain|>"
	harmonyReturn    = "<|return|>"
	harmonyCall      = "<|call|>"
	// harmonyTo opens a header's recipient (" to=functions.NAME").
	harmonyTo = " to="
	// harmonyFunctions prefixes a recipient that is a function tool.
	harmonyFunctions = "functions."
)

// harmonyMarkers are the markers that end a message's body (any marker
// but the body's own text: the model never writes one inside a body).
var harmonyMarkers = []string{harmonyStart, harmonyEnd, harmonyMessage, harmonyChannel, harmonyConstrain, harmonyReturn, harmonyCall}

// HarmonyFormat reports whether a model writes harmony: its vocabulary
// has the <|channel|> and <|message|> tokens (hasToken looks a token up
// by its text), or its chat template writes <|channel|>. No
// configuration: the model file says it.
func HarmonyFormat(hasToken func(string) bool, tmpl string) bool {
	return hasToken(harmonyChannel) && hasToken(harmonyMessage) || strings.Contains(tmpl, harmonyChannel)
}

// reasoningEfforts are the values of reasoning_effort that gpt-oss's
// template takes (its system message says "Reasoning: high").
var reasoningEfforts = []string{"low", "medium", "high"}

// templateReasoningRE finds the reasoning_effort variable in a template.
var templateReasoningRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\breasoning_effort\b`) })

// TemplateReasoningEffort reports whether a chat template reads the
// reasoning_effort variable (gpt-oss's does).
func TemplateReasoningEffort(tmpl string) bool { return templateReasoningRE().MatchString(tmpl) }

// templateVars are a chat's further template variables: the request's
// chat_template_kwargs, and its reasoning_effort (OpenAI's parameter) as
// the variable of that name, as vLLM passes it to gpt-oss's template. A
// model whose template does not read it refuses it, as a value the two
// give differently.
func (g *genRequest) templateVars(info ModelInfo) (map[string]json.RawMessage, *apiError) {
	if g.ReasoningEffort == nil {
		return g.ChatTemplateKwargs, nil
	}
	effort := *g.ReasoningEffort
	if !slices.Contains(reasoningEfforts, effort) {
		return nil, badRequest("reasoning_effort", "invalid_value", fmt.Sprintf("reasoning_effort %q: expected %s", effort, strings.Join(reasoningEfforts, ", ")))
	}
	if !info.ReasoningEffort {
		msg := "reasoning_effort: this model's chat template takes no reasoning effort"
		if info.ThinkTags {
			msg += " (this model thinks or not: chat_template_kwargs.enable_thinking, Ollama's think true or false)"
		}
		return nil, badRequest("reasoning_effort", codeUnsupportedParam, msg)
	}
	raw, _ := json.Marshal(effort)
	if kw, ok := g.ChatTemplateKwargs["reasoning_effort"]; ok && !bytes.Equal(bytes.TrimSpace(kw), raw) {
		return nil, badRequest("reasoning_effort", "invalid_value", "reasoning_effort and chat_template_kwargs.reasoning_effort disagree: send one of them")
	}
	vars := make(map[string]json.RawMessage, len(g.ChatTemplateKwargs)+1)
	for k, v := range g.ChatTemplateKwargs {
		vars[k] = v
	}
	vars["reasoning_effort"] = raw
	return vars, nil
}

// Where a HarmonyStream is in the answer.
const (
	harmonyBegin  = iota // nothing decided: harmony or plain text
	harmonyHeader        // reading a message's header, up to <|message|>
	harmonyBody          // reading a message's body, up to a marker
	harmonyPlain         // a bare JSON call (tools only): read by a ToolStream
)

// What a message's body is.
const (
	bodyContent   = iota // final channel, a preamble: the answer
	bodyReasoning        // analysis channel
	bodyCall             // addressed to a recipient: a tool call
)

// harmonyCallMsg is a message addressed to a recipient, held until
// Finish decides whether it is a call.
type harmonyCallMsg struct {
	name string // the recipient without "functions."
	args strings.Builder
}

// HarmonyStream parses a harmony answer as it is generated: Push takes
// the engine's text and returns the content and reasoning to stream now;
// Finish returns what is left and the tool calls. Text that may be the
// beginning of a marker is held back until the next Push. Feeding a whole
// answer through one Push and Finish gives what the pushes of its pieces
// give together, so streamed and whole answers agree.
type HarmonyStream struct {
	state  int
	buf    string // text not yet consumed
	kind   int    // of the body being read
	calls  []*harmonyCallMsg
	plain  *ToolStream // harmonyPlain's
	tools  bool
	sentTo int // bytes of content streamed so far
}

// NewHarmonyStream returns a stream for an answer; tools says whether
// the request has tools (calls are parsed).
func NewHarmonyStream(tools bool) *HarmonyStream {
	return &HarmonyStream{tools: tools}
}

// Push adds generated text and returns the content and reasoning to
// stream now.
func (hs *HarmonyStream) Push(text string) (content, reasoning string) {
	hs.buf += text
	var c, r strings.Builder
	for {
		switch hs.state {
		case harmonyBegin:
			lead := strings.TrimLeft(hs.buf, " \t\r\n")
			switch {
			case lead == "" || couldBegin(hs.buf):
				return hs.out(&c, &r)
			case beginsHarmony(hs.buf):
				hs.state = harmonyHeader
			case hs.tools && strings.HasPrefix(lead, "{"):
				// A bare call: one the grammar forces.
				hs.state, hs.plain = harmonyPlain, &ToolStream{}
			default:
				// The prompt opened the message itself (a template
				// whose generation prompt ends with
				// <|channel|>final<|message|>), or the model does not
				// write harmony: the answer is a body of content,
				// and markers that follow still count.
				hs.state, hs.kind = harmonyBody, bodyContent
			}
		case harmonyPlain:
			c.WriteString(hs.plain.Push(hs.buf))
			hs.buf = ""
			return hs.out(&c, &r)
		case harmonyHeader:
			i := strings.Index(hs.buf, harmonyMessage)
			if i < 0 {
				return hs.out(&c, &r)
			}
			hs.openBody(hs.buf[:i])
			hs.buf = hs.buf[i+len(harmonyMessage):]
			hs.state = harmonyBody
		case harmonyBody:
			i, m := firstMarker(hs.buf)
			if i < 0 {
				keep := markerPrefix(hs.buf)
				hs.write(&c, &r, hs.buf[:len(hs.buf)-keep])
				hs.buf = hs.buf[len(hs.buf)-keep:]
				return hs.out(&c, &r)
			}
			hs.write(&c, &r, hs.buf[:i])
			hs.buf = hs.buf[i:]
			if m == harmonyEnd || m == harmonyReturn || m == harmonyCall {
				hs.buf = hs.buf[len(m):] // the message's end; a header follows
			}
			hs.state = harmonyHeader
		}
	}
}

// out returns what one Push streams, counting the content.
func (hs *HarmonyStream) out(c, r *strings.Builder) (string, string) {
	hs.sentTo += c.Len()
	return c.String(), r.String()
}

// openBody reads a message's header and starts its body.
func (hs *HarmonyStream) openBody(header string) {
	channel := ""
	if _, after, ok := strings.Cut(header, harmonyChannel); ok {
		channel = headerWord(after)
	}
	recipient := ""
	if _, after, ok := strings.Cut(header, strings.TrimPrefix(harmonyTo, " ")); ok {
		recipient = headerWord(after)
	}
	switch {
	case recipient != "":
		hs.kind = bodyCall
		hs.calls = append(hs.calls, &harmonyCallMsg{name: strings.TrimPrefix(recipient, harmonyFunctions)})
	case channel == "analysis":
		hs.kind = bodyReasoning
	default:
		hs.kind = bodyContent
	}
}

// headerWord is a header's value: up to a space or the next marker.
func headerWord(s string) string {
	if i := strings.IndexAny(s, " \t\n<"); i >= 0 {
		s = s[:i]
	}
	return s
}

// write adds body text to the current message.
func (hs *HarmonyStream) write(c, r *strings.Builder, s string) {
	switch hs.kind {
	case bodyContent:
		c.WriteString(s)
	case bodyReasoning:
		r.WriteString(s)
	case bodyCall:
		hs.calls[len(hs.calls)-1].args.WriteString(s)
	}
}

// Finish ends the answer: the content and reasoning not yet streamed,
// and the tool calls (names are the callable functions; a message
// addressed to another recipient, or whose arguments are no JSON object,
// is content). A header cut short (max_tokens) is dropped.
func (hs *HarmonyStream) Finish(names []string) (content, reasoning string, calls []ToolCall) {
	switch hs.state {
	case harmonyBegin:
		content = hs.buf // a marker's beginning that was not one
	case harmonyPlain:
		content, calls = hs.plain.Finish(names)
	case harmonyBody:
		var c, r strings.Builder
		hs.write(&c, &r, hs.buf)
		content, reasoning = c.String(), r.String()
	}
	hs.buf = ""
	for _, m := range hs.calls {
		var args bytes.Buffer
		if slices.Contains(names, m.name) && json.Compact(&args, []byte(m.args.String())) == nil && args.Len() > 0 && args.Bytes()[0] == '{' {
			calls = append(calls, ToolCall{ID: "call_" + newID(), Type: "function", Function: ToolCallFunction{Name: m.name, Arguments: args.String()}})
			continue
		}
		content += m.args.String()
	}
	hs.sentTo += len(content)
	return content, reasoning, calls
}

// StreamedContent reports whether any content has been given out (by
// Push or Finish): an answer without is tool calls alone.
func (hs *HarmonyStream) StreamedContent() bool { return hs.sentTo > 0 }

// beginsHarmony reports whether an answer's text starts as a harmony
// header does: a marker, or the recipient of the prompt's open header.
func beginsHarmony(s string) bool {
	if strings.HasPrefix(s, harmonyTo) {
		return true
	}
	return slices.ContainsFunc(harmonyMarkers, func(m string) bool { return strings.HasPrefix(s, m) })
}

// couldBegin reports whether s, all of an answer so far, may still grow
// into the beginning of a harmony header.
func couldBegin(s string) bool {
	if strings.HasPrefix(harmonyTo, s) {
		return true
	}
	return slices.ContainsFunc(harmonyMarkers, func(m string) bool { return len(s) < len(m) && strings.HasPrefix(m, s) })
}

// firstMarker finds the first marker in s: its offset (-1: none) and
// which.
func firstMarker(s string) (int, string) {
	at, which := -1, ""
	for _, m := range harmonyMarkers {
		if i := strings.Index(s, m); i >= 0 && (at < 0 || i < at) {
			at, which = i, m
		}
	}
	return at, which
}

// markerPrefix is the length of the longest end of s that may begin a
// marker: held back until the next text says.
func markerPrefix(s string) int {
	i := strings.LastIndex(s, "<")
	if i < 0 {
		return 0
	}
	tail := s[i:]
	if slices.ContainsFunc(harmonyMarkers, func(m string) bool { return len(tail) < len(m) && strings.HasPrefix(m, tail) }) {
		return len(tail)
	}
	return 0
}

// reasoningAnswer reads a whole answer (text) as the assistant's
// message, with the same stream (hs) a streamed answer goes through; fr
// is the finish reason, "tool_calls" when the answer has calls.
func reasoningAnswer(hs ReasoningStream, text string, plan toolPlan, fr string) (Message, string) {
	c, r := hs.Push(text)
	rc, rr, calls := hs.Finish(plan.names)
	msg := Message{Role: "assistant", Content: c + rc, ReasoningContent: r + rr}
	if len(calls) > 0 {
		msg.ToolCalls, fr = plan.limit(calls), "tool_calls"
	}
	return msg, fr
}

package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rbee-project/rbee/internal/jsonx"
	"github.com/rbee-project/rbee/model/grammar"
)

// Tool calling on /v1/chat/completions: tools are rendered by the model's
// chat template (as Hugging Face and llama.cpp pass them), and calls are
// parsed back from the generated text in the two common markups:
//   - Hermes/Qwen 2.5: <tool_call>{"name": ..., "arguments": {...}}</tool_call>,
//     any number of them, after optional text;
//   - Llama 3.x: the whole answer is {"name": ..., "parameters": {...}}
//     (after <|python_tag|> when the model writes it as text).
// tool_choice "required" or a named function constrains the output with
// the grammar to one call in the model's markup.

// Tool-call markups, by what the chat template asks the model to write.
const (
	ToolStyleHermes = "hermes" // <tool_call>…</tool_call>
	ToolStyleJSON   = "json"   // a bare {"name", "parameters"} object
)

// Markup of the Hermes style.
const (
	toolCallOpen  = "<tool_call>"
	toolCallClose = "</tool_call>"
	pythonTag     = "<|python_tag|>"
)

// templateToolsRE finds the tools variable in a Jinja chat template.
var templateToolsRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\btools\b`) })

// TemplateTools reports whether a chat template renders the request's
// tools (it reads the tools variable, as Qwen's, Llama 3.1's and other
// Hugging Face tool templates do): what Ollama calls the "tools"
// capability.
func TemplateTools(tmpl string) bool { return templateToolsRE().MatchString(tmpl) }

// ToolCall is one function call of an assistant message (OpenAI's shape).
// Index is set only in streamed deltas, where a call's later deltas carry
// only more of its arguments.
type ToolCall struct {
	Index    *int             `json:"index,omitempty"`
	ID       string           `json:"id,omitempty"`
	Type     string           `json:"type,omitempty"`
	Function ToolCallFunction `json:"function"`
}

// ToolCallFunction is the function and its arguments, a JSON object as a
// string.
type ToolCallFunction struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// toolDef is one entry of a request's tools.
type toolDef struct {
	Type     string `json:"type"`
	Function struct {
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
	} `json:"function"`
}

// toolChoice is a request's tool_choice, read.
type toolChoice struct {
	mode string // "none", "auto", "required", "function"
	name string // mode "function": the forced function
}

// toolPlan is what prepare decided about tools for the handlers.
type toolPlan struct {
	names  []string // the callable functions; nil: tools are off
	single bool     // parallel_tool_calls: false
	// forced: tool_choice required or a function, so the answer is one
	// call (forcedName: the function tool_choice names, if it does).
	forced     bool
	forcedName string
}

// cutAnswer reads an answer with tools that the token limit ended
// without a whole call (ParseToolCalls found none): a forced one is the
// call it was writing (cutCall), with no content; one that had begun a
// call in the <tool_call> markup is the text before it as content and
// the call so far (its whole calls before it too), so that the markup of
// a call is never content, as OpenAI and vLLM answer a call max_tokens
// cut. ok is false for any other answer, which is all content.
func (p toolPlan) cutAnswer(text string) (content string, calls []ToolCall, ok bool) {
	if p.forced {
		return "", p.cutCall(text), true
	}
	i := strings.Index(text, toolCallOpen)
	if i < 0 {
		return text, nil, false
	}
	content, calls, tail := hermesCalls(text, i, p.names)
	if tail == "" || strings.Contains(tail[len(toolCallOpen):], toolCallOpen) {
		return text, nil, false // every call whole, or a broken one before the last: not cut in a call
	}
	return content, append(calls, p.cutCall(tail)...), true
}

// cutCall is the call the text was writing when the token limit ended
// the answer, returned as OpenAI and vLLM return such a call (with
// finish_reason "length"): the function's name (the one tool_choice
// names, or the one written, once written whole) and the arguments
// written so far, the prefix of a JSON object ("" before they start).
// None before the name is known: the answer is then neither text nor a
// call. The text is a call in the model's markup, cut: a forced one's is
// the grammar's, so a valid prefix of one.
func (p toolPlan) cutCall(text string) []ToolCall {
	name, args := p.forcedName, ""
	body := strings.TrimLeft(text, " \t\r\n")
	body = strings.TrimLeft(strings.TrimPrefix(body, toolCallOpen), " \t\r\n")
	rest, ok := strings.CutPrefix(body, "{")
	for ok {
		rest = strings.TrimLeft(rest, " \t\r\n,")
		d := json.NewDecoder(strings.NewReader(rest))
		var key string
		if d.Decode(&key) != nil {
			break // the text ends inside a key
		}
		rest = strings.TrimLeft(rest[d.InputOffset():], " \t\r\n")
		if rest, ok = strings.CutPrefix(rest, ":"); !ok {
			break
		}
		rest = strings.TrimLeft(rest, " \t\r\n")
		d = json.NewDecoder(strings.NewReader(rest))
		var raw json.RawMessage
		err := d.Decode(&raw)
		switch {
		case err != nil && (key == "arguments" || key == "parameters"):
			args = rest // cut inside the arguments: what was written of them
			ok = false
		case err != nil:
			ok = false
		case key == "name":
			var n string
			if json.Unmarshal(raw, &n) == nil && slices.Contains(p.names, n) {
				name = n
			}
		case key == "arguments" || key == "parameters":
			var buf bytes.Buffer
			if json.Compact(&buf, raw) == nil {
				args = buf.String()
			}
		}
		if ok {
			rest = rest[d.InputOffset():]
		}
	}
	if name == "" {
		return nil
	}
	return []ToolCall{{ID: "call_" + newID(), Type: "function", Function: ToolCallFunction{Name: name, Arguments: args}}}
}

// limit keeps only the first call when parallel calls are off.
func (p toolPlan) limit(calls []ToolCall) []ToolCall {
	if p.single && len(calls) > 1 {
		return calls[:1]
	}
	return calls
}

// toolNameRE is what OpenAI takes as a function's name.
var toolNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`) })

// readTools validates tools and tool_choice and returns the tools to
// render (nil for none), the plan, and the grammar of a forced call.
// strictNames refuses a function name OpenAI refuses (toolNameRE): the
// OpenAI endpoint does; /v1/infer, Ollama's /api/chat, takes any name as
// Ollama does. rendered says whether the model's chat template renders
// tools (TemplateTools): where it does not, the model would never see
// them, so tools the model is left to call (tool_choice auto) are
// refused, as Ollama refuses tools for a model without the tools
// capability and vLLM auto tool choice without a parser; a forced call
// (required, a named function) is written by the grammar whatever the
// model saw, and stays.
func (g *genRequest) readTools(style string, strictNames, rendered bool) (render []json.RawMessage, plan toolPlan, forced *grammar.Schema, aerr *apiError) {
	defs := make([]toolDef, len(g.Tools))
	for i, raw := range g.Tools {
		param := fmt.Sprintf("tools[%d]", i)
		d := &defs[i]
		if err := json.Unmarshal(raw, d); err != nil {
			return nil, plan, nil, badRequest(param, "invalid_type", param+": expected {\"type\":\"function\",\"function\":{\"name\":...}}")
		}
		if d.Type != "function" {
			return nil, plan, nil, badRequest(param+".type", "invalid_value", fmt.Sprintf("%s.type %q: only function tools are supported", param, d.Type))
		}
		if d.Function.Name == "" {
			return nil, plan, nil, badRequest(param+".function.name", "missing", "every tool needs function.name")
		}
		if strictNames && !toolNameRE().MatchString(d.Function.Name) {
			return nil, plan, nil, badRequest(param+".function.name", "invalid_value", fmt.Sprintf(
				"%s.function.name %q: a function name must be 1 to 64 characters of a-z, A-Z, 0-9, underscores and dashes", param, d.Function.Name))
		}
		// A schema object or nothing, whatever tool_choice is: the
		// template renders it, and a forced call compiles it.
		if p := bytes.TrimSpace(d.Function.Parameters); len(p) > 0 && string(p) != "null" && p[0] != '{' {
			return nil, plan, nil, badRequest(param+".function.parameters", "invalid_type", fmt.Sprintf(
				"%s.function.parameters must be a JSON schema object, not %s", param, jsonx.Got(jsonx.Kind(p))))
		}
		if slices.ContainsFunc(defs[:i], func(o toolDef) bool { return o.Function.Name == d.Function.Name }) {
			return nil, plan, nil, badRequest(param+".function.name", "invalid_value", fmt.Sprintf("two tools are named %q", d.Function.Name))
		}
	}
	tc := toolChoice{mode: "auto"}
	raw := bytes.TrimSpace(g.ToolChoice)
	switch {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		_ = json.Unmarshal(raw, &tc.mode)
		if !slices.Contains([]string{"none", "auto", "required"}, tc.mode) {
			return nil, plan, nil, badRequest("tool_choice", "invalid_value", fmt.Sprintf("tool_choice %q: expected none, auto, required or {\"type\":\"function\",\"function\":{\"name\":...}}", tc.mode))
		}
	default:
		var named struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(raw, &named) != nil || named.Type != "function" || named.Function.Name == "" {
			return nil, plan, nil, badRequest("tool_choice", "invalid_value", "tool_choice: expected none, auto, required or {\"type\":\"function\",\"function\":{\"name\":...}}")
		}
		tc = toolChoice{mode: "function", name: named.Function.Name}
	}
	if len(defs) == 0 || tc.mode == "none" {
		if tc.mode == "required" || tc.mode == "function" {
			return nil, plan, nil, badRequest("tool_choice", "invalid_value", "tool_choice "+tc.mode+" needs tools")
		}
		return nil, plan, nil, nil
	}
	if !rendered && tc.mode == "auto" {
		return nil, plan, nil, badRequest("tools", codeUnsupportedParam,
			"tools: this model's chat template does not render tools, so the model would never see them "+
				"(a model whose template reads tools, as Qwen's and Llama 3.1's do, can call them; tool_choice required or a named function still forces one call)")
	}
	for _, d := range defs {
		plan.names = append(plan.names, d.Function.Name)
	}
	plan.single = g.ParallelToolCalls != nil && !*g.ParallelToolCalls
	plan.forced, plan.forcedName = tc.mode == "required" || tc.mode == "function", tc.name
	if plan.forced && len(plan.names) == 1 {
		plan.forcedName = plan.names[0] // required with one tool: that one
	}
	if tc.mode == "function" && !slices.Contains(plan.names, tc.name) {
		return nil, plan, nil, badRequest("tool_choice", "invalid_value", fmt.Sprintf("tool_choice names %q, which is not in tools", tc.name))
	}
	if tc.mode == "required" || tc.mode == "function" {
		if forced, aerr = callSchema(defs, tc.name, style); aerr != nil {
			return nil, plan, nil, aerr
		}
	}
	return g.Tools, plan, forced, nil
}

// callSchema is the grammar of one call of a tool (the named one, or any),
// in the model's markup.
func callSchema(defs []toolDef, only, style string) (*grammar.Schema, *apiError) {
	argsKey := "parameters"
	if style == ToolStyleHermes {
		argsKey = "arguments"
	}
	var alts []any
	for i, d := range defs {
		if only != "" && d.Function.Name != only {
			continue
		}
		params := d.Function.Parameters
		if len(bytes.TrimSpace(params)) == 0 || string(params) == "null" {
			// No parameters: OpenAI's "empty parameter list", so {}.
			params = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		// Compiled alone first, so that a refusal names the tool and a
		// place in its parameters, not one in the call schema built
		// around them; and the arguments must be an object, or the call
		// written would not parse as one.
		param := fmt.Sprintf("tools[%d].function.parameters", i)
		own, aerr := compileSchema(params, param)
		if aerr != nil {
			aerr.msg = param + ": " + aerr.msg
			return nil, aerr
		}
		if !own.OnlyObjects() {
			return nil, badRequest(param, codeInvalidSchema, param+" must describe a JSON object (the arguments of a call are one); it allows other values")
		}
		// The parameters' own references ("#/$defs/…", "#") name places
		// in the parameters, not in the call schema around them.
		params, err := grammar.Rebase(params, fmt.Sprintf("#/anyOf/%d/properties/%s", len(alts), argsKey))
		if err != nil {
			return nil, badRequest("tools", codeInvalidSchema, "a tool's function.parameters: "+err.Error())
		}
		alts = append(alts, map[string]any{
			"type": "object", "required": []string{"name", argsKey}, "additionalProperties": false,
			"properties": map[string]any{"name": map[string]any{"const": d.Function.Name}, argsKey: json.RawMessage(params)},
		})
	}
	src, err := json.Marshal(map[string]any{"anyOf": alts})
	if err != nil {
		return nil, badRequest("tools", codeInvalidSchema, "tools: "+err.Error())
	}
	s, aerr := compileSchema(src, "tools")
	if aerr != nil {
		// Each tool's parameters compiled alone: what is left is the
		// choice between the tools (too many of them to force).
		aerr.msg = "tools: the call that tool_choice forces, one of " + strconv.Itoa(len(alts)) + " tools: " + aerr.msg
		return nil, aerr
	}
	if style == ToolStyleHermes {
		s = s.Wrap(toolCallOpen+"\n", "\n"+toolCallClose)
	}
	return s, nil
}

// ParseToolCalls finds the tool calls in a generated text: the text
// outside them is the content. A call must name one of names and carry an
// object of arguments; otherwise the text is all content.
func ParseToolCalls(text string, names []string) (content string, calls []ToolCall) {
	if len(names) == 0 {
		return text, nil
	}
	if i := strings.Index(text, toolCallOpen); i >= 0 {
		content, calls, tail := hermesCalls(text, i, names)
		if tail != "" {
			return text, nil
		}
		return content, calls
	}
	body := strings.TrimPrefix(strings.TrimSpace(text), pythonTag)
	if c, ok := parseCall(body, names); ok {
		return "", []ToolCall{c}
	}
	return text, nil
}

// hermesCalls reads the <tool_call> markup of text, whose first tag is
// at i: the text outside the calls (content), the calls, and tail: from
// the tag of the first call that is not whole (JSON that does not parse
// or names no declared tool) to the end, "" when every call is whole.
// The calls before it are returned.
func hermesCalls(text string, i int, names []string) (content string, calls []ToolCall, tail string) {
	var b strings.Builder
	b.WriteString(text[:i])
	rest := text[i:]
	for strings.HasPrefix(rest, toolCallOpen) {
		c, next, ok := closedCall(rest[len(toolCallOpen):], names)
		if !ok {
			return strings.TrimSpace(b.String()), calls, rest
		}
		calls = append(calls, c)
		if j := strings.Index(next, toolCallOpen); j >= 0 {
			b.WriteString(next[:j])
			rest = next[j:]
		} else {
			b.WriteString(next)
			rest = ""
		}
	}
	return strings.TrimSpace(b.String()), calls, ""
}

// closedCall reads the call at the start of body: one JSON object, then
// a closing tag or the end of the text (next is the text after the tag).
// The object is read as JSON, so a string in the arguments may hold the
// tag itself ({"code": "</tool_call>"}).
func closedCall(body string, names []string) (c ToolCall, next string, ok bool) {
	d := json.NewDecoder(strings.NewReader(body))
	var raw json.RawMessage
	if d.Decode(&raw) != nil {
		return ToolCall{}, "", false
	}
	rest := strings.TrimLeft(body[d.InputOffset():], " \t\r\n")
	switch {
	case strings.HasPrefix(rest, toolCallClose):
		next = rest[len(toolCallClose):]
	case rest != "":
		return ToolCall{}, "", false
	}
	c, ok = parseCall(string(raw), names)
	return c, next, ok
}

// parseCall reads one {"name", "arguments"|"parameters"} object.
func parseCall(body string, names []string) (ToolCall, bool) {
	var c struct {
		Name       string          `json:"name"`
		Arguments  json.RawMessage `json:"arguments"`
		Parameters json.RawMessage `json:"parameters"`
	}
	if json.Unmarshal([]byte(strings.TrimSpace(body)), &c) != nil || !slices.Contains(names, c.Name) {
		return ToolCall{}, false
	}
	args := c.Arguments
	if args == nil {
		args = c.Parameters
	}
	var buf bytes.Buffer
	if json.Compact(&buf, args) != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return ToolCall{}, false
	}
	return ToolCall{ID: "call_" + newID(), Type: "function", Function: ToolCallFunction{Name: c.Name, Arguments: buf.String()}}, true
}

// ToolStream streams the content of an answer that may contain tool
// calls: text that may begin a call is held back until the end, when
// decides.
type ToolStream struct {
	all  strings.Builder
	sent int  // bytes of all streamed as content
	held bool // a call has begun: nothing more is streamed
}

// Push adds generated text and returns the content to stream now.
func (ts *ToolStream) Push(text string) string {
	ts.all.WriteString(text)
	if ts.held {
		return ""
	}
	all := ts.all.String()
	rest := all[ts.sent:]
	if ts.sent == 0 {
		lead := strings.TrimLeft(rest, " \n\t")
		switch {
		case lead == "", strings.HasPrefix(toolCallOpen, lead), strings.HasPrefix(pythonTag, lead):
			return "" // may still become a call
		case strings.HasPrefix(lead, "{"), strings.HasPrefix(lead, toolCallOpen), strings.HasPrefix(lead, pythonTag):
			ts.held = true
			return ""
		}
	}
	if i := strings.Index(rest, toolCallOpen); i >= 0 {
		ts.held = true
		ts.sent += i
		return rest[:i]
	}
	keep := 0
	for k := min(len(toolCallOpen)-1, len(rest)); k > 0; k-- {
		if strings.HasSuffix(rest, toolCallOpen[:k]) {
			keep = k
			break
		}
	}
	ts.sent += len(rest) - keep
	return rest[:len(rest)-keep]
}

// Finish parses the whole answer: the calls, or the content not yet
// streamed.
func (ts *ToolStream) Finish(names []string) (rest string, calls []ToolCall) {
	all := ts.all.String()
	if _, calls = ParseToolCalls(all, names); len(calls) > 0 {
		return "", calls
	}
	return all[ts.sent:], nil
}

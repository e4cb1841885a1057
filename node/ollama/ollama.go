// Package ollama translates Ollama's API to rbee's: model names, the
// generate and chat requests into a worker's /v1/infer body, tool calls,
// and the model details Ollama clients expect. It holds data and pure
// functions only; the node's handlers do the I/O.
package ollama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/rbee-project/rbee/internal/jsonx"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/worker"
)

// Name turns an Ollama model name into the name rbee routes by: the
// default tag ":latest" is dropped ("stories260k:latest" → "stories260k").
// Other colons stay: they are part of rbee references (hf:org/repo:Q4_K_M).
func Name(s string) string { return modelcat.TrimDefaultTag(s) }

// CheckKeepAlive checks a request's keep_alive as Ollama reads it: null, a
// number of seconds, or a duration string ("5m", "1h30m", "0", "-1m";
// a plain number in a string is taken too). rbee's workers stay loaded
// whatever it says (as Ollama's keep_alive -1), but a value Ollama would
// refuse is refused rather than ignored.
func CheckKeepAlive(raw json.RawMessage) error {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return fmt.Errorf("keep_alive must be a duration (\"5m\", \"0\", \"-1m\") or a number of seconds")
	}
	switch t := v.(type) {
	case nil, float64:
		return nil
	case string:
		if _, err := time.ParseDuration(t); err == nil {
			return nil
		}
		if _, err := strconv.ParseFloat(t, 64); err == nil {
			return nil
		}
		return fmt.Errorf("keep_alive %q is not a duration (\"5m\", \"0\", \"-1m\") or a number of seconds", shorten(t))
	}
	return fmt.Errorf("keep_alive must be a duration (\"5m\", \"0\", \"-1m\") or a number of seconds, not %s", shorten(string(bytes.TrimSpace(raw))))
}

// shorten cuts a client's value for an error message.
func shorten(s string) string {
	if len(s) <= 64 {
		return s
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Details is Ollama's "details" object.
type Details struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

// NewDetails is the details object of a GGUF model.
func NewDetails(arch string, params uint64, quant string) Details {
	d := Details{Format: "gguf", Family: arch, ParameterSize: ParameterSize(params), QuantizationLevel: quant}
	if arch != "" {
		d.Families = []string{arch}
	}
	return d
}

// ParameterSize formats a parameter count as Ollama does: "260K", "15M",
// "0.5B", "8.0B".
func ParameterSize(p uint64) string {
	switch {
	case p == 0:
		return ""
	case p >= 100_000_000:
		return strconv.FormatFloat(float64(p)/1e9, 'f', 1, 64) + "B"
	case p >= 1_000_000:
		return strconv.FormatUint((p+500_000)/1_000_000, 10) + "M"
	case p >= 1_000:
		return strconv.FormatUint((p+500)/1_000, 10) + "K"
	}
	return strconv.FormatUint(p, 10)
}

// Options is the subset of Ollama's options rbee maps.
type Options struct {
	Temperature   *float64 `json:"temperature,omitempty"`
	TopK          *int     `json:"top_k,omitempty"`
	TopP          *float64 `json:"top_p,omitempty"`
	MinP          *float64 `json:"min_p,omitempty"`
	Seed          *int64   `json:"seed,omitempty"`
	NumPredict    *int     `json:"num_predict,omitempty"`
	RepeatPenalty *float64 `json:"repeat_penalty,omitempty"`
	Stop          []string `json:"stop,omitempty"`
}

// Request is an /api/generate or /api/chat request.
type Request struct {
	Model  string `json:"model"`
	Prompt string `json:"prompt"`
	System string `json:"system"`
	// Raw sends the prompt as it is; otherwise the model's template
	// applies (InferBody).
	Raw      bool      `json:"raw"`
	Messages []Message `json:"messages"`
	Stream   *bool     `json:"stream"`
	Options  Options   `json:"options"`
	// Format is "json" or a JSON schema: the answer is constrained to it.
	Format json.RawMessage `json:"format"`
	// Tools are OpenAI-style function definitions (chat only).
	Tools []json.RawMessage `json:"tools"`
	// Think false asks the model's template not to think (the template
	// variable enable_thinking false, as Qwen3's reads it) and drops
	// what reasoning the model writes all the same, as Ollama strips it;
	// true, or a level (low, medium, high), asks for reasoning, returned
	// as thinking. The worker decides what the model can do
	// (worker.Think): true needs a model that writes reasoning (think
	// tags, harmony), a level one whose template takes a reasoning
	// effort (gpt-oss's; true is its medium).
	Think *Think `json:"think"`
	// Logprobs asks for each generated token's log-probability, and
	// TopLogprobs (0 to 20) for that many likeliest alternatives, as
	// Ollama's logprobs and top_logprobs: the answer's chunks carry them
	// as "logprobs" (the worker's /v1/infer token events do).
	Logprobs    bool `json:"logprobs"`
	TopLogprobs *int `json:"top_logprobs"`
}

// Think is Ollama's think: a boolean, or a reasoning level.
type Think = worker.Think

// ErrThink: think is neither a boolean nor one of the levels.
var ErrThink = worker.ErrThink

// StripsThinking reports whether the request asks for no thinking
// (think false): reasoning the model writes all the same is dropped.
func (o Request) StripsThinking() bool { return o.Think != nil && !o.Think.On }

// Message is a chat message in Ollama's shape: tool calls carry
// their arguments as an object, and a tool's answer names the tool
// (tool_name) or the call it answers (tool_call_id, which Ollama takes
// too and Open WebUI sends).
type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	// Thinking is the model's reasoning (gpt-oss's analysis channel) in
	// an answer; in a request, an earlier answer's, for the template.
	Thinking string `json:"thinking,omitempty"`
}

// ToolCall is a tool call in Ollama's shape. ID is the call's id when
// a request's earlier answer carries one (Ollama's own answers and Open
// WebUI's history do): the tool message answering it names it in
// tool_call_id, and the template renders both.
type ToolCall struct {
	ID       string `json:"id,omitempty"`
	Function struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

// ToolNames lists the functions of tools (the worker validates them).
func (o Request) ToolNames() []string {
	var names []string
	for _, raw := range o.Tools {
		var t struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(raw, &t) == nil && t.Function.Name != "" {
			names = append(names, t.Function.Name)
		}
	}
	return names
}

// Calls converts the worker's tool calls to Ollama's shape, with their
// ids as Ollama answers them (a client sends them back in the history).
func Calls(calls []worker.ToolCall) []ToolCall {
	out := make([]ToolCall, len(calls))
	for i, c := range calls {
		out[i].ID = c.ID
		out[i].Function.Name = c.Function.Name
		out[i].Function.Arguments = json.RawMessage(c.Function.Arguments)
	}
	return out
}

// InferBody is the worker's /v1/infer body of an /api/chat (chat) or
// /api/generate request.
func (o Request) InferBody(chat bool) ([]byte, error) {
	m := map[string]any{}
	if chat {
		msgs := make([]worker.Message, len(o.Messages))
		for i, om := range o.Messages {
			msgs[i] = worker.Message{Role: om.Role, Content: om.Content, Name: om.ToolName, ToolCallID: om.ToolCallID, ReasoningContent: om.Thinking}
			for j, c := range om.ToolCalls {
				args := string(bytes.TrimSpace(c.Function.Arguments))
				switch {
				case len(args) == 0 || args == "null":
					args = "{}"
				case args[0] != '{':
					// Ollama's arguments are an object; the worker's
					// error would ask for OpenAI's string.
					return nil, fmt.Errorf("messages[%d].tool_calls[%d].function.arguments must be an object, not %s",
						i, j, jsonx.Got(jsonx.Kind(c.Function.Arguments)))
				}
				id := c.ID
				if id == "" {
					id = fmt.Sprintf("call_%d_%d", i, j)
				}
				msgs[i].ToolCalls = append(msgs[i].ToolCalls, worker.ToolCall{ID: id, Type: "function",
					Function: worker.ToolCallFunction{Name: c.Function.Name, Arguments: args}})
			}
		}
		m["messages"] = msgs
		if len(o.Tools) > 0 {
			m["tools"] = o.Tools
		}
	} else if o.System != "" {
		// raw with a system prompt is refused (the node's checks).
		m["messages"] = []worker.Message{{Role: "system", Content: o.System}, {Role: "user", Content: o.Prompt}}
	} else {
		m["prompt"] = o.Prompt
		if !o.Raw {
			// Ollama applies the model's template unless raw: the
			// worker renders the prompt as the user turn when the
			// model has a chat template, else sends it as it is (as
			// Ollama's default template, the prompt alone).
			m["apply_template"] = true
		}
	}
	if o.Think != nil {
		// The worker decides what think means for its model. What an
		// older worker, which does not know the field, understood
		// goes too: enable_thinking false, a level as reasoning_effort.
		m["think"] = *o.Think
		switch {
		case !o.Think.On:
			m["chat_template_kwargs"] = map[string]bool{"enable_thinking": false}
		case o.Think.Level != "":
			m["reasoning_effort"] = o.Think.Level
		}
	}
	if o.Logprobs {
		m["logprobs"] = true
	}
	if o.TopLogprobs != nil {
		m["top_logprobs"] = *o.TopLogprobs
	}
	op := o.Options
	set := func(k string, v any, ok bool) {
		if ok {
			m[k] = v
		}
	}
	set("temperature", op.Temperature, op.Temperature != nil)
	set("top_k", op.TopK, op.TopK != nil)
	set("top_p", op.TopP, op.TopP != nil)
	set("min_p", op.MinP, op.MinP != nil)
	set("seed", op.Seed, op.Seed != nil)
	set("repeat_penalty", op.RepeatPenalty, op.RepeatPenalty != nil)
	set("stop", op.Stop, len(op.Stop) > 0)
	if op.NumPredict != nil && *op.NumPredict > 0 {
		m["max_tokens"] = *op.NumPredict
	}
	switch f := bytes.TrimSpace(o.Format); {
	case len(f) == 0, string(f) == "null", string(f) == `""`:
	case string(f) == `"json"`:
		m["response_format"] = map[string]string{"type": "json_object"}
	case f[0] == '{':
		m["response_format"] = map[string]any{"type": "json_object", "schema": json.RawMessage(f)}
	default:
		return nil, fmt.Errorf("format must be \"json\" or a JSON schema object, not %s", f)
	}
	return json.Marshal(m)
}

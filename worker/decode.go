package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/rbee-project/rbee/internal/jsonx"
	"github.com/rbee-project/rbee/model/engine"
)

// Decoding a request body into genRequest (or embedRequest) and turning
// what goes wrong into an answer that names the field and says, in the
// client's terms, what it must be: no Go type reaches a client.

// fieldError is a decoding error that names the field at fault; custom
// decoders (messages, content parts) return it, decodeError answers it
// as it is.
type fieldError struct {
	param, code, msg string
}

func (e *fieldError) Error() string { return e.msg }

// fieldWants says what each top-level field must be, for a value of a
// wrong type; fields not listed are described by their type (jsonx.TypeWant).
var fieldWants = map[string]string{
	"model":                  "a string",
	"prompt":                 "a string",
	"input":                  "a string or an array of strings",
	"stop":                   "a string or an array of strings",
	"max_tokens":             "a positive integer",
	"max_completion_tokens":  "a positive integer",
	"temperature":            fmt.Sprintf("a number between 0 and %d", maxTemperature),
	"top_p":                  "a number between 0 and 1",
	"min_p":                  "a number between 0 and 1",
	"top_k":                  "an integer >= 0 (0 disables it)",
	"repeat_penalty":         fmt.Sprintf("a number between 0 and %d", maxRepeatPenalty),
	"repeat_last_n":          "an integer >= -1 (-1 = the whole context)",
	"seed":                   "an integer",
	"stream":                 "a boolean",
	"stream_options":         `an object such as {"include_usage":true}`,
	"n":                      "an integer (only 1 is supported)",
	ExtField:                 "an object (rbee's node extension)",
	"response_format":        `an object such as {"type":"json_object"}`,
	"top_logprobs":           fmt.Sprintf("an integer between 0 and %d", engine.MaxTopLogprobs),
	"tools":                  `an array of tool objects ({"type":"function","function":{"name":...}})`,
	"parallel_tool_calls":    "a boolean",
	"chat_template_kwargs":   `an object of template variables, such as {"enable_thinking":false}`,
	"reasoning_effort":       `"low", "medium" or "high"`,
	"reasoning_format":       `"none", "auto" or "deepseek"`,
	"continue_final_message": "a boolean",
	"add_generation_prompt":  "a boolean",
	"encoding_format":        `"float" or "base64"`,
	"user":                   "a string",
}

// decodeError turns an error of json.Unmarshal on a request body into the
// answer.
func decodeError(err error) *apiError {
	var fe *fieldError
	if errors.As(err, &fe) {
		return badRequest(fe.param, fe.code, fe.msg)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return badRequest("", "invalid_type", "the request body must be a JSON object")
		}
		if te.Type == reflect.TypeFor[tokenIDs]() {
			return badRequest(te.Field, "invalid_type", fmt.Sprintf("%s as token ids is not supported by rbee: send the text (a string)", te.Field))
		}
		want, ok := fieldWants[te.Field]
		if !ok {
			want = jsonx.TypeWant(te.Type)
		}
		return badRequest(te.Field, "invalid_type", fmt.Sprintf("%s must be %s, not %s", te.Field, want, jsonx.Got(te.Value)))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return badRequest("", "malformed_json", fmt.Sprintf("malformed JSON body at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: ")))
	}
	return badRequest("", "malformed_json", "malformed JSON body: "+strings.TrimPrefix(err.Error(), "json: "))
}

// tokenIDs marks a prompt or input given as token ids (OpenAI takes an
// array of integers, or of arrays of them), which rbee does not take.
type tokenIDs []int32

// textList is a prompt or an embeddings input: a string or an array of
// strings (null is none). Token ids are refused with a message that says
// so, not as a wrong type.
type textList []string

func (l *textList) UnmarshalJSON(b []byte) error {
	err := (*stringList)(l).UnmarshalJSON(b)
	if err != nil && isTokenIDs(b) {
		return &json.UnmarshalTypeError{Value: "token ids", Type: reflect.TypeFor[tokenIDs]()}
	}
	return err
}

// isTokenIDs reports whether b is what OpenAI takes as token ids: an array
// of integers, or an array of arrays of them. Other arrays (of arrays of
// strings, of numbers and text) are not called so.
func isTokenIDs(b []byte) bool {
	var ids []int64
	if json.Unmarshal(b, &ids) == nil {
		return true
	}
	var lists [][]int64
	return json.Unmarshal(b, &lists) == nil
}

// chatRoles are the message roles OpenAI defines ("function" is the
// legacy answer to a function_call); the template gets them as they are.
var chatRoles = []string{"system", "developer", "user", "assistant", "tool", "function"}

// messageFields are the fields of a message the worker reads.
var messageFields = []string{"role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content", "thinking"}

// messageNeutral are fields OpenAI defines on a message that rbee does not
// use, with the values that carry nothing (compacted JSON): a client that
// sends an earlier answer back as a message may include them so.
var messageNeutral = map[string][]string{
	"refusal":       {"null"},
	"audio":         {"null"},
	"function_call": {"null"},
	"annotations":   {"null", "[]"},
}

// checkFields refuses a field of the object p (what, in words: "a
// message") outside known, or one of neutral with a value other than
// those listed (compacted JSON): none is silently ignored. Fields are
// checked in name order, so the answer is deterministic.
func checkFields(p, what string, fields map[string]json.RawMessage, known []string, neutral map[string][]string) error {
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if slices.Contains(known, k) {
			continue
		}
		values, ok := neutral[k]
		if !ok {
			return &fieldError{p + "." + k, codeUnknownParam, fmt.Sprintf("unknown field %q in %s: %s takes %s", k, p, what, strings.Join(known, ", "))}
		}
		var buf bytes.Buffer
		if json.Compact(&buf, fields[k]) != nil || !slices.Contains(values, buf.String()) {
			return &fieldError{p + "." + k, codeUnsupportedParam, fmt.Sprintf("%s.%s is not supported by rbee (only %s is accepted)", p, k, strings.Join(values, " or "))}
		}
	}
	return nil
}

// streamOptions is OpenAI's stream_options. With stream false it is taken
// and changes nothing, as llama.cpp's server takes it (OpenAI and vLLM
// refuse it): include_usage is all it may ask, and a whole answer always
// carries usage, so clients that send it with every request keep
// working. Another option is refused, never silently ignored.
type streamOptions struct {
	IncludeUsage bool
}

// streamOptionFields are the options rbee implements; streamOptionNeutral
// those it does not, with the values that ask for nothing.
var (
	streamOptionFields  = []string{"include_usage"}
	streamOptionNeutral = map[string][]string{
		"include_obfuscation":    {"false", "null"}, // OpenAI's random padding of streamed chunks: rbee adds none
		"continuous_usage_stats": {"false", "null"}, // vLLM's usage in every chunk
	}
)

func (o *streamOptions) UnmarshalJSON(b []byte) error {
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) != nil {
		return &fieldError{"stream_options", "invalid_type", fmt.Sprintf("stream_options must be %s, not %s", fieldWants["stream_options"], jsonx.Got(jsonx.Kind(b)))}
	}
	if err := checkFields("stream_options", "stream_options", fields, streamOptionFields, streamOptionNeutral); err != nil {
		return err
	}
	if v, ok := fields["include_usage"]; ok && string(bytes.TrimSpace(v)) != "null" {
		if json.Unmarshal(v, &o.IncludeUsage) != nil {
			return &fieldError{"stream_options.include_usage", "invalid_type", "stream_options.include_usage must be a boolean, not " + jsonx.Got(jsonx.Kind(v))}
		}
	}
	return nil
}

// chatMessages decodes a request's messages, each field checked, so that
// an error names the message (messages[i].field).
type chatMessages []chatMessage

func (ms *chatMessages) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*ms = nil
		return nil
	}
	var raws []json.RawMessage
	if json.Unmarshal(b, &raws) != nil {
		return &fieldError{"messages", "invalid_type", `messages must be an array of message objects ({"role":"user","content":"..."})`}
	}
	out := make(chatMessages, len(raws))
	for i, raw := range raws {
		if err := out[i].decode(raw, fmt.Sprintf("messages[%d]", i)); err != nil {
			return err
		}
	}
	*ms = out
	return nil
}

// decode reads one message; p is its name in errors (messages[i]).
func (m *chatMessage) decode(raw json.RawMessage, p string) error {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil || fields == nil {
		return &fieldError{p, "invalid_type", p + ` must be a message object ({"role":"user","content":"..."})`}
	}
	if err := checkFields(p, "a message", fields, messageFields, messageNeutral); err != nil {
		return err
	}

	str := func(k string, dst *string) error {
		if v, ok := fields[k]; ok && json.Unmarshal(v, dst) != nil {
			return &fieldError{p + "." + k, "invalid_type", fmt.Sprintf("%s.%s must be a string", p, k)}
		}
		return nil
	}
	if err := str("role", &m.Role); err != nil {
		return err
	}
	switch {
	case m.Role == "":
		return &fieldError{p + ".role", "missing", fmt.Sprintf("every message needs a role (%s has none)", p)}
	case !slices.Contains(chatRoles, m.Role):
		return &fieldError{p + ".role", "invalid_value", fmt.Sprintf("%s.role %q is not a role: expected %s", p, m.Role, strings.Join(chatRoles, ", "))}
	}
	if err := str("name", &m.Name); err != nil {
		return err
	}
	if err := str("tool_call_id", &m.ToolCallID); err != nil {
		return err
	}
	if err := str("thinking", &m.Thinking); err != nil {
		return err
	}
	if err := str("reasoning_content", &m.Thinking); err != nil { // the OpenAI name wins
		return err
	}
	if v, ok := fields["tool_calls"]; ok && json.Unmarshal(v, &m.ToolCalls) != nil {
		return &fieldError{p + ".tool_calls", "invalid_type",
			p + `.tool_calls must be an array of tool calls ({"id":...,"type":"function","function":{"name":...,"arguments":"<a JSON object as a string>"}})`}
	}
	content, ok := fields["content"]
	if !ok || bytes.Equal(bytes.TrimSpace(content), []byte("null")) {
		// OpenAI: only an assistant message that calls tools may omit its
		// content.
		if m.Role == "assistant" && len(m.ToolCalls) > 0 {
			return nil
		}
		return &fieldError{p + ".content", "missing", fmt.Sprintf("%s.content is required (a string or an array of text parts); only an assistant message with tool_calls may omit it", p)}
	}
	var err error
	m.Content, err = decodeContent(content, p+".content")
	return err
}

// decodeContent reads a message's content (p names it): a string or an
// array of typed parts.
func decodeContent(b []byte, p string) (messageContent, error) {
	b = bytes.TrimSpace(b)
	var c messageContent
	if len(b) > 0 && b[0] == '"' {
		err := json.Unmarshal(b, &c.text)
		return c, err
	}
	var raws []json.RawMessage
	if len(b) == 0 || b[0] != '[' || json.Unmarshal(b, &raws) != nil {
		return c, &fieldError{p, "invalid_type", p + ` must be a string or an array of content parts ([{"type":"text","text":"..."}])`}
	}
	var texts []string
	for j, raw := range raws {
		pp := fmt.Sprintf("%s[%d]", p, j)
		var part map[string]json.RawMessage
		if json.Unmarshal(raw, &part) != nil || part == nil {
			return c, &fieldError{pp, "invalid_type", pp + ` must be a content part object ({"type":"text","text":"..."})`}
		}
		var typ string
		if v, ok := part["type"]; ok && json.Unmarshal(v, &typ) != nil {
			return c, &fieldError{pp + ".type", "invalid_type", pp + ".type must be a string"}
		}
		if typ != "text" {
			if c.other == "" {
				c.other = typ
				if typ == "" {
					c.other = "untyped"
				}
			}
			continue
		}
		v, ok := part["text"]
		if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			return c, &fieldError{pp + ".text", "missing", pp + " is a text part without text"}
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return c, &fieldError{pp + ".text", "invalid_type", pp + ".text must be a string"}
		}
		texts = append(texts, s)
	}
	c.text = strings.Join(texts, "\n")
	return c, nil
}

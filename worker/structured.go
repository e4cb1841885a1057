package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/grammar"
)

// Structured output and log-probabilities: response_format, logprobs and
// top_logprobs of the OpenAI endpoints (and response_format of the native
// one, which Ollama's format maps to).

// Error codes of a refused schema.
const (
	codeUnsupportedSchema = "unsupported_schema"
	codeInvalidSchema     = "invalid_schema"
)

// responseFormat is OpenAI's response_format. llama.cpp's
// {"type":"json_object","schema":{...}} is accepted too.
type responseFormat struct {
	Type       string          `json:"type"`
	Schema     json.RawMessage `json:"schema"`
	JSONSchema *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	} `json:"json_schema"`
}

// schema compiles the response format: nil for text.
func (f *responseFormat) schema() (*grammar.Schema, *apiError) {
	if f == nil {
		return nil, nil
	}
	var src json.RawMessage
	switch f.Type {
	case "text", "":
		return nil, nil
	case "json_object":
		if len(f.Schema) == 0 || string(f.Schema) == "null" {
			return grammar.AnyObject(), nil
		}
		src = f.Schema
	case "json_schema":
		if f.JSONSchema == nil || len(f.JSONSchema.Schema) == 0 || string(f.JSONSchema.Schema) == "null" {
			return nil, badRequest("response_format.json_schema.schema", "missing", "response_format json_schema needs json_schema.schema")
		}
		src = f.JSONSchema.Schema
	default:
		return nil, badRequest("response_format.type", "invalid_value", fmt.Sprintf("response_format type %q: expected text, json_object or json_schema", f.Type))
	}
	return compileSchema(src, "response_format")
}

// compileSchema compiles a JSON schema from a request, answering 400 with
// the keyword at fault.
func compileSchema(src []byte, param string) (*grammar.Schema, *apiError) {
	s, err := grammar.CompileSchema(src)
	switch {
	case errors.Is(err, grammar.ErrUnsupported):
		return nil, badRequest(param, codeUnsupportedSchema, err.Error())
	case err != nil:
		return nil, badRequest(param, codeInvalidSchema, err.Error())
	}
	return s, nil
}

// logprobRequest reads logprobs and top_logprobs: on chat (and the
// native endpoint) logprobs is a boolean and top_logprobs the number of
// alternatives; on /v1/completions logprobs is that number (legacy).
func (g *genRequest) logprobRequest(mode endpoint) (on bool, top int, aerr *apiError) {
	raw := bytes.TrimSpace(g.Logprobs)
	if len(raw) > 0 && string(raw) != "null" {
		if mode == endpointCompletion {
			n, err := strconv.Atoi(string(raw))
			if err != nil || n < 0 || n > engine.MaxTopLogprobs {
				return false, 0, badRequest("logprobs", "invalid_value", fmt.Sprintf("logprobs must be an integer in [0, %d] (the alternatives per token)", engine.MaxTopLogprobs))
			}
			return true, n, nil
		}
		if err := json.Unmarshal(raw, &on); err != nil {
			return false, 0, badRequest("logprobs", "invalid_type", "logprobs must be a boolean")
		}
	}
	if g.TopLogprobs != nil {
		top = *g.TopLogprobs
		if mode == endpointCompletion {
			return false, 0, badRequest("top_logprobs", codeUnknownParam, "top_logprobs is a chat parameter; /v1/completions takes logprobs as the number of alternatives")
		}
		if top < 0 || top > engine.MaxTopLogprobs {
			return false, 0, badRequest("top_logprobs", "invalid_value", fmt.Sprintf("top_logprobs must be in [0, %d]", engine.MaxTopLogprobs))
		}
		if top > 0 && !on {
			return false, 0, badRequest("top_logprobs", "invalid_value", "top_logprobs needs logprobs: true")
		}
	}
	return on, top, nil
}

// ChoiceLogprobs is choices[].logprobs of a chat completion (and of a
// streamed chunk: the tokens of that chunk).
type ChoiceLogprobs struct {
	Content []LogprobContent `json:"content"`
	Refusal []LogprobContent `json:"refusal"`
}

// LogprobContent is one generated token with its alternatives.
type LogprobContent struct {
	LogprobAlt
	TopLogprobs []LogprobAlt `json:"top_logprobs"`
}

// LogprobAlt is one token: its text, log-probability and UTF-8 bytes (a
// token may hold part of a character).
type LogprobAlt struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

func logprobAlt(piece string, lp float32) LogprobAlt {
	b := make([]int, len(piece))
	for i := range len(piece) {
		b[i] = int(piece[i])
	}
	return LogprobAlt{Token: piece, Logprob: lp, Bytes: b}
}

// logprobContent is t's entry, or false for a text-only chunk.
func logprobContent(t Token) (LogprobContent, bool) {
	if t.ID < 0 {
		return LogprobContent{}, false
	}
	c := LogprobContent{LogprobAlt: logprobAlt(t.Piece, t.Logprob), TopLogprobs: []LogprobAlt{}}
	for _, alt := range t.TopLogprobs {
		c.TopLogprobs = append(c.TopLogprobs, logprobAlt(alt.Piece, alt.Logprob))
	}
	return c, true
}

// TextLogprobs is choices[].logprobs of /v1/completions (the legacy shape).
type TextLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// keptTokens is how many of the tokens starting at the byte offsets starts
// begin within a text of n bytes: those past it were cut with a stop
// string.
func keptTokens(starts []int, n int) int {
	k := 0
	for k < len(starts) && starts[k] < n {
		k++
	}
	return k
}

// keep keeps the first n tokens.
func (l *TextLogprobs) keep(n int) {
	l.Tokens, l.TokenLogprobs, l.TopLogprobs, l.TextOffset = l.Tokens[:n], l.TokenLogprobs[:n], l.TopLogprobs[:n], l.TextOffset[:n]
}

// add appends t, which starts at byte offset off of the text.
func (l *TextLogprobs) add(t Token, off int) {
	if t.ID < 0 {
		return
	}
	l.Tokens = append(l.Tokens, t.Piece)
	l.TokenLogprobs = append(l.TokenLogprobs, t.Logprob)
	top := make(map[string]float32, len(t.TopLogprobs))
	for _, alt := range t.TopLogprobs {
		if _, dup := top[alt.Piece]; !dup {
			top[alt.Piece] = alt.Logprob
		}
	}
	l.TopLogprobs = append(l.TopLogprobs, top)
	l.TextOffset = append(l.TextOffset, off)
}

package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"

	"github.com/rbee-project/rbee/internal/jsonx"
	"github.com/rbee-project/rbee/internal/reqbody"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/grammar"
)

// Sampling defaults follow llama.cpp's server so that requests moved between
// the two behave alike.
const (
	defaultTemperature   = 0.8
	defaultTopK          = 40
	defaultTopP          = 0.95
	defaultMinP          = 0.05
	defaultRepeatPenalty = 1.0 // 1 = off
	defaultRepeatLastN   = 64

	// maxStops bounds the stop list: each stop string is checked after every
	// token, so the list must stay short.
	maxStops = 16
	// maxStopLen bounds one stop string.
	maxStopLen = 1024
	// maxTemperature is OpenAI's documented upper bound, kept on the
	// OpenAI endpoints; the native /v1/infer (Ollama's API, llama.cpp's)
	// takes any temperature >= 0.
	maxTemperature = 2
	// maxRepeatPenalty is far beyond any useful setting.
	maxRepeatPenalty = 10
)

// stringList decodes a JSON string or array of strings (OpenAI's "stop" and
// "prompt" accept both).
type stringList = jsonx.StringList

// tooLongToTokenize refuses a text that cannot fit the context whatever its
// tokens: every token stands for at most MaxTokenBytes bytes, so n bytes
// are at least n/MaxTokenBytes tokens. Tokenizing a huge text first would
// cost memory in proportion to it (hundreds of MB for a 1 MB prompt).
func tooLongToTokenize(info ModelInfo, n int, param string) *apiError {
	if info.MaxTokenBytes <= 0 || info.ContextLength <= 0 {
		return nil
	}
	if least := n / info.MaxTokenBytes; least >= info.ContextLength {
		return &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "context_length_exceeded", param: param,
			msg: fmt.Sprintf("prompt is %d bytes, at least %d tokens; the context holds %d", n, least, info.ContextLength)}
	}
	return nil
}

// chatMessage is a chat message as clients send it, read by
// chatMessage.decode (decode.go): the content is a string, an array of
// typed parts (OpenAI's content parts), or null in an assistant message
// with tool calls.
type chatMessage struct {
	Role       string
	Content    messageContent
	ToolCalls  []ToolCall
	ToolCallID string
	Name       string
	// Thinking is an earlier answer's reasoning, sent back as
	// reasoning_content (llama-server's and vLLM's name) or thinking
	// (Ollama's); the template gets it (engine.Message.Thinking).
	Thinking string
}

// messageContent is a message's text: a string, or the text parts of an
// array joined by newlines (decodeContent). other names the first part
// type that is not text ("image_url", "input_audio", ...), which a text
// model refuses.
type messageContent struct {
	text  string
	other string
}

// genRequest is the union of the fields the three inference endpoints take.
// The OpenAI endpoints refuse fields outside their set (checkOpenAIParams);
// numeric options are pointers so that absent and zero differ.
type genRequest struct {
	Prompt              textList       `json:"prompt"`
	Messages            chatMessages   `json:"messages"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	Temperature         *float32       `json:"temperature"`
	TopK                *int           `json:"top_k"`
	TopP                *float32       `json:"top_p"`
	MinP                *float32       `json:"min_p"`
	RepeatPenalty       *float32       `json:"repeat_penalty"`
	RepeatLastN         *int           `json:"repeat_last_n"`
	Seed                *int64         `json:"seed"`
	Stop                stringList     `json:"stop"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	N                   *int           `json:"n"`
	// Rbee is the node's extension (see Ext).
	Rbee *Ext `json:"rbee"`

	// Structured output and log-probabilities (structured.go).
	ResponseFormat *responseFormat `json:"response_format"`
	Logprobs       json.RawMessage `json:"logprobs"`
	TopLogprobs    *int            `json:"top_logprobs"`

	// Tool calling (tools.go); tools are kept raw for the template.
	Tools             []json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage   `json:"tool_choice"`
	ParallelToolCalls *bool             `json:"parallel_tool_calls"`
	// ChatTemplateKwargs are further variables for the chat template
	// (llama.cpp's and vLLM's chat_template_kwargs), e.g.
	// {"enable_thinking": false} for Qwen3.
	ChatTemplateKwargs map[string]json.RawMessage `json:"chat_template_kwargs"`
	// ReasoningEffort (OpenAI's reasoning_effort) goes to a template
	// that reads it, gpt-oss's (templateVars).
	ReasoningEffort *string `json:"reasoning_effort"`
	// ContinueFinalMessage and AddGenerationPrompt are vLLM's: whether
	// the answer continues the chat's final (assistant) message or opens
	// a new turn (continuation; by default a final assistant message
	// without tool calls is continued, as llama-server and Ollama do).
	ContinueFinalMessage *bool `json:"continue_final_message"`
	AddGenerationPrompt  *bool `json:"add_generation_prompt"`
	// ReasoningFormat is llama-server's reasoning_format: "none" answers
	// the model's text as it is (reasoning and its markup as content),
	// "auto" and "deepseek" (the default) return the reasoning apart.
	ReasoningFormat *string `json:"reasoning_format"`
	// Think (the native /v1/infer only; the OpenAI endpoints refuse it
	// as unknown) is Ollama's think, which the model decides
	// (applyThink).
	Think *Think `json:"think"`
	// tools is prepare's decision, for the handlers.
	tools toolPlan
	// chat: prepare rendered messages with the chat template (the
	// answer is the assistant's, read for reasoning).
	chat bool

	// ApplyTemplate (the native /v1/infer only; the OpenAI endpoints
	// refuse it as unknown) makes the prompt the user turn of a chat,
	// rendered with the model's chat template when the model has one
	// (ModelInfo.ChatTemplate); without one the prompt goes as it is.
	// It is Ollama's /api/generate without raw: the model's template
	// applies, and Ollama's default template is the prompt alone.
	ApplyTemplate bool `json:"apply_template"`
}

// decodeBody reads a JSON body of at most MaxBytesBytes into v; for the
// OpenAI endpoints it checks the parameters first.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, mode endpoint) *apiError {
	body, err := io.ReadAll(reqbody.Reader(w, r, MaxBodyBytes))
	if err != nil {
		if reqbody.TooLarge(err) {
			return &apiError{status: http.StatusRequestEntityTooLarge, typ: errTypeInvalid, code: "request_too_large",
				msg: fmt.Sprintf("request body exceeds %d bytes", MaxBodyBytes)}
		}
		return &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "bad_body", msg: "reading body: " + err.Error()}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("", "missing", "request body is empty; expected a JSON object")
	}
	if b := bytes.TrimSpace(body); b[0] != '{' {
		return badRequest("", "invalid_type", "the request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return decodeError(err)
	}
	if mode != endpointInfer {
		return checkOpenAIParams(body, mode)
	}
	return nil
}

// sampling validates and fills the sampling parameters of a request to
// mode.
func (g *genRequest) sampling(mode endpoint) (SampleParams, *apiError) {
	sp := SampleParams{
		Temperature:   defaultTemperature,
		TopK:          defaultTopK,
		TopP:          defaultTopP,
		MinP:          defaultMinP,
		RepeatPenalty: defaultRepeatPenalty,
		RepeatLastN:   defaultRepeatLastN,
		Seed:          rand.Uint64(),
	}
	if v := g.Temperature; v != nil {
		switch {
		case mode == endpointInfer && !(*v >= 0):
			return sp, badRequest("temperature", "invalid_value", "temperature must be 0 (greedy) or more")
		case mode != endpointInfer && !(*v >= 0 && *v <= maxTemperature):
			return sp, badRequest("temperature", "invalid_value", fmt.Sprintf("temperature must be between 0 and %d", maxTemperature))
		}
		sp.Temperature = *v
	}
	if v := g.TopK; v != nil {
		if *v < 0 {
			return sp, badRequest("top_k", "invalid_value", "top_k must be >= 0 (0 disables it)")
		}
		sp.TopK = *v
	}
	if v := g.TopP; v != nil {
		if !(*v >= 0 && *v <= 1) {
			return sp, badRequest("top_p", "invalid_value", "top_p must be in [0, 1] (1 disables it)")
		}
		sp.TopP = *v
		if *v == 0 {
			// The smallest set whose mass reaches 0 is the most likely
			// token alone, as OpenAI and llama.cpp (so Ollama) read it;
			// the engine's TopP 0 means "off", so top_k 1 says it.
			sp.TopK = 1
		}
	}
	if v := g.MinP; v != nil {
		if !(*v >= 0 && *v <= 1) {
			return sp, badRequest("min_p", "invalid_value", "min_p must be in [0, 1]")
		}
		sp.MinP = *v
	}
	if v := g.RepeatPenalty; v != nil {
		if !(*v >= 0 && *v <= maxRepeatPenalty) {
			return sp, badRequest("repeat_penalty", "invalid_value", fmt.Sprintf("repeat_penalty must be in [0, %d] (0 and 1 disable it)", maxRepeatPenalty))
		}
		sp.RepeatPenalty = *v
	}
	if v := g.RepeatLastN; v != nil {
		if *v < -1 {
			return sp, badRequest("repeat_last_n", "invalid_value", "repeat_last_n must be >= -1 (-1 = the whole context)")
		}
		sp.RepeatLastN = *v
	}
	if v := g.Seed; v != nil && *v >= 0 {
		sp.Seed = uint64(*v)
	}
	return sp, nil
}

// prepare validates g against the model and builds the engine request.
// chat selects the chat form (messages required, template applied); raw is
// the native endpoint, where either a prompt or messages may be given.
// mediaParts are the content part types of OpenAI's chat messages besides
// text: a text-only model refuses them as unsupported, any other type as
// unknown.
var mediaParts = map[string]bool{"image_url": true, "input_audio": true, "file": true}

func prepare(ctx context.Context, m Model, g *genRequest, mode endpoint) (GenerateRequest, *apiError) {
	var gr GenerateRequest
	if g.N != nil && *g.N != 1 {
		return gr, badRequest("n", "invalid_value", "only n = 1 is supported")
	}
	// The cheap checks first: a bad one costs no template rendering.
	// max_completion_tokens is OpenAI's newer name of max_tokens, and
	// OpenAI defines no precedence between the two: different values in
	// one request are refused, not one silently dropped.
	if a, b := g.MaxTokens, g.MaxCompletionTokens; a != nil && b != nil && *a != *b {
		return gr, badRequest("max_completion_tokens", "invalid_value", fmt.Sprintf(
			"max_tokens (%d) and max_completion_tokens (%d) disagree: send one of them, or the same value in both", *a, *b))
	}
	if aerr := g.Rbee.check(); aerr != nil {
		return gr, aerr
	}
	if aerr := g.checkReasoningFormat(); aerr != nil {
		return gr, aerr
	}
	logprobs, topLogprobs, aerr := g.logprobRequest(mode)
	if aerr != nil {
		return gr, aerr
	}
	schema, aerr := g.ResponseFormat.schema()
	if aerr != nil {
		return gr, aerr
	}
	var ids []int32
	var promptParam string
	var forced *grammar.Schema // a forced tool call
	templated := false         // the prompt goes as a user message (ApplyTemplate)
	if g.ApplyTemplate {
		if mode != endpointInfer {
			return gr, badRequest("apply_template", codeUnknownParam, "apply_template is a field of rbee's native /v1/infer only")
		}
		if len(g.Messages) > 0 {
			return gr, badRequest("apply_template", "invalid_value", "apply_template takes a prompt, not messages (messages always go through the chat template)")
		}
		if len(g.Prompt) == 1 && g.Prompt[0] != "" && m.Info().ChatTemplate {
			g.Messages = chatMessages{{Role: "user", Content: messageContent{text: g.Prompt[0]}}}
			templated = true
		}
	}
	switch {
	case mode == endpointChat || (mode == endpointInfer && len(g.Messages) > 0):
		promptParam, g.chat = "messages", true
		if len(g.Messages) == 0 {
			return gr, badRequest("messages", "missing", "messages must be a non-empty array")
		}
		textBytes := 0
		for _, msg := range g.Messages {
			textBytes += len(msg.Content.text)
		}
		if err := tooLongToTokenize(m.Info(), textBytes, "messages"); err != nil {
			return gr, err
		}
		msgs := make([]Message, len(g.Messages))
		for i, msg := range g.Messages {
			if o := msg.Content.other; o != "" {
				if !mediaParts[o] {
					return gr, badRequest(fmt.Sprintf("messages[%d].content", i), "invalid_value",
						fmt.Sprintf("unknown content part type %q (want text, or one of image_url, input_audio, file, which need a model that reads them)", o))
				}
				return gr, badRequest(fmt.Sprintf("messages[%d].content", i), "unsupported_content",
					fmt.Sprintf("%s parts need a model that reads them; this model reads text only", o))
			}
			role := msg.Role
			if role == "developer" {
				// OpenAI's newer name of the system role: chat
				// templates know system alone (one that checks
				// roles raises on developer, and the fallback format
				// took over).
				role = "system"
			}
			msgs[i] = Message{Role: role, Content: msg.Content.text, ToolCalls: msg.ToolCalls, ToolCallID: msg.ToolCallID, Name: msg.Name, ReasoningContent: msg.Thinking}
			for j, c := range msg.ToolCalls {
				// An object: chat templates read the arguments as one
				// (a template that calls .items() on them fails).
				if args := bytes.TrimSpace([]byte(c.Function.Arguments)); c.Function.Name == "" || !json.Valid(args) || args[0] != '{' {
					return gr, badRequest(fmt.Sprintf("messages[%d].tool_calls[%d]", i, j), "invalid_value", "a tool call needs function.name and function.arguments, a JSON object as a string")
				}
			}
		}
		var tools []json.RawMessage
		if tools, g.tools, forced, aerr = g.readTools(m.Info().ToolStyle, mode == endpointChat, m.Info().Tools); aerr != nil {
			return gr, aerr
		}
		var err error
		for _, k := range slices.Sorted(maps.Keys(g.ChatTemplateKwargs)) {
			if reserved := engine.ReservedChatVars(); slices.Contains(reserved, k) {
				return gr, badRequest("chat_template_kwargs."+k, "invalid_value",
					fmt.Sprintf("the template variable %q comes from the request itself (%s are set by rbee)", k, strings.Join(reserved, ", ")))
			}
		}
		if aerr = g.applyThink(m.Info()); aerr != nil {
			return gr, aerr
		}
		var vars map[string]json.RawMessage
		if vars, aerr = g.templateVars(m.Info()); aerr != nil {
			return gr, aerr
		}
		open, aerr := g.continuation()
		if aerr != nil {
			return gr, aerr
		}
		if aerr := refuseShapedContinuation(open, schema != nil, forced != nil); aerr != nil {
			return gr, aerr
		}
		if ids, err = m.EncodeChat(ctx, msgs, tools, vars, open); err != nil {
			if errors.Is(err, ErrContextLength) {
				msg := strings.TrimPrefix(err.Error(), ErrContextLength.Error()+": ")
				return gr, &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "context_length_exceeded", param: "messages", msg: msg}
			}
			if errors.Is(err, ErrTemplate) {
				// The model's template, not the request, is at fault;
				// still a 400: retrying elsewhere runs the same template.
				msg := strings.TrimPrefix(err.Error(), ErrTemplate.Error()+": ")
				return gr, &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: codeTemplate, param: "messages", msg: msg}
			}
			return gr, badRequest("messages", "invalid_value", "applying the chat template: "+err.Error())
		}
	default:
		promptParam = "prompt"
		var text string
		switch len(g.Prompt) {
		case 0:
			if mode == endpointInfer {
				return gr, badRequest("prompt", "missing", "prompt (or messages) is required")
			}
			return gr, badRequest("prompt", "missing", "prompt is required")
		case 1:
			text = g.Prompt[0]
		default:
			return gr, badRequest("prompt", "invalid_value", "only one prompt per request is supported")
		}
		if text == "" {
			return gr, badRequest("prompt", "missing", "prompt is empty")
		}
		if g.Think != nil && g.Think.On {
			return gr, badRequest("think", "invalid_value", "think applies to a chat (messages, or a prompt the model's chat template renders), not a raw prompt")
		}
		if g.ReasoningEffort != nil {
			return gr, badRequest("reasoning_effort", "invalid_value", "reasoning_effort (Ollama's think) applies to a chat (messages, or a prompt the model's chat template renders), not a raw prompt")
		}
		if err := tooLongToTokenize(m.Info(), len(text), "prompt"); err != nil {
			return gr, err
		}
		ids = m.Encode(text)
	}

	if templated {
		promptParam = "prompt"
	}
	ctxLen := m.Info().ContextLength
	if len(ids) == 0 {
		return gr, badRequest(promptParam, "invalid_value", "prompt tokenizes to nothing")
	}
	if len(ids) >= ctxLen {
		return gr, &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "context_length_exceeded", param: promptParam,
			msg: fmt.Sprintf("prompt is %d tokens; the context holds %d, leaving no room to generate", len(ids), ctxLen)}
	}
	room := ctxLen - len(ids)

	maxTokens, maxParam := g.MaxTokens, "max_tokens"
	if maxTokens == nil && g.MaxCompletionTokens != nil {
		maxTokens, maxParam = g.MaxCompletionTokens, "max_completion_tokens"
	}
	// Without a limit (DefaultMaxTokens), the rest of the context: until
	// the model ends the answer or the context is full.
	gr.MaxTokens = room
	if maxTokens != nil {
		if *maxTokens < 1 || *maxTokens > ctxLen {
			return gr, badRequest(maxParam, "invalid_value", fmt.Sprintf("%s must be between 1 and the context length %d", maxParam, ctxLen))
		}
		// Longer than the room left: generate to the end of the context
		// and finish with "length", as llama.cpp does.
		gr.MaxTokens = min(*maxTokens, room)
	}

	if len(g.Stop) > maxStops {
		return gr, badRequest("stop", "invalid_value", fmt.Sprintf("at most %d stop strings", maxStops))
	}
	for _, st := range g.Stop {
		if st == "" || len(st) > maxStopLen {
			return gr, badRequest("stop", "invalid_value", fmt.Sprintf("stop strings must be 1..%d bytes", maxStopLen))
		}
	}
	sp, aerr := g.sampling(mode)
	if aerr != nil {
		return gr, aerr
	}
	// Resumed tokens count towards max_tokens, and the room above is the
	// original prompt's: the limits of the interrupted attempt hold.
	if ids, gr.Resume, aerr = g.Rbee.resume(ids, ctxLen, promptParam); aerr != nil {
		return gr, aerr
	}
	gr.Prompt = ids
	gr.Sample = sp
	gr.Stop = []string(g.Stop)
	gr.Logprobs, gr.TopLogprobs, gr.Schema = logprobs, topLogprobs, schema
	if forced != nil {
		if gr.Schema != nil {
			return gr, badRequest("tool_choice", "invalid_value", "a forced tool_choice and a JSON response_format cannot both shape the answer")
		}
		gr.Schema = forced
	}
	if gr.Schema != nil {
		// The grammar ends a constrained answer when its document (a
		// forced call, a JSON response) is complete; a stop string met
		// inside it would cut it into text that does not parse, a
		// forced call into content that is no call.
		gr.Stop = nil
	}
	return gr, nil
}

type endpoint int

const (
	endpointInfer endpoint = iota
	endpointChat
	endpointCompletion
	endpointEmbed
)

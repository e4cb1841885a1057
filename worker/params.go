package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
)

// The OpenAI endpoints' parameters. Every top-level field of a request is in
// one of three sets, or the request is refused with 400 naming the field:
// none is silently ignored.
//   - supported: the worker implements it (genRequest);
//   - ignored: OpenAI itself gives it no effect on the output (user,
//     metadata, store, ...), so accepting it changes no answer;
//   - unsupported: a feature the engine lacks (tools, logprobs, penalties,
//     JSON mode...); accepted only with its neutral value (null, or the value
//     that asks for nothing: tools [], frequency_penalty 0, response_format
//     {"type":"text"}), which clients such as LangChain send by default.
//
// The native /v1/infer is rbee's own and is not checked here: the node
// builds its bodies.

// Codes of a refused parameter.
const (
	codeUnsupportedParam = "unsupported_parameter"
	codeUnknownParam     = "unknown_parameter"
)

// supportedParams are implemented by both OpenAI endpoints; the prompt
// field of each is added per endpoint.
var supportedParams = []string{"model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
	"repeat_penalty", "repeat_last_n", "seed", "stop", "stream", "stream_options", "n",
	"response_format", "logprobs", ExtField}

// chatParams are implemented by /v1/chat/completions alone.
var chatParams = []string{"top_logprobs", "tools", "tool_choice", "parallel_tool_calls", "chat_template_kwargs", "reasoning_effort", "reasoning_format",
	"continue_final_message", "add_generation_prompt"}

// embedParams are implemented by /v1/embeddings besides its input;
// truncate is rbee's (Ollama's /api/embed truncate), not OpenAI's.
var embedParams = []string{"model", "encoding_format", "truncate"}

// ignoredParams have no effect on an answer by OpenAI's own semantics.
var ignoredParams = []string{"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}

// unsupportedParams maps an unimplemented parameter to the JSON values
// that ask for nothing (compared after compacting).
var unsupportedParams = map[string][]string{
	"frequency_penalty":  {"0", "0.0"},
	"presence_penalty":   {"0", "0.0"},
	"logit_bias":         {"{}"},
	"functions":          {"[]"},
	"function_call":      {`"none"`, `"auto"`},
	"modalities":         {`["text"]`},
	"audio":              nil,
	"prediction":         nil,
	"reasoning_effort":   nil,
	"web_search_options": nil,
	"echo":               {"false"},
	"best_of":            {"1"},
	"suffix":             {`""`},
}

// checkOpenAIParams refuses a request that has a field outside the
// supported and ignored sets, or an unsupported one with a value that asks
// for something. Fields are checked in name order, so the answer is
// deterministic.
func checkOpenAIParams(body []byte, mode endpoint) *apiError {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil // decodeBody has answered already
	}
	prompt, supported, unsupported := "prompt", supportedParams, unsupportedParams
	switch mode {
	case endpointChat:
		prompt = "messages"
		supported = slices.Concat(supportedParams, chatParams)
	case endpointEmbed:
		prompt, supported, unsupported = "input", embedParams, map[string][]string{"dimensions": nil}
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if k == prompt || slices.Contains(supported, k) || slices.Contains(ignoredParams, k) {
			continue
		}
		neutral, known := unsupported[k]
		if !known {
			return badRequest(k, codeUnknownParam, fmt.Sprintf("unknown parameter %q: rbee takes %s, %v and ignores %v", k, prompt, supported, ignoredParams))
		}
		var buf bytes.Buffer
		if json.Compact(&buf, fields[k]) != nil {
			continue
		}
		v := buf.String()
		if v == "null" || slices.Contains(neutral, v) {
			continue
		}
		return badRequest(k, codeUnsupportedParam, fmt.Sprintf("%s is not supported by rbee's engine (only null or the value that asks for nothing is accepted)", k))
	}
	return nil
}

package worker

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCheckOpenAIParams: the code of a refusal says whether rbee knows the
// parameter (unsupported_parameter) or not (unknown_parameter).
func TestCheckOpenAIParams(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		mode       endpoint
		code       string // "" = accepted
		param      string
	}{
		{"plain chat", `{"model":"m","messages":[]}`, endpointChat, "", ""},
		{"ignored fields", `{"messages":[],"user":"u","metadata":{},"store":true,"service_tier":"auto"}`, endpointChat, "", ""},
		{"null unsupported", `{"messages":[],"tools":null,"response_format":null,"logit_bias":null}`, endpointChat, "", ""},
		{"neutral with spaces", `{"messages":[],"response_format":{ "type" : "text" }}`, endpointChat, "", ""},
		{"tools", `{"messages":[],"tools":[{}],"tool_choice":"auto","parallel_tool_calls":false}`, endpointChat, "", ""},
		{"tools are chat's", `{"prompt":"x","tools":[{}]}`, endpointCompletion, codeUnknownParam, "tools"},
		{"functions", `{"messages":[],"functions":[{}]}`, endpointChat, codeUnsupportedParam, "functions"},
		{"json mode", `{"messages":[],"response_format":{"type":"json_schema"},"logprobs":true,"top_logprobs":2}`, endpointChat, "", ""},
		{"top_logprobs is chat's", `{"prompt":"x","logprobs":2,"top_logprobs":2}`, endpointCompletion, codeUnknownParam, "top_logprobs"},
		{"first in name order", `{"messages":[],"zeta":1,"alpha":2}`, endpointChat, codeUnknownParam, "alpha"},
		{"prompt on chat", `{"messages":[],"prompt":"x"}`, endpointChat, codeUnknownParam, "prompt"},
		{"messages on completions", `{"prompt":"x","messages":[]}`, endpointCompletion, codeUnknownParam, "messages"},
		{"echo", `{"prompt":"x","echo":true}`, endpointCompletion, codeUnsupportedParam, "echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aerr := checkOpenAIParams([]byte(tc.body), tc.mode)
			if tc.code == "" {
				require.Nil(t, aerr)
				return
			}
			require.NotNil(t, aerr)
			require.Equal(t, tc.code, aerr.code)
			require.Equal(t, tc.param, aerr.param)
			require.Contains(t, aerr.msg, tc.param)
			require.Equal(t, 400, aerr.status)
		})
	}
}

// TestTemperatureRange: the OpenAI endpoints keep OpenAI's 0..2; the
// native /v1/infer (Ollama's options.temperature, which Ollama takes at
// any value >= 0) takes any temperature >= 0. Negative is refused on all.
func TestTemperatureRange(t *testing.T) {
	f32 := func(v float32) *float32 { return &v }
	for _, tc := range []struct {
		name string
		mode endpoint
		temp float32
		ok   bool
	}{
		{"infer 0", endpointInfer, 0, true},
		{"infer 2", endpointInfer, 2, true},
		{"infer 2.5", endpointInfer, 2.5, true},
		{"infer 100", endpointInfer, 100, true},
		{"infer negative", endpointInfer, -0.1, false},
		{"chat 2", endpointChat, 2, true},
		{"chat 2.5", endpointChat, 2.5, false},
		{"completions 2.5", endpointCompletion, 2.5, false},
		{"completions negative", endpointCompletion, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := genRequest{Temperature: f32(tc.temp)}
			sp, aerr := g.sampling(tc.mode)
			if !tc.ok {
				require.NotNil(t, aerr)
				require.Equal(t, "temperature", aerr.param)
				return
			}
			require.Nil(t, aerr)
			require.Equal(t, tc.temp, sp.Temperature)
		})
	}
}

// TestTopPZeroIsGreedy: top_p 0 keeps the most likely token alone, as
// OpenAI and llama.cpp (so Ollama's options.top_p) read it, whatever the
// temperature and seed; the engine's own TopP 0 means "off", which sampled
// from the whole distribution.
func TestTopPZeroIsGreedy(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	greedy := infer(t, base, map[string]any{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}).text()
	require.NotEmpty(t, greedy)
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"infer", map[string]any{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 2, "top_p": 0, "top_k": 0, "min_p": 0}},
		{"infer with top_k", map[string]any{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 1.5, "top_p": 0, "top_k": 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range 4 {
				tc.body["seed"] = seed
				require.Equal(t, greedy, infer(t, base, tc.body).text(), "seed %d", seed)
			}
		})
	}
	resp := post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 2, "top_p": 0, "seed": 9})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tc TextCompletion
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tc))
	require.Equal(t, greedy, tc.Choices[0].Text)
}

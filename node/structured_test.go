package node_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	"github.com/stretchr/testify/require"
)

// TestStructuredThroughNode drives response_format, logprobs and tools with
// the official OpenAI client, and Ollama's format and tools, through a
// node's API to a real worker process serving the story model (which writes
// no JSON by itself).
func TestStructuredThroughNode(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a worker process")
	}
	c := servingCluster(t, 1)
	n := c.Nodes[0]
	spawn(t, n, "node0", 1)
	waitSchedulable(t, c, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	oc := openai.NewClient(option.WithBaseURL(n.URL()+"/v1/"), option.WithAPIKey("unused-on-loopback"))
	user := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Once upon a time")}

	// json_schema: the answer parses into the schema's shape.
	schema := map[string]any{"type": "object", "required": []string{"name", "age"}, "additionalProperties": false,
		"properties": map[string]any{"name": map[string]any{"type": "string", "maxLength": 16}, "age": map[string]any{"type": "integer"}}}
	cc, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "stories260k", Messages: user, MaxTokens: openai.Int(200), Seed: openai.Int(1),
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "person", Strict: openai.Bool(true), Schema: schema}}},
		Logprobs: openai.Bool(true), TopLogprobs: openai.Int(2),
	})
	require.NoError(t, err)
	var person struct {
		Name *string
		Age  *int
	}
	d := json.NewDecoder(strings.NewReader(cc.Choices[0].Message.Content))
	d.DisallowUnknownFields()
	require.NoError(t, d.Decode(&person), cc.Choices[0].Message.Content)
	require.True(t, person.Name != nil && person.Age != nil)
	require.Equal(t, "stop", cc.Choices[0].FinishReason)
	// logprobs, one entry per token, in the client's types.
	lp := cc.Choices[0].Logprobs.Content
	require.Len(t, lp, int(cc.Usage.CompletionTokens))
	for _, e := range lp {
		require.Len(t, e.TopLogprobs, 2)
		require.LessOrEqual(t, e.Logprob, 0.0)
	}

	// A schema keyword rbee cannot enforce is a 400 naming it.
	_, err = oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "stories260k", Messages: user,
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "x", Schema: map[string]any{"type": "string", "pattern": "^a"}}}},
	})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	require.Contains(t, apiErr.Message, `"pattern"`)

	// A forced tool call, streamed and accumulated by the client.
	tool := openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather",
		Parameters: shared.FunctionParameters{"type": "object", "required": []string{"city"},
			"properties": map[string]any{"city": map[string]any{"type": "string", "maxLength": 12}}}})
	stream := oc.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "stories260k", Messages: user, MaxTokens: openai.Int(200), Temperature: openai.Float(0),
		Tools: []openai.ChatCompletionToolUnionParam{tool}, ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
	})
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	require.NoError(t, stream.Err())
	require.Equal(t, "tool_calls", acc.Choices[0].FinishReason)
	require.Len(t, acc.Choices[0].Message.ToolCalls, 1)
	call := acc.Choices[0].Message.ToolCalls[0]
	require.Equal(t, "get_weather", call.Function.Name)
	var args struct{ City *string }
	require.NoError(t, json.Unmarshal([]byte(call.Function.Arguments), &args))
	require.NotNil(t, args.City)

	// The call and its answer go back into the conversation (tool_choice
	// none: this model's template cannot render tools for it to call).
	cc, err = oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "stories260k", MaxTokens: openai.Int(8), Temperature: openai.Float(0),
		Messages:   append(user, acc.Choices[0].Message.ToParam(), openai.ToolMessage("sunny", call.ID)),
		Tools:      []openai.ChatCompletionToolUnionParam{tool},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("none")},
	})
	require.NoError(t, err)
	require.NotEmpty(t, cc.Choices[0].Message.Content+cc.Choices[0].FinishReason)

	// Ollama: format as a schema, and tools with a forced answer shape.
	st, b := ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"stories260k","stream":false,"messages":[{"role":"user","content":"Once upon a time"}],
		"format":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]},"options":{"num_predict":100}}`)
	require.Equal(t, http.StatusOK, st, string(b))
	var om struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
	}
	require.NoError(t, json.Unmarshal(b, &om))
	var okDoc struct{ OK *bool }
	require.NoError(t, json.Unmarshal([]byte(om.Message.Content), &okDoc), om.Message.Content)
	require.NotNil(t, okDoc.OK)
	st, b = ollamaCall(t, n, "POST", "/api/generate", "", `{"model":"stories260k","prompt":"Once","format":"json","stream":false,"options":{"num_predict":5}}`)
	require.Equal(t, http.StatusOK, st, string(b))
	var og struct{ Response string }
	require.NoError(t, json.Unmarshal(b, &og))
	require.True(t, strings.HasPrefix(strings.TrimSpace(og.Response), "{"), og.Response)
	st, b = ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"stories260k","messages":[{"role":"user","content":"x"}],"format":"yaml"}`)
	require.Equal(t, http.StatusBadRequest, st, string(b))
	// A past call (arguments as an object, Ollama's shape) is taken;
	// tools with it are refused for this model, whose template cannot
	// render them (Ollama's "does not support tools").
	history := `"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Oslo"}}}]},
		{"role":"tool","tool_name":"get_weather","content":"sunny"}]}`
	st, b = ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"stories260k","stream":false,"options":{"num_predict":4},`+history)
	require.Equal(t, http.StatusOK, st, string(b))
	require.Contains(t, string(b), `"done":true`)
	st, b = ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"stories260k","stream":false,"options":{"num_predict":4},
		"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],`+history)
	require.Equal(t, http.StatusBadRequest, st, string(b))
	require.Contains(t, string(b), "does not render tools")
}

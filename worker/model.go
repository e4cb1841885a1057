package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/grammar"
)

// Model is what the worker needs from an inference engine: one loaded model
// that hands out independent sessions. The worker declares it (the consumer
// owns the interface) so that the HTTP layer does not depend on the engine's
// internals; LoadEngine adapts model/engine to it.
//
// Implementations must be safe for concurrent use: Encode, EncodeChat and
// Info are called from many request goroutines, and several Sessions run at
// the same time.
type Model interface {
	// Info describes the loaded model.
	Info() ModelInfo
	// Encode tokenizes a raw prompt the way it is fed to the model: with
	// the model's BOS token when its metadata asks for one, special tokens
	// parsed (as llama.cpp's server does).
	Encode(text string) []int32
	// EncodeChat renders chat messages with the model's chat template (or
	// the engine's documented fallback) and tokenizes the result. ctx
	// bounds the rendering. An error wrapping ErrTemplate means the model's
	// template itself failed (it went over its render budget): the worker
	// answers 400 template_error.
	// tools (OpenAI function definitions, JSON) are passed to the
	// template as `tools`; nil renders none. vars are further template
	// variables by name (chat_template_kwargs); the names the worker sets
	// itself are refused with an error wrapping ErrInvalidRequest.
	// open: the final message is the assistant's unfinished answer,
	// which the model's answer continues (the prompt ends after its
	// text, engine.Model.ChatTokensContinue) instead of opening a turn.
	EncodeChat(ctx context.Context, msgs []Message, tools []json.RawMessage, vars map[string]json.RawMessage, open bool) ([]int32, error)
	// NewSession returns a session with its own KV cache. A session is used
	// by one goroutine at a time; the worker keeps one per slot and reuses it.
	NewSession() Session
	// Close releases the model. No session may be used afterwards.
	Close() error
}

// Session generates tokens for one request at a time.
type Session interface {
	// Generate runs the prompt and samples up to req.MaxTokens tokens,
	// calling emit for each one in order. It returns when the model emits an
	// end-of-generation token, a stop string matches, MaxTokens is reached, ctx
	// is done (StopReason "cancelled") or emit returns an error.
	Generate(ctx context.Context, req GenerateRequest, emit func(Token) error) (Result, error)
	// Embed returns the prompt's embedding: the model's final hidden
	// states pooled (mean) over its tokens, L2-normalised.
	Embed(ctx context.Context, prompt []int32) ([]float32, error)
	// CachedPrefix returns how many leading tokens of prompt the session's
	// cache holds (a Generate of prompt would not evaluate them again).
	// Called only while the session is idle.
	CachedPrefix(prompt []int32) int
}

// ModelInfo describes a loaded model (mirrors engine.Info).
type ModelInfo struct {
	Name               string
	Arch               string
	ContextLength      int // the context the sessions are built with
	TrainContextLength int
	VocabSize          int
	Params             int64
	Quantization       string
	KVCache            string // the KV cache's element type (engine.Info.KVCache)
	Layers, Dim        int
	Heads, KVHeads     int
	// MaxTokenBytes: no token stands for more input bytes (see engine.Info).
	MaxTokenBytes int
	// ToolStyle is how the chat template asks the model to write tool
	// calls: ToolStyleHermes or ToolStyleJSON.
	ToolStyle string
	// ChatTemplate: the model file has a chat template of its own
	// (tokenizer.chat_template). Without one, chats are rendered in the
	// engine's fallback layout, and a prompt with /v1/infer's
	// apply_template goes as it is (Ollama's default template).
	ChatTemplate bool
	// Tools: the chat template renders tools (TemplateTools).
	Tools bool
	// ReasoningEffort: the chat template reads reasoning_effort
	// (TemplateReasoningEffort).
	ReasoningEffort bool
	// Harmony: the model answers in gpt-oss's harmony format
	// (HarmonyFormat): the chat endpoints parse its channels and calls.
	Harmony bool
	// ThinkTags: the model writes its reasoning between <think> and
	// </think> (ThinkTagFormat; never with Harmony): the chat endpoints
	// return it apart from the content.
	ThinkTags bool
	// ShardMode is ShardPipeline or ShardTensor for a shard of a group,
	// empty for the whole model. ShardLo, ShardHi: the shard's layers
	// [lo, hi) (pipeline) or KV heads [lo, hi) (tensor).
	ShardMode        string
	ShardLo, ShardHi int
}

// Message is one chat message. An assistant message may carry the tool
// calls it made; a "tool" message answers the call ToolCallID.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// ReasoningContent is an assistant's reasoning (gpt-oss's analysis
	// channel): answered as reasoning_content, and an earlier turn's is
	// passed to the chat template as thinking.
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID       string     `json:"tool_call_id,omitempty"`
	Name             string     `json:"name,omitempty"`
}

// SampleParams are the sampling settings of one request (mirrors
// engine.SampleParams). Temperature 0 means greedy.
type SampleParams struct {
	Temperature   float32
	TopK          int
	TopP, MinP    float32
	RepeatPenalty float32
	RepeatLastN   int
	Seed          uint64
}

// GenerateRequest is one generation (mirrors engine.GenerateRequest).
type GenerateRequest struct {
	Prompt    []int32
	MaxTokens int
	Sample    SampleParams
	Stop      []string
	// StopQuiet: the leading span in which Stop is not looked for (a
	// think-tag model's reasoning, see job.quietReasoning).
	StopQuiet *engine.QuietSpan
	// Resume: the last Resume ids of Prompt were generated by an
	// interrupted attempt of this request (see engine.GenerateRequest).
	Resume int
	// Schema, if set, constrains the output to a JSON document matching
	// it (response_format, a forced tool call); generation ends when the
	// document is complete.
	Schema *grammar.Schema
	// Logprobs asks for each token's log-probability and TopLogprobs
	// (0..20) alternatives.
	Logprobs    bool
	TopLogprobs int
}

// Token is one generated token (mirrors engine.Token). Text is a UTF-8-safe
// piece and may be empty while a multi-byte character (or a possible stop
// string) is pending. ID is -1 for a final text-only chunk that flushes such
// pending text.
type Token struct {
	ID    int32
	Text  string
	Index int
	// With GenerateRequest.Logprobs, for ID >= 0: the token's bytes, its
	// log-probability under the model's raw distribution, and the most
	// likely alternatives.
	Piece       string
	Logprob     float32
	TopLogprobs []TokenLogprob
}

// TokenLogprob is one alternative token and its log-probability.
type TokenLogprob struct {
	Piece   string
	Logprob float32
}

// Result summarizes a generation (mirrors engine.Result).
type Result struct {
	PromptTokens, CompletionTokens int
	// CachedTokens are the leading PromptTokens the slot's cache held
	// already (prefix reuse), not evaluated again.
	CachedTokens int
	// StopReason is "eos", "stop", "length" or "cancelled".
	StopReason     string
	PromptDuration time.Duration
	GenDuration    time.Duration
}

// Stop reasons reported by a Session.
const (
	StopEOS       = "eos"
	StopString    = "stop"
	StopLength    = "length"
	StopCancelled = "cancelled"
)

// LoadOptions are passed to a LoadFunc.
type LoadOptions struct {
	// Threads is the number of compute threads; 0 means all cores.
	Threads int
	// ContextSize is the context per session; 0 means the model's own,
	// capped by the engine.
	ContextSize int
	// Logger receives the engine's load-time notes; nil discards them.
	Logger *slog.Logger
	// Shard selects a pipeline stage (Config.Shard); the zero value is
	// the whole model.
	Shard ShardConfig
	// RepackCache is Config.RepackCache.
	RepackCache string
	// KVCache is Config.KVCache.
	KVCache engine.KVType
	// MemoryLimit is Config.MemoryLimit.
	MemoryLimit int64
	// Sessions is Config.Slots: MemoryLimit counts every slot's KV cache.
	Sessions int
	// OnModelLost is called by a later pipeline stage or a tensor member
	// when a pass found the model's file truncated under it (the Server's
	// own requests report it through their errors, ErrModelLost); the
	// Server then stops itself. nil: nobody is told.
	OnModelLost func(error)
}

// LoadFunc loads the model file at path.
type LoadFunc func(path string, opts LoadOptions) (Model, error)

package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/grammar"
)

// LoadEngine loads path with rbee's pure-Go engine (model/engine) and
// adapts it to Model. It is DefaultConfig's LoadFunc.
func LoadEngine(path string, opts LoadOptions) (Model, error) {
	m, err := engine.Load(path, engine.Options{Threads: opts.Threads, ContextSize: opts.ContextSize, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	style := ToolStyleJSON
	if strings.Contains(m.ChatTemplate(), toolCallOpen) {
		style = ToolStyleHermes
	}
	return engineModel{m: m, toolStyle: style,
		vocab: sync.OnceValue(func() *grammar.Vocab { return grammar.TokenizerVocab(m.Tokenizer()) })}, nil
}

// engineModel adapts *engine.Model; the engine's methods are safe for
// concurrent use, so the adapter adds no locking. vocab is the
// vocabulary prepared for constrained sampling, built at the first
// constrained request.
type engineModel struct {
	m         *engine.Model
	vocab     func() *grammar.Vocab
	toolStyle string
}

func (e engineModel) Info() ModelInfo {
	i := e.m.Info()
	return ModelInfo{
		Name: i.Name, Arch: i.Arch, ContextLength: i.ContextLength, TrainContextLength: i.TrainContextLength,
		VocabSize: i.VocabSize, Params: i.Params, Quantization: i.Quantization,
		Layers: i.Layers, Dim: i.Dim, Heads: i.Heads, KVHeads: i.KVHeads, MaxTokenBytes: i.MaxTokenBytes,
		ToolStyle: e.toolStyle,
	}
}

func (e engineModel) Encode(text string) []int32 {
	tok := e.m.Tokenizer()
	return tok.Encode(text, tok.AddBOS(), true)
}

func (e engineModel) EncodeChat(ctx context.Context, msgs []Message, tools []json.RawMessage) ([]int32, error) {
	em := make([]engine.Message, len(msgs))
	for i, msg := range msgs {
		em[i] = engine.Message{Role: msg.Role, Content: msg.Content, ToolCallID: msg.ToolCallID, Name: msg.Name}
		for _, c := range msg.ToolCalls {
			em[i].ToolCalls = append(em[i].ToolCalls, engine.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
		}
	}
	ids, err := e.m.ChatTokensTools(ctx, em, tools)
	if errors.Is(err, engine.ErrTemplate) {
		err = fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	return ids, err
}

func (e engineModel) NewSession() Session { return engineSession{s: e.m.NewSession(), vocab: e.vocab} }

func (e engineModel) Close() error { return e.m.Close() }

type engineSession struct {
	s     *engine.Session
	vocab func() *grammar.Vocab
}

func (es engineSession) Embed(ctx context.Context, prompt []int32) ([]float32, error) {
	return es.s.Embed(ctx, prompt)
}

func (es engineSession) Generate(ctx context.Context, req GenerateRequest, emit func(Token) error) (Result, error) {
	sp := req.Sample
	start := time.Now()
	egr := engine.GenerateRequest{
		Prompt:    req.Prompt,
		MaxTokens: req.MaxTokens,
		Stop:      req.Stop,
		Sample: engine.SampleParams{
			Temperature: sp.Temperature, TopK: sp.TopK, TopP: sp.TopP, MinP: sp.MinP,
			RepeatPenalty: sp.RepeatPenalty, RepeatLastN: sp.RepeatLastN, Seed: sp.Seed,
		},
		Logprobs: req.Logprobs, TopLogprobs: req.TopLogprobs,
	}
	if req.Schema != nil {
		egr.Constraint = req.Schema.NewMatcher(es.vocab())
	}
	r, err := es.s.Generate(ctx, egr, func(t engine.Token) error {
		tok := Token{ID: t.ID, Text: t.Text, Index: t.Index, Piece: t.Piece, Logprob: t.Logprob}
		for _, alt := range t.TopLogprobs {
			tok.TopLogprobs = append(tok.TopLogprobs, TokenLogprob{Piece: alt.Text, Logprob: alt.Logprob})
		}
		return emit(tok)
	})
	if err != nil && (errors.Is(err, engine.ErrBadRequest) || errors.Is(err, engine.ErrContextOverflow) || errors.Is(err, engine.ErrEmptyPrompt)) {
		err = fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	res := Result{
		PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, StopReason: r.StopReason,
		PromptDuration: r.PromptDuration, GenDuration: r.GenDuration,
	}
	if res.GenDuration == 0 && res.CompletionTokens > 0 {
		// Engines that do not time the decode phase: it is what follows
		// the prompt.
		res.GenDuration = max(time.Since(start)-res.PromptDuration, time.Nanosecond)
	}
	return res, err
}

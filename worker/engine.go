package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/grammar"
	"github.com/rbee-project/rbee/worker/shard"
)

// LoadEngine loads path with rbee's pure-Go engine (model/engine) and
// adapts it to Model. It is DefaultConfig's LoadFunc. The model's sessions
// generate through one step loop (see batcher): concurrent generations
// share each forward pass.
func LoadEngine(path string, opts LoadOptions) (Model, error) {
	if opts.Shard.sharded() {
		return loadShardEngine(path, opts)
	}
	m, err := engine.Load(path, engine.Options{Threads: opts.Threads, ContextSize: opts.ContextSize, Logger: opts.Logger, RepackCache: opts.RepackCache, KVCache: opts.KVCache, MemoryLimit: opts.MemoryLimit, Sessions: opts.Sessions})
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return newEngineModel(m, log), nil
}

func newEngineModel(m *engine.Model, log *slog.Logger) *engineModel {
	style := ToolStyleJSON
	tmpl := m.ChatTemplate()
	if strings.Contains(tmpl, toolCallOpen) {
		style = ToolStyleHermes
	}
	tok := m.Tokenizer()
	hasToken := func(s string) bool { _, ok := tok.TokenID(s); return ok }
	harmony := HarmonyFormat(hasToken, tmpl)
	return &engineModel{m: m, bt: newBatcher(m, log), toolStyle: style, chatTemplate: strings.TrimSpace(tmpl) != "", tools: TemplateTools(tmpl), harmony: harmony,
		thinkTags:       !harmony && ThinkTagFormat(hasToken, tmpl),
		reasoningEffort: TemplateReasoningEffort(tmpl),
		vocab:           sync.OnceValue(func() *grammar.Vocab { return grammar.TokenizerVocab(m.Tokenizer()) })}
}

// engineModel adapts *engine.Model; the engine's methods are safe for
// concurrent use, and generations go through the batcher. vocab is the
// vocabulary prepared for constrained sampling, built at the first
// constrained request.
type engineModel struct {
	m         *engine.Model
	bt        *batcher
	vocab     func() *grammar.Vocab
	toolStyle string
	// chatTemplate: the model has a chat template (ModelInfo.ChatTemplate).
	chatTemplate bool
	// tools: the template renders tools (ModelInfo.Tools).
	tools bool
	// harmony: the model writes harmony (ModelInfo.Harmony).
	harmony bool
	// thinkTags: the model writes think tags (ModelInfo.ThinkTags).
	thinkTags bool
	// reasoningEffort: the template reads reasoning_effort
	// (ModelInfo.ReasoningEffort).
	reasoningEffort bool
	// constrain, set by tests alone, constrains every generation that
	// has no schema (they script what the real model writes); nil in
	// use.
	constrain func() engine.Constraint
	// group connects a sharded group's head to the other shards (a
	// *shard.Pipeline or *shard.TensorGroup; nil when the model is
	// whole), closed after the model; shardMode, shardLo and shardHi
	// describe the head's part (ModelInfo).
	group            io.Closer
	shardMode        string
	shardLo, shardHi int
}

func (e *engineModel) batchStats() BatchStats { return e.bt.stats() }

func (e *engineModel) exchangeStats() (ExchangeStats, bool) {
	g, ok := e.group.(interface{ Stats() shard.Stats })
	if !ok {
		return ExchangeStats{}, false
	}
	st := g.Stats()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return ExchangeStats{Passes: st.Passes, Exchanges: st.Exchanges, RoundTripMs: ms(st.RoundTrip), ComputeMs: ms(st.Compute)}, true
}

func (e *engineModel) Info() ModelInfo {
	i := e.m.Info()
	return ModelInfo{
		ShardMode: e.shardMode, ShardLo: e.shardLo, ShardHi: e.shardHi,
		Name: i.Name, Arch: i.Arch, ContextLength: i.ContextLength, TrainContextLength: i.TrainContextLength,
		VocabSize: i.VocabSize, Params: i.Params, Quantization: i.Quantization, KVCache: i.KVCache,
		Layers: i.Layers, Dim: i.Dim, Heads: i.Heads, KVHeads: i.KVHeads, MaxTokenBytes: i.MaxTokenBytes,
		ToolStyle: e.toolStyle, ChatTemplate: e.chatTemplate, Tools: e.tools, Harmony: e.harmony, ThinkTags: e.thinkTags, ReasoningEffort: e.reasoningEffort,
	}
}

// thinkTail is how many of a prompt's last tokens OpensThink decodes:
// "<think>" and the line break after it, in a vocabulary without a
// <think> token, are at most eight tokens of one byte each and a few
// more.
const thinkTail = 16

// OpensThink reports whether a rendered prompt ends inside an open
// <think> block (the generation prompt of QwQ's, the later R1's
// templates): its text ends with <think> and blanks.
func (e *engineModel) OpensThink(prompt []int32) bool {
	if !e.thinkTags {
		return false
	}
	tail := e.m.Tokenizer().Decode(prompt[max(len(prompt)-thinkTail, 0):])
	return strings.HasSuffix(strings.TrimRight(tail, blank), thinkOpen)
}

func (e *engineModel) Encode(text string) []int32 {
	tok := e.m.Tokenizer()
	return tok.Encode(text, tok.AddBOS(), true)
}

func (e *engineModel) EncodeChat(ctx context.Context, msgs []Message, tools []json.RawMessage, vars map[string]json.RawMessage, open bool) ([]int32, error) {
	em := make([]engine.Message, len(msgs))
	for i, msg := range msgs {
		em[i] = engine.Message{Role: msg.Role, Content: msg.Content, ToolCallID: msg.ToolCallID, Name: msg.Name, Thinking: msg.ReasoningContent}
		for _, c := range msg.ToolCalls {
			em[i].ToolCalls = append(em[i].ToolCalls, engine.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
		}
	}
	encode := e.m.ChatTokensVars
	if open {
		encode = e.m.ChatTokensContinue
	}
	ids, err := encode(ctx, em, tools, vars)
	switch {
	case errors.Is(err, engine.ErrTemplate):
		err = fmt.Errorf("%w: %w", ErrTemplate, err)
	case errors.Is(err, engine.ErrContextOverflow):
		err = fmt.Errorf("%w: %s", ErrContextLength, strings.TrimPrefix(err.Error(), engine.ErrContextOverflow.Error()+": "))
	}
	return ids, err
}

func (e *engineModel) NewSession() Session {
	return engineSession{s: e.m.NewSession(), bt: e.bt, ctxLen: e.m.Info().ContextLength, vocab: e.vocab, constrain: e.constrain}
}

// Close stops the step loop, then releases the model.
func (e *engineModel) Close() error {
	e.bt.close()
	err := e.m.Close()
	if e.group != nil {
		e.group.Close()
	}
	return err
}

type engineSession struct {
	s      *engine.Session
	bt     *batcher
	ctxLen int
	vocab  func() *grammar.Vocab
	// constrain: engineModel.constrain.
	constrain func() engine.Constraint
}

func (es engineSession) Embed(ctx context.Context, prompt []int32) ([]float32, error) {
	vec, err := es.s.Embed(ctx, prompt)
	return vec, modelLost(err)
}

// modelLost wraps ErrModelLost around an engine error that says the
// model's file was truncated under its mapping.
func modelLost(err error) error {
	if errors.Is(err, engine.ErrFileChanged) {
		return fmt.Errorf("%w: %w", ErrModelLost, err)
	}
	return err
}

func (es engineSession) CachedPrefix(prompt []int32) int { return es.s.CommonPrefix(prompt) }

// Generate starts the request on the session and hands it to the step
// loop; the tokens are emitted here, on the caller's goroutine, so a slow
// emit (a slow client) delays only this request.
func (es engineSession) Generate(ctx context.Context, req GenerateRequest, emit func(Token) error) (Result, error) {
	sp := req.Sample
	start := time.Now()
	egr := engine.GenerateRequest{
		Prompt:    req.Prompt,
		MaxTokens: req.MaxTokens,
		Stop:      req.Stop,
		StopQuiet: req.StopQuiet,
		Resume:    req.Resume,
		Sample: engine.SampleParams{
			Temperature: sp.Temperature, TopK: sp.TopK, TopP: sp.TopP, MinP: sp.MinP,
			RepeatPenalty: sp.RepeatPenalty, RepeatLastN: sp.RepeatLastN, Seed: sp.Seed,
		},
		Logprobs: req.Logprobs, TopLogprobs: req.TopLogprobs,
	}
	if req.Schema != nil {
		egr.Constraint = req.Schema.NewMatcher(es.vocab())
	} else if es.constrain != nil {
		egr.Constraint = es.constrain()
	}
	seq, err := es.s.Begin(egr)
	if err != nil {
		if errors.Is(err, engine.ErrBadRequest) || errors.Is(err, engine.ErrContextOverflow) || errors.Is(err, engine.ErrEmptyPrompt) {
			err = fmt.Errorf("%w: %w", ErrInvalidRequest, err)
		}
		return Result{}, err
	}
	// Room for every token the generation can produce (the last one
	// sampled when the context is full is emitted, not evaluated) plus the
	// final text-only chunk: the loop never waits for this consumer.
	most := es.ctxLen - len(req.Prompt) + 1
	if req.MaxTokens > 0 {
		most = min(most, req.MaxTokens)
	}
	j := &genJob{ctx: ctx, seq: seq, out: make(chan engine.Token, most+1)}
	if !es.bt.submit(j) {
		return Result{}, engine.ErrClosed
	}
	var emitErr error
	for t := range j.out {
		if emitErr != nil {
			continue
		}
		tok := Token{ID: t.ID, Text: t.Text, Index: t.Index, Piece: t.Piece, Logprob: t.Logprob}
		for _, alt := range t.TopLogprobs {
			tok.TopLogprobs = append(tok.TopLogprobs, TokenLogprob{Piece: alt.Text, Logprob: alt.Logprob})
		}
		if emitErr = emit(tok); emitErr != nil {
			j.abandoned.Store(true)
		}
	}
	r := j.res
	res := Result{
		PromptTokens: r.PromptTokens, CachedTokens: r.CachedTokens, CompletionTokens: r.CompletionTokens, StopReason: r.StopReason,
		PromptDuration: r.PromptDuration, GenDuration: r.GenDuration,
	}
	if res.GenDuration == 0 && res.CompletionTokens > 0 {
		// Engines that do not time the decode phase: it is what follows
		// the prompt.
		res.GenDuration = max(time.Since(start)-res.PromptDuration, time.Nanosecond)
	}
	if emitErr != nil {
		return res, emitErr
	}
	return res, modelLost(j.err)
}

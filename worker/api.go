package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/rbee-project/rbee/internal/sse"

	"github.com/rbee-project/rbee/internal/bodydeadline"
)

// Handler returns the worker's HTTP API:
//
//	GET  /health               200 {"state": "ready"|"busy"} once loaded, 503 while loading, draining or failed
//	GET  /v1/info              Info
//	GET  /v1/models            OpenAI model list (the one model)
//	POST /v1/infer             native SSE stream: started, token…, end | error
//	POST /v1/chat/completions  OpenAI chat completions, streaming or not
//	POST /v1/completions       OpenAI text completions, streaming or not
//	POST /v1/embeddings        OpenAI embeddings (mean-pooled final hidden states)
//
// Every route, /health included, answers 401 without the worker's secret
// (Authorization: Bearer, see Config.Secret). Start serves it; it is
// exported so that it can be mounted elsewhere (with the same check).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("GET /v1/info", s.handleInfo)
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("POST /v1/infer", s.handleInfer)
	mux.HandleFunc("POST /v1/chat/completions", s.handleChat)
	mux.HandleFunc("POST /v1/completions", s.handleCompletion)
	mux.HandleFunc("POST /v1/embeddings", s.handleEmbeddings)
	mux.HandleFunc("GET /v1/shard", s.handleShard)
	mux.HandleFunc("POST /v1/shard/direct", s.handleShardDirect)
	return s.bounded(s.requireSecret(mux))
}

// bounded sets the body read deadline (Config.BodyTimeout) of every
// request that has a body and lifts it once the body is read, so the
// answer may then stream for as long as it needs. Without it a client
// that sent headers and then held back the body kept its connection for
// ever, even after its 401: net/http reads what is left of a body before
// it answers.
func (s *Server) bounded(next http.Handler) http.Handler {
	timeout := s.cfg.BodyTimeout
	if timeout <= 0 {
		timeout = DefaultBodyTimeout
	}
	return bodydeadline.Handler(timeout, next)
}

// Health is the body of GET /health.
type Health struct {
	Status string `json:"status"` // "ok" or "unavailable"
	State  State  `json:"state"`
	Error  string `json:"error,omitempty"`
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	st := s.stateLocked()
	var msg string
	if s.loadErr != nil {
		msg = s.loadErr.Error()
	}
	s.mu.Unlock()
	if st == StateReady || st == StateBusy {
		writeJSON(w, http.StatusOK, Health{Status: "ok", State: st})
		return
	}
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, Health{Status: "unavailable", State: st, Error: msg})
}

func (s *Server) handleInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Info())
}

func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   []model{{ID: s.modelName, Object: "model", Created: time.Now().Unix(), OwnedBy: "rbee"}},
	})
}

// job is one admitted request holding a slot.
type job struct {
	s      *Server
	id     string
	model  Model
	g      genRequest
	req    GenerateRequest
	slot   *slot
	pool   *slotPool
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool
}

// begin admits, decodes and validates a request and waits for a slot. It
// writes the error response itself and returns false when the request
// cannot run. On true the caller must call finish.
func (s *Server) begin(w http.ResponseWriter, r *http.Request, mode endpoint, idPrefix string) (*job, bool) {
	m, pool, st, err := s.admit()
	if err != nil {
		writeError(w, notAdmitted(st))
		return nil, false
	}
	if aerr := stageOnly(m); aerr != nil {
		s.reqs.Done()
		writeError(w, aerr)
		return nil, false
	}
	j := &job{s: s, id: idPrefix + newID(), model: m, pool: pool}
	if aerr := decodeBody(w, r, &j.g, mode); aerr != nil {
		s.reqs.Done()
		writeError(w, aerr)
		return nil, false
	}
	req, aerr := prepare(r.Context(), m, &j.g, mode)
	if aerr != nil {
		s.reqs.Done()
		writeError(w, aerr)
		return nil, false
	}
	j.req = req
	j.req.StopQuiet = j.quietReasoning()
	if e := j.g.Rbee; e != nil && e.ID != "" {
		j.id = e.ID
	}
	j.ctx, j.cancel = context.WithCancel(r.Context())
	j.stop = context.AfterFunc(s.hardCtx, j.cancel)

	sl, err := pool.acquireFor(j.ctx, j.req.Prompt)
	if err != nil {
		j.stop()
		j.cancel()
		s.reqs.Done()
		if aerr := s.notAcquired(err); aerr != nil {
			writeError(w, aerr)
		}
		// Otherwise the client went away while queued: nobody to answer.
		return nil, false
	}
	j.slot = sl
	s.mu.Lock()
	s.inFlight++
	s.mu.Unlock()
	return j, true
}

// notAdmitted is the answer to a request the worker's state refuses.
func notAdmitted(st State) *apiError {
	code := string(st)
	msg := "worker is " + code
	if st == StateStopped {
		code, msg = "draining", "worker is shutting down"
	}
	return &apiError{status: http.StatusServiceUnavailable, typ: errTypeUnavailable, code: code, msg: msg}
}

// notAcquired is the answer to a request that got no slot; nil when the
// client went away while queued (nobody to answer).
func (s *Server) notAcquired(err error) *apiError {
	switch {
	case errors.Is(err, ErrQueueFull):
		return &apiError{status: http.StatusTooManyRequests, typ: errTypeRateLimit, code: "queue_full",
			msg: fmt.Sprintf("all %d slots are busy and %d requests are already queued; retry later", s.cfg.Slots, s.cfg.Queue)}
	case s.hardCtx.Err() != nil:
		return &apiError{status: http.StatusServiceUnavailable, typ: errTypeUnavailable, code: "draining", msg: "worker is shutting down"}
	}
	return nil
}

// finish releases everything begin took.
func (j *job) finish() {
	j.s.mu.Lock()
	j.s.inFlight--
	j.s.mu.Unlock()
	j.pool.release(j.slot)
	j.stop()
	j.cancel()
	j.s.reqs.Done()
}

// generate runs the request on the job's slot and records the speed.
func (j *job) generate(emit func(Token) error) (Result, error) {
	res, err := j.slot.session.Generate(j.ctx, j.req, emit)
	j.s.checkModelLost(err)
	if err == nil && res.StopReason != StopCancelled {
		j.s.recordSpeed(res.CompletionTokens, res.GenDuration)
	}
	return res, err
}

// interrupted reports why a generation ended early: the client left
// (nothing to answer) or the server is stopping.
func (j *job) interrupted(res Result, err error) (clientGone, stopping bool) {
	if j.s.hardCtx.Err() != nil && (res.StopReason == StopCancelled || err != nil) {
		return false, true
	}
	if j.ctx.Err() != nil && (res.StopReason == StopCancelled || err != nil) {
		return true, false
	}
	return false, false
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Native SSE events of POST /v1/infer.

// StartedEvent is the first event of a stream.
type StartedEvent struct {
	ID           string `json:"id"`
	PromptTokens int    `json:"prompt_tokens"`
	MaxTokens    int    `json:"max_tokens"`
	Slot         int    `json:"slot"`
	// Resumed is the number of tokens the request resumed from (Ext.Resume):
	// a node checks it before relaying a continuation.
	Resumed int `json:"resumed,omitempty"`
	// Format is FormatHarmony when the model answers in gpt-oss's
	// harmony format: the text holds its markers, which a node parses
	// (HarmonyStream) for Ollama's /api/chat. Empty: plain text.
	Format string `json:"format,omitempty"`
	// ThinkOpen: the format is FormatThink and the prompt opened the
	// think block, so the answer starts as reasoning (NewReasoningStream).
	ThinkOpen bool `json:"think_open,omitempty"`
}

// TokenEvent carries one generated token. Text may be empty while a
// multi-byte character or a possible stop string is pending; ID is -1 for a
// final text-only chunk that flushes such text. Concatenating all texts
// gives the completion. Logprob is the token's log-probability entry (its
// text, bytes and top_logprobs alternatives) when the request asked for
// logprobs, for every token of the model (not a text-only chunk).
type TokenEvent struct {
	Text    string          `json:"text"`
	Index   int             `json:"index"`
	ID      int32           `json:"id"`
	Logprob *LogprobContent `json:"logprob,omitempty"`
}

// EndEvent is the last event of a successful stream. StopReason is "eos",
// "stop" or "length".
type EndEvent struct {
	StopReason string `json:"stop_reason"`
	TokensIn   int    `json:"tokens_in"`
	// TokensCached are the leading TokensIn the slot's cache held already
	// (an earlier turn of the conversation), not evaluated again.
	TokensCached    int     `json:"tokens_cached"`
	TokensOut       int     `json:"tokens_out"`
	PromptMS        float64 `json:"prompt_ms"`
	GenMS           float64 `json:"gen_ms"`
	TokensPerSecond float64 `json:"tokens_per_second"`
}

// ErrorEvent ends a stream that failed after it started.
type ErrorEvent struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

func tokensPerSecond(n int, d time.Duration) float64 {
	if n == 0 || d <= 0 {
		return 0
	}
	return math.Round(float64(n)/d.Seconds()*100) / 100
}

func (s *Server) handleInfer(w http.ResponseWriter, r *http.Request) {
	j, ok := s.begin(w, r, endpointInfer, "req-")
	if !ok {
		return
	}
	defer j.finish()
	out := sse.Start(w)
	if err := out.JSON("started", StartedEvent{ID: j.id, PromptTokens: len(j.req.Prompt) - j.req.Resume, MaxTokens: j.req.MaxTokens, Slot: j.slot.id, Resumed: j.req.Resume,
		Format: j.format(), ThinkOpen: j.format() == FormatThink && j.thinkOpen()}); err != nil {
		return
	}
	res, err := j.generate(func(t Token) error {
		te := TokenEvent{Text: t.Text, Index: t.Index, ID: t.ID}
		if lp, ok := logprobContent(t); ok && j.req.Logprobs {
			te.Logprob = &lp
		}
		return out.JSON("token", te)
	})
	gone, stopping := j.interrupted(res, err)
	switch {
	case gone:
		return
	case stopping:
		_ = out.JSON("error", ErrorEvent{Code: "draining", Message: "worker is shutting down; generation cancelled"})
		return
	case err != nil:
		s.log.Error("generation failed", "request", j.id, "err", err)
		_ = out.JSON("error", ErrorEvent{Code: errCode(err), Message: err.Error()})
		return
	}
	_ = out.JSON("end", EndEvent{
		StopReason:   res.StopReason,
		TokensIn:     res.PromptTokens,
		TokensCached: res.CachedTokens,
		TokensOut:    res.CompletionTokens,
		PromptMS:     ms(res.PromptDuration),
		GenMS:        ms(res.GenDuration),
		// Resumed tokens count in TokensOut (the request's usage) but were
		// generated by an earlier attempt, not in GenMS.
		TokensPerSecond: tokensPerSecond(res.CompletionTokens-j.req.Resume, res.GenDuration),
	})
}

// errCode names a generation failure for error events.
func errCode(err error) string {
	if errors.Is(err, ErrInvalidRequest) {
		return "invalid_request"
	}
	if errors.Is(err, ErrModelLost) {
		return "model_lost"
	}
	return "internal_error"
}

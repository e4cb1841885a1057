// Package worker is the rbee-worker program as a library: it loads one model,
// serves inference over HTTP on loopback (a native SSE API and the OpenAI
// completions API), runs a fixed number of generation slots behind a bounded
// FIFO queue, reports heartbeats to its node and drains gracefully.
//
// Lifecycle: New validates the Config; Start binds the listener, starts
// serving (health answers 503 "loading") and loads the model in the
// background; WaitReady blocks until the model is loaded; Drain stops taking
// new requests, lets the accepted ones finish and then closes; Close stops at
// once, cancelling generations. See DESIGN.md.
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// State is the worker's lifecycle state as reported by /health, /v1/info and
// heartbeats.
type State string

// Worker states. StateBusy is reported instead of StateReady while every
// slot is generating.
const (
	StateLoading  State = "loading"
	StateReady    State = "ready"
	StateBusy     State = "busy"
	StateDraining State = "draining"
	StateStopped  State = "stopped"
	StateFailed   State = "failed"
)

// tpsSmoothing is the weight of the newest request in the tokens-per-second
// moving average: recent enough to follow load changes, smooth enough that
// one short request does not swing the scheduler's view.
const tpsSmoothing = 0.3

// cancelGrace bounds how long a stop waits for cancelled requests to write
// their final error event before their connections are closed.
const cancelGrace = time.Second

// Server is one worker: a model, its slots and the HTTP server in front.
// All methods are safe for concurrent use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	modelName string
	threads   int

	mu      sync.Mutex
	state   State
	model   Model
	pool    *slotPool
	loadErr error
	started bool
	closed  bool
	tps     float64
	ln      net.Listener
	httpSrv *http.Server
	// stagePort is the direct stage port (Config.StageAddr), nil without.
	stagePort *stagePort
	inFlight  int // requests generating

	loaded chan struct{}  // closed when loading ends (either way)
	reqs   sync.WaitGroup // accepted inference requests, queued or running

	// hardCtx is cancelled by Close: it ends every generation at once.
	hardCtx    context.Context
	hardCancel context.CancelFunc

	hb        *heartbeater
	closeOnce sync.Once
	closeErr  error
	serveDone chan struct{}
	stopped   chan struct{} // closed when shutdown has finished
	stopErr   error         // why the server stopped itself (ErrOrphaned); guarded by mu
}

// New validates cfg and returns a Server that is not yet listening.
func New(cfg Config) (*Server, error) {
	if cfg.ModelName == "" {
		cfg.ModelName = strings.TrimSuffix(filepath.Base(cfg.ModelPath), filepath.Ext(cfg.ModelPath))
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	threads := cfg.Threads
	if threads == 0 {
		threads = runtime.NumCPU()
	}
	s := &Server{
		cfg:       cfg,
		log:       log.With("worker", cfg.ID),
		modelName: cfg.ModelName,
		threads:   threads,
		state:     StateLoading,
		loaded:    make(chan struct{}),
		serveDone: make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	s.hardCtx, s.hardCancel = context.WithCancel(context.Background())
	if cfg.NodeURL != "" {
		s.hb = newHeartbeater(heartbeatURL(cfg.NodeURL), cfg.Secret,
			cfg.HeartbeatInterval, cfg.OrphanGrace, s.heartbeat, s.orphaned, s.log)
		s.hb.nodeFile = cfg.NodeFile
	}
	return s, nil
}

// orphaned stops a worker whose node has not accepted a heartbeat for the
// orphan grace: the node is gone (crashed and not restarted), or the
// process now at its address is another node that does not know this
// worker. Staying up would keep the model's memory and leave a worker no
// node supervises. Accepted requests get DrainTimeout to finish; then their
// streams end with an error event.
func (s *Server) orphaned(silent time.Duration) {
	err := fmt.Errorf("%w: none accepted for %s (grace %s) by %s", ErrOrphaned,
		silent.Round(100*time.Millisecond), s.cfg.OrphanGrace, s.cfg.NodeURL)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.stopErr = err
	s.mu.Unlock()
	s.log.Error("stopping: this worker's node is gone (heartbeats failed or were refused for the orphan grace)",
		"err", err, "in_flight", s.Info().InFlight)
	if derr := s.Drain(context.Background()); derr != nil {
		s.log.Warn("orphan drain incomplete", "err", derr)
	}
}

// checkModelLost stops the worker once a request found its model
// unreadable (err wraps ErrModelLost: the file was truncated under the
// mapping): every later request would fail the same way, and a stopped
// worker leaves the schedule, so its node sends them to other workers.
// The requests in flight end with their error events (the node retries
// them elsewhere); the drain runs on its own goroutine, since it waits for
// the caller's request too.
func (s *Server) checkModelLost(err error) {
	if !errors.Is(err, ErrModelLost) {
		return
	}
	s.mu.Lock()
	if s.closed || s.stopErr != nil {
		s.mu.Unlock()
		return
	}
	s.stopErr = err
	s.mu.Unlock()
	s.log.Error("stopping: the model file was truncated while this worker had it mapped; load it again", "err", err)
	go func() {
		if derr := s.Drain(context.Background()); derr != nil {
			s.log.Warn("drain incomplete", "err", derr)
		}
	}()
}

// Done is closed once the server has stopped: after Drain or Close, or
// when it stopped itself (see Err).
func (s *Server) Done() <-chan struct{} { return s.stopped }

// Err tells why the server stopped itself: an error wrapping ErrOrphaned
// when no heartbeat was accepted within Config.OrphanGrace, or ErrModelLost
// when its model's file was truncated under it; nil otherwise.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopErr
}

// Start binds the listener, starts serving and heartbeats, and begins
// loading the model in the background. It returns once the listener is
// bound; use WaitReady to wait for the model. ctx bounds only the bind.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return ErrAlreadyStarted
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("worker: listen: %w", err)
	}
	if s.cfg.StageAddr != "" && (s.cfg.Shard.Lo > 0 || s.cfg.Shard.KVLo > 0) {
		p, err := newStagePort(s.cfg.StageAddr, s.admitStage, s.log)
		if err != nil {
			_ = ln.Close()
			return err
		}
		s.stagePort = p
		s.log.Info("direct stage port listening", "addr", p.ln.Addr().String())
	}
	s.started = true
	s.ln = ln
	s.httpSrv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second, // slow-header clients cannot pin connections
		IdleTimeout:       2 * time.Minute,  // keep-alive connections from the node are reused, not kept forever
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.serveDone)
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	if s.hb != nil {
		s.hb.start()
	}
	go s.load()
	s.log.Info("worker listening", "addr", ln.Addr().String(), "model", s.cfg.ModelPath)
	return nil
}

// load runs the LoadFunc and builds the slots.
func (s *Server) load() {
	defer close(s.loaded)
	start := time.Now()
	m, err := s.cfg.Load(s.cfg.ModelPath, LoadOptions{Threads: s.cfg.Threads, ContextSize: s.cfg.ContextSize, Logger: s.log, Shard: s.cfg.Shard, RepackCache: s.cfg.RepackCache, KVCache: s.cfg.KVCache, MemoryLimit: s.cfg.MemoryLimit, Sessions: s.cfg.Slots,
		OnModelLost: func(err error) { s.checkModelLost(fmt.Errorf("%w: %w", ErrModelLost, err)) }})
	if err == nil && m.Info().ContextLength < 2 {
		_ = m.Close()
		err = fmt.Errorf("context length %d too small", m.Info().ContextLength)
	}
	s.mu.Lock()
	if err != nil {
		s.loadErr = fmt.Errorf("%w: %s: %w", ErrLoad, s.cfg.ModelPath, err)
		if s.state == StateLoading {
			s.state = StateFailed
		}
		s.mu.Unlock()
		s.log.Error("model load failed", "err", err)
		s.kick()
		return
	}
	if s.closed {
		s.mu.Unlock()
		_ = m.Close()
		return
	}
	slots := make([]*slot, s.cfg.Slots)
	for i := range slots {
		slots[i] = &slot{id: i, session: m.NewSession()}
	}
	s.model = m
	s.pool = newSlotPool(slots, s.cfg.Queue)
	if s.state == StateLoading {
		s.state = StateReady
	}
	s.mu.Unlock()
	info := m.Info()
	s.log.Info("model loaded", "name", info.Name, "arch", info.Arch, "ctx", info.ContextLength,
		"slots", s.cfg.Slots, "elapsed", time.Since(start).Round(time.Millisecond))
	s.kick()
}

// WaitReady blocks until the model is loaded. It returns an error wrapping
// ErrLoad if loading failed, or ctx.Err().
func (s *Server) WaitReady(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	select {
	case <-s.loaded:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return s.loadErr
	}
	if s.model == nil {
		return ErrClosed
	}
	return nil
}

// Addr returns the bound listen address, or nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// State returns the current state (StateBusy while every slot is in use).
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked()
}

func (s *Server) stateLocked() State {
	if s.state == StateReady && s.pool != nil {
		if busy, _ := s.pool.stats(); busy >= s.cfg.Slots {
			return StateBusy
		}
	}
	return s.state
}

// Drain stops accepting inference requests (they get 503), waits for the
// accepted ones (queued and running) to finish, then closes the server. The
// wait is bounded by ctx and by Config.DrainTimeout; when it runs out the
// remaining generations are cancelled, the server is closed and the
// context's error is returned. A heartbeat with state "draining" goes out
// when the drain begins and one with "stopped" when it ends.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if s.state != StateDraining {
		s.log.Info("draining", "in_flight", s.inFlight)
	}
	s.state = StateDraining
	s.mu.Unlock()
	if s.hb != nil {
		s.hb.beatNow()
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		s.reqs.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("worker: drain: %w", ctx.Err())
		s.log.Warn("drain timed out; cancelling in-flight requests")
	}
	if cerr := s.shutdown(ctx); err == nil {
		err = cerr
	}
	return err
}

// Close stops the server at once: generations are cancelled, connections
// closed, a final "stopped" heartbeat is sent and the model is released.
// It is idempotent.
func (s *Server) Close() error {
	return s.shutdown(nil)
}

// shutdown closes everything; with a live ctx the HTTP server is shut down
// gracefully (connections finish their current response) first.
func (s *Server) shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.state = StateDraining
		started := s.started
		port := s.stagePort
		s.mu.Unlock()
		if port != nil {
			port.close()
		}

		if started {
			if ctx != nil && ctx.Err() == nil {
				// Idle connections go at once; the wait covers responses
				// still being written.
				_ = s.httpSrv.Shutdown(ctx)
			}
			// Cancelled generations end their streams with an error event
			// (bounded: a client that does not read cannot hold us up).
			s.hardCancel()
			waitTimeout(&s.reqs, cancelGrace)
			// The handlers have written their error events; let net/http
			// finish those responses (the chunked terminator is written
			// after a handler returns) before connections are cut.
			fctx, cancel := context.WithTimeout(context.Background(), cancelGrace)
			_ = s.httpSrv.Shutdown(fctx)
			cancel()
			_ = s.httpSrv.Close()
			s.reqs.Wait()
			<-s.serveDone
		} else {
			s.hardCancel()
		}

		s.mu.Lock()
		s.state = StateStopped
		m := s.model
		s.model = nil
		s.mu.Unlock()
		if s.hb != nil {
			s.hb.stop() // sends the final "stopped" beat
		}
		if m != nil {
			s.closeErr = m.Close()
		}
		s.log.Info("worker stopped")
		close(s.stopped)
	})
	return s.closeErr
}

// kick asks the heartbeater for an early beat after a state change.
func (s *Server) kick() {
	if s.hb != nil {
		s.hb.kickNow()
	}
}

// admit registers an inference request. It fails with ErrUnavailable unless
// the model is loaded and the server is not draining. On success the caller
// must call s.reqs.Done.
func (s *Server) admit() (Model, *slotPool, State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != StateReady {
		return nil, nil, s.state, ErrUnavailable
	}
	s.reqs.Add(1)
	return s.model, s.pool, StateReady, nil
}

// recordSpeed folds one request's decode speed into the moving average.
func (s *Server) recordSpeed(tokens int, d time.Duration) {
	if tokens < 2 || d <= 0 {
		return
	}
	v := float64(tokens) / d.Seconds()
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tps == 0 {
		s.tps = v
	} else {
		s.tps = tpsSmoothing*v + (1-tpsSmoothing)*s.tps
	}
}

// Info is the body of GET /v1/info.
type Info struct {
	ID                 string `json:"id"`
	Version            string `json:"version"`
	PID                int    `json:"pid"`
	Model              string `json:"model"`
	ModelPath          string `json:"model_path"`
	Architecture       string `json:"architecture,omitempty"`
	ContextLength      int    `json:"context_length,omitempty"`
	TrainContextLength int    `json:"train_context_length,omitempty"`
	VocabSize          int    `json:"vocab_size,omitempty"`
	Params             int64  `json:"params,omitempty"`
	Quantization       string `json:"quantization,omitempty"`
	KVCache            string `json:"kv_cache,omitempty"` // the KV cache's element type: "f16" or "f32"
	// ChatTemplate: the model has a chat template of its own; Tools: it
	// renders tools (ModelInfo). /api/show's capabilities read them.
	ChatTemplate bool `json:"chat_template,omitempty"`
	Tools        bool `json:"tools,omitempty"`
	// Thinking: the model writes its reasoning apart (think tags,
	// harmony), which the answers return as such: Ollama's "thinking"
	// capability.
	Thinking        bool    `json:"thinking,omitempty"`
	Device          string  `json:"device"`
	Threads         int     `json:"threads"`
	Slots           int     `json:"slots"`
	State           State   `json:"state"`
	InFlight        int     `json:"in_flight"`
	Queued          int     `json:"queued"`
	QueueCapacity   int     `json:"queue_capacity"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	Error           string  `json:"error,omitempty"`
	// ShardMode ("pipeline", "tensor"; empty for the whole model),
	// ShardLo, ShardHi: the layers (pipeline) or KV heads (tensor)
	// [lo, hi) a worker of a sharded group holds.
	ShardMode string `json:"shard_mode,omitempty"`
	ShardLo   int    `json:"shard_lo,omitempty"`
	ShardHi   int    `json:"shard_hi,omitempty"`
	// Exchanges are a group head's exchange counters (nil elsewhere).
	Exchanges *ExchangeStats `json:"exchanges,omitempty"`
	// Batch are the step loop's counters (nil for an engine without one,
	// e.g. an external engine).
	Batch *BatchStats `json:"batch,omitempty"`
}

// ExchangeStats are a group head's counters since it connected its
// shards: forward passes, exchanges (a pipeline: one per stage per pass;
// a tensor group: its all-gathers), the time spent in them (waiting for
// the other shards included) and, for a pipeline, the part the stages
// reported computing; Layers is the model's layer count, for the time
// per layer.
type ExchangeStats struct {
	Passes      int64   `json:"passes"`
	Exchanges   int64   `json:"exchanges"`
	RoundTripMs float64 `json:"round_trip_ms"`
	ComputeMs   float64 `json:"compute_ms"`
	Layers      int     `json:"layers"`
}

// exchanger is a Model that heads a group.
type exchanger interface {
	exchangeStats() (ExchangeStats, bool)
}

// batchedModel is a Model with a step loop.
type batchedModel interface {
	batchStats() BatchStats
}

// Info returns a snapshot of the worker's identity, model and load.
func (s *Server) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := Info{
		ID:              s.cfg.ID,
		Version:         Version,
		PID:             os.Getpid(),
		Model:           s.modelName,
		ModelPath:       s.cfg.ModelPath,
		Device:          s.cfg.Device,
		Threads:         s.threads,
		Slots:           s.cfg.Slots,
		State:           s.stateLocked(),
		InFlight:        s.inFlight,
		QueueCapacity:   s.cfg.Queue,
		TokensPerSecond: math.Round(s.tps*100) / 100,
	}
	if s.pool != nil {
		_, in.Queued = s.pool.stats()
	}
	if s.model != nil {
		mi := s.model.Info()
		in.Architecture = mi.Arch
		in.ContextLength = mi.ContextLength
		in.TrainContextLength = mi.TrainContextLength
		in.VocabSize = mi.VocabSize
		in.Params = mi.Params
		in.Quantization = mi.Quantization
		in.KVCache = mi.KVCache
		in.ChatTemplate, in.Tools, in.Thinking = mi.ChatTemplate, mi.Tools, mi.Harmony || mi.ThinkTags
		in.ShardMode, in.ShardLo, in.ShardHi = mi.ShardMode, mi.ShardLo, mi.ShardHi
		if bm, ok := s.model.(batchedModel); ok {
			st := bm.batchStats()
			in.Batch = &st
		}
		if ex, ok := s.model.(exchanger); ok {
			if st, ok := ex.exchangeStats(); ok {
				st.Layers = mi.Layers
				in.Exchanges = &st
			}
		}
	}
	if s.loadErr != nil {
		in.Error = s.loadErr.Error()
	}
	return in
}

// heartbeat builds the current heartbeat.
func (s *Server) heartbeat() Heartbeat {
	in := s.Info()
	port := 0
	if a, ok := s.Addr().(*net.TCPAddr); ok {
		port = a.Port
	}
	return Heartbeat{
		ID:              in.ID,
		PID:             in.PID,
		Port:            port,
		Model:           in.Model,
		ModelPath:       in.ModelPath,
		Device:          in.Device,
		State:           in.State,
		InFlight:        in.InFlight,
		Queued:          in.Queued,
		Slots:           in.Slots,
		TokensPerSecond: in.TokensPerSecond,
		ContextLength:   in.ContextLength,
		Version:         in.Version,
	}
}

var _ io.Closer = (*Server)(nil)

// waitTimeout waits for wg, at most d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

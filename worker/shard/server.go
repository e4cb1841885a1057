package shard

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/spinconn"
	"github.com/rbee-project/rbee/model/engine"
)

// Defaults of ServerConfig and PipelineConfig.
const (
	// DefaultMaxSessions bounds the head sessions one connection keeps
	// caches for: a worker's most slots (256), so a worker's head never
	// loses one. Beyond it the least recently used is dropped (its next
	// pass from a later position then fails with a lost state, and the
	// head starts it again). A cache grows only as its session is used.
	DefaultMaxSessions = 256
	// DefaultIdleTimeout is no bound on the wait for a connection's next
	// pass: a group may sit idle overnight, and a head that finds its
	// connection closed at the next request would fail that request. A
	// head that went away without closing is found by TCP keepalive (Go's
	// default on accepted and dialled connections, libp2p's on streams),
	// and a connection's caches are bounded by MaxSessions.
	DefaultIdleTimeout time.Duration = 0
	// DefaultTimeout bounds one exchange (write a pass, run it, read the
	// result): a prompt chunk on a large model takes seconds.
	DefaultTimeout = 60 * time.Second
	// handshakeTimeout bounds the hello/welcome exchange.
	handshakeTimeout = 10 * time.Second
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Model is a later pipeline stage (engine.LoadShard with Lo > 0) or
	// a tensor member (Mode Tensor, KVLo > 0). Required.
	Model *engine.Model
	// Link is a tensor member's Gatherer (the ShardSpec.Peers it was
	// loaded with). Required for a tensor member; it serves one head at
	// a time.
	Link *MemberLink
	// MaxSessions per connection; 0 means DefaultMaxSessions.
	MaxSessions int
	// MaxFrame caps a received frame; 0 means DefaultMaxFrame.
	MaxFrame int
	// IdleTimeout bounds the wait for a connection's next pass; 0 means
	// none (DefaultIdleTimeout).
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one result; 0 means DefaultTimeout.
	WriteTimeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// OnModelLost, when set, is called with the error of a pass that
	// found the model's file truncated under its mapping
	// (engine.ErrFileChanged): every later pass would fail the same way,
	// so the worker stops itself. The head gets the error as for any
	// failed pass.
	OnModelLost func(error)

	// starOnly (tests) refuses helloPairwise, as a Server of the version
	// before it did.
	starOnly bool
}

// Server runs a later pipeline stage for the first stages that connect to
// it. Each connection is one first stage: it has its own sessions (KV
// caches of this stage's layers), dropped when the connection ends.
// Forward passes of all connections share the stage's Model (they are
// serialised by the engine).
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	info StageInfo

	mu     sync.Mutex
	conns  map[io.ReadWriteCloser]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Model == nil {
		return nil, fmt.Errorf("%w: ServerConfig.Model is required", ErrMismatch)
	}
	lo, hi := cfg.Model.Shard()
	kvLo, kvHi, tensor := cfg.Model.TensorShard()
	switch {
	case tensor && (kvLo == 0 || cfg.Link == nil):
		return nil, fmt.Errorf("%w: a tensor member server runs KV heads from > 0 with its MemberLink (KV heads [%d, %d))", ErrMismatch, kvLo, kvHi)
	case !tensor && lo == 0:
		return nil, fmt.Errorf("%w: a stage server runs a later stage, not layers [0, %d)", ErrMismatch, hi)
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	if cfg.IdleTimeout < 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mi := cfg.Model.Info()
	var inst [8]byte
	_, _ = rand.Read(inst[:])
	info := StageInfo{Lo: uint32(lo), Hi: uint32(hi), Layers: uint32(mi.Layers), Dim: uint32(mi.Dim),
		Vocab: uint32(mi.VocabSize), Instance: binary.BigEndian.Uint64(inst[:])}
	if tensor {
		info.Mode, info.Lo, info.Hi, info.Layers = ModeTensor, uint32(kvLo), uint32(kvHi), uint32(mi.KVHeads)
	}
	return &Server{cfg: cfg, log: log, conns: map[io.ReadWriteCloser]struct{}{}, info: info}, nil
}

// Info describes the stage the Server runs.
func (s *Server) Info() StageInfo { return s.info }

// Serve accepts connections on ln and serves each until ctx ends or the
// Server is closed; it closes ln on return.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || s.isClosed() {
				return nil
			}
			return err
		}
		c = spinconn.Wrap(c, spinconn.DefaultSpin)
		go func() { _ = s.ServeConn(ctx, c) }()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// deadliner is what net.Conn and libp2p streams offer for deadlines.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// ServeConn serves one first stage on conn until it hangs up, breaks the
// protocol, stays idle past IdleTimeout, ctx ends or the Server is closed;
// it closes conn. The error says why (nil for a clean hang-up).
func (s *Server) ServeConn(ctx context.Context, conn io.ReadWriteCloser) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
		s.wg.Done()
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	err := s.serve(ctx, conn)
	if err != nil && !errors.Is(err, io.EOF) && !s.isClosed() && ctx.Err() == nil {
		s.log.Warn("shard connection ended", "err", err)
		return err
	}
	return nil
}

// setRead sets conn's read deadline d ahead; d <= 0 clears it.
func setRead(conn io.ReadWriteCloser, d time.Duration) {
	if dl, ok := conn.(deadliner); ok {
		var t time.Time
		if d > 0 {
			t = time.Now().Add(d)
		}
		_ = dl.SetReadDeadline(t)
	}
}

func setWrite(conn io.ReadWriteCloser, d time.Duration) {
	if dl, ok := conn.(deadliner); ok {
		_ = dl.SetWriteDeadline(time.Now().Add(d))
	}
}

// stageSession is one first-stage session's cache on this stage.
type stageSession struct {
	s    *engine.Session
	used uint64 // pass number of its last use
}

func (s *Server) serve(ctx context.Context, conn io.ReadWriteCloser) error {
	var f frame
	var rbuf, wbuf []byte
	var err error
	setRead(conn, handshakeTimeout)
	if rbuf, err = readFrame(conn, 256, rbuf, &f); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	pairwise := f.typ == frameHello && f.proto == helloPairwise && s.info.Mode == ModeTensor && !s.cfg.starOnly
	if f.typ != frameHello || (f.proto != ProtocolID && !pairwise) {
		setWrite(conn, handshakeTimeout)
		_, _ = writeFrame(conn, &frame{typ: frameError, code: codeBadRequest,
			msg: fmt.Sprintf("want hello for %s", ProtocolID)}, nil)
		return fmt.Errorf("%w: hello for %q (frame type %d)", ErrProtocol, f.proto, f.typ)
	}
	setWrite(conn, handshakeTimeout)
	if wbuf, err = writeFrame(conn, &frame{typ: frameWelcome, info: s.info}, wbuf); err != nil {
		return err
	}
	if s.info.Mode == ModeTensor {
		return s.serveTensor(ctx, conn, &f, rbuf, pairwise)
	}
	m := s.cfg.Model
	b := m.NewBatch()
	sessions := map[uint64]*stageSession{}
	var segs []engine.StageSegment
	var pass uint64
	for {
		setRead(conn, s.cfg.IdleTimeout)
		if rbuf, err = readFrame(conn, s.cfg.MaxFrame, rbuf, &f); err != nil {
			return err
		}
		if f.typ != frameForward {
			return fmt.Errorf("%w: frame type %d where a forward pass was expected", ErrProtocol, f.typ)
		}
		pass++
		start := time.Now()
		out, code, ferr := s.pass(ctx, b, sessions, &segs, &f, pass)
		res := frame{typ: frameResult, id: f.id}
		if ferr != nil {
			res = frame{typ: frameError, id: f.id, code: code, msg: ferr.Error()}
		} else {
			res.data = out
			res.width = s.info.Dim
			if s.info.Hi == s.info.Layers {
				res.width = s.info.Vocab
			}
			res.rows = uint32(len(out) / int(res.width))
			res.compute = uint64(time.Since(start))
		}
		setWrite(conn, s.cfg.WriteTimeout)
		if wbuf, err = writeFrame(conn, &res, wbuf); err != nil {
			return err
		}
	}
}

// pass runs one forward frame on the stage.
func (s *Server) pass(ctx context.Context, b *engine.Batch, sessions map[uint64]*stageSession, segs *[]engine.StageSegment, f *frame, pass uint64) ([]float32, uint8, error) {
	if f.width != s.info.Dim {
		return nil, codeBadRequest, fmt.Errorf("%w: rows of %d values, the model's are %d", ErrProtocol, f.width, s.info.Dim)
	}
	var err error
	if *segs, err = bindSessions(sessions, f.segs, pass, s.cfg.MaxSessions, s.cfg.Model.NewSession, (*segs)[:0]); err != nil {
		return nil, codeBadRequest, err
	}
	out, err := b.StageForward(ctx, *segs, f.data)
	clear(*segs)
	s.checkModelLost(err)
	switch {
	case err == nil:
		return out, 0, nil
	case errors.Is(err, engine.ErrStageState):
		return nil, codeStateLost, err
	case errors.Is(err, engine.ErrShard):
		return nil, codeBadRequest, err
	default:
		return nil, codeInternal, err
	}
}

// checkModelLost tells OnModelLost about a pass that found the model's
// file truncated.
func (s *Server) checkModelLost(err error) {
	if errors.Is(err, engine.ErrFileChanged) && s.cfg.OnModelLost != nil {
		s.cfg.OnModelLost(err)
	}
}

// evictLRU drops the least recently used session not used by pass.
// bindSessions maps a pass's wire segments to this end's Sessions,
// creating (and, past max, evicting the least recently used idle ones)
// as needed; a pass naming more than max sessions is refused.
func bindSessions(sessions map[uint64]*stageSession, fsegs []Segment, pass uint64, max int, newSession func() *engine.Session,
	segs []engine.StageSegment) ([]engine.StageSegment, error) {
	for _, sg := range fsegs {
		ss := sessions[sg.Session]
		if ss == nil {
			if len(sessions) >= max {
				evictLRU(sessions, pass)
			}
			if len(sessions) >= max {
				return segs, fmt.Errorf("%w: more than %d sessions in one pass", ErrProtocol, max)
			}
			ss = &stageSession{s: newSession()}
			sessions[sg.Session] = ss
		}
		ss.used = pass
		segs = append(segs, engine.StageSegment{Session: ss.s, Pos: int(sg.Pos), N: int(sg.N), Logits: sg.Logits})
	}
	return segs, nil
}

func evictLRU(sessions map[uint64]*stageSession, pass uint64) {
	var victim uint64
	oldest := pass
	for id, ss := range sessions {
		if ss.used < oldest {
			victim, oldest = id, ss.used
		}
	}
	if oldest < pass {
		delete(sessions, victim)
	}
}

// Close ends every connection and waits for their handlers. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

package shard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-project/rbee/internal/spinconn"
	"github.com/rbee-project/rbee/model/engine"
)

// Dialer opens a byte stream to one stage: a TCP connection, an upgraded
// HTTP connection to a worker (DialWorker), a libp2p stream.
type Dialer func(ctx context.Context) (io.ReadWriteCloser, error)

// TCPDialer dials addr over TCP. The connection's reads poll briefly
// before they sleep (spinconn): exchanges come in quick succession.
func TCPDialer(addr string) Dialer {
	return func(ctx context.Context) (io.ReadWriteCloser, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return spinconn.Wrap(c, spinconn.DefaultSpin), nil
	}
}

// PipelineConfig configures a Pipeline.
type PipelineConfig struct {
	// Stages dial the later stages, in layer order. Required.
	Stages []Dialer
	// Lo is the first layer of the later stages: the first stage's Hi.
	// Required.
	Lo int
	// Timeout bounds one exchange with one stage (a pass written, run
	// and answered) when ctx has no earlier deadline; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxFrame caps a received frame; 0 means DefaultMaxFrame.
	MaxFrame int
	// Logger receives reconnections; nil discards them.
	Logger *slog.Logger
}

// Stats are a Pipeline's counters since Start.
type Stats struct {
	// Passes is the forward passes sent through the stages; Exchanges the
	// stage round trips they took (one per stage per pass).
	Passes, Exchanges int64
	// RoundTrip is the time of all exchanges (write, stage compute, read);
	// Compute the part the stages spent running their layers, as they
	// report it. RoundTrip − Compute is the cost of the exchanges
	// themselves (encoding, transport, decoding).
	RoundTrip, Compute time.Duration
	// Sent and Received count frame bytes.
	Sent, Received int64
	// Reconnects counts re-established connections after a failure.
	Reconnects int64
}

// Pipeline is the first stage's side of a pipeline-sharded model: an
// engine.Remote that runs each forward pass through the later stages, one
// after the other, over one connection per stage. Give it to
// engine.LoadShard as ShardSpec.Next. After a broken connection the next
// pass reconnects every stage and Epoch changes (the stages' caches are
// gone).
type Pipeline struct {
	cfg PipelineConfig
	log *slog.Logger

	mu     sync.Mutex // one pass at a time; guards everything below
	conns  []*stageConn
	epoch  atomic.Uint64
	broken bool
	closed bool
	stats  Stats
	pub    published // stats as the last pass left them (Stats)
	seq    uint32
}

type stageConn struct {
	c    io.ReadWriteCloser
	info StageInfo
	f    frame // the last result read (its data is the next stage's input)
	rbuf []byte
	wbuf []byte
}

// NewPipeline checks cfg and returns an unconnected Pipeline.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	if len(cfg.Stages) == 0 || cfg.Lo < 1 {
		return nil, fmt.Errorf("%w: a pipeline needs later stages and the first stage's end layer (Lo %d, %d stages)", ErrMismatch, cfg.Lo, len(cfg.Stages))
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pl := &Pipeline{cfg: cfg, log: log}
	pl.epoch.Store(1)
	return pl, nil
}

// Start connects to every stage and checks that they make up the model:
// contiguous layer ranges from Lo to the last layer, one shape.
func (p *Pipeline) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	return p.connect(ctx)
}

// Stages describes the connected stages (after Start).
func (p *Pipeline) Stages() []StageInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]StageInfo, len(p.conns))
	for i, c := range p.conns {
		out[i] = c.info
	}
	return out
}

// connect (re)dials all stages; p.mu is held.
func (p *Pipeline) connect(ctx context.Context) error {
	p.dropConns()
	conns, err := dialGroup(ctx, p.cfg.Stages, ModePipeline, ProtocolID, uint32(p.cfg.Lo), p.cfg.Timeout, p.cfg.MaxFrame)
	if err != nil {
		return err
	}
	p.conns = conns
	p.broken = false
	return nil
}

// dialGroup dials every other end of a sharded group in order and checks,
// from the welcome each sends, that they are shards of mode holding
// contiguous ranges from from to the end (layers for a pipeline, KV heads
// for a tensor group) of one model. On an error no connection stays open.
func dialGroup(ctx context.Context, dialers []Dialer, mode uint8, hello string, from uint32, timeout time.Duration, maxFrame int) ([]*stageConn, error) {
	what, unit := "stage", "layers"
	if mode == ModeTensor {
		what, unit = "member", "KV heads"
	}
	conns := make([]*stageConn, 0, len(dialers))
	fail := func(err error) ([]*stageConn, error) {
		for _, c := range conns {
			c.c.Close()
		}
		return nil, err
	}
	want := from
	for i, dial := range dialers {
		dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		c, err := dial(dctx)
		if err != nil {
			cancel()
			return fail(fmt.Errorf("%w: %s %d: dial: %w", ErrStage, what, i+1, err))
		}
		sc := &stageConn{c: c}
		conns = append(conns, sc)
		_, _, err = sc.roundTrip(dctx, &frame{typ: frameHello, proto: hello}, timeout, maxFrame)
		cancel()
		switch {
		case err == nil && sc.f.typ == frameError && sc.f.code == codeBadRequest && hello != ProtocolID:
			err = fmt.Errorf("%w: %s", errHelloRefused, sc.f.msg)
		case err == nil && sc.f.typ != frameWelcome:
			err = fmt.Errorf("%w: frame type %d where a welcome was expected (%s)", ErrProtocol, sc.f.typ, sc.f.msg)
		}
		if err != nil {
			return fail(fmt.Errorf("%w: %s %d: handshake: %w", ErrStage, what, i+1, err))
		}
		in := sc.f.info
		sc.info = in
		first := conns[0].info
		last := i == len(dialers)-1
		switch {
		case in.Mode != mode:
			return fail(fmt.Errorf("%w: %s %d is a shard of another mode (%d, want %d)", ErrMismatch, what, i+1, in.Mode, mode))
		case in.Lo != want || in.Hi <= in.Lo:
			return fail(fmt.Errorf("%w: %s %d holds %s [%d, %d), want from %d", ErrMismatch, what, i+1, unit, in.Lo, in.Hi, want))
		case in.Layers != first.Layers || in.Dim != first.Dim || in.Vocab != first.Vocab:
			return fail(fmt.Errorf("%w: %s %d is a model of %d %s, dim %d, vocab %d; %s 1's has %d, %d, %d",
				ErrMismatch, what, i+1, in.Layers, unit, in.Dim, in.Vocab, what, first.Layers, first.Dim, first.Vocab))
		case last != (in.Hi == in.Layers):
			return fail(fmt.Errorf("%w: %s %d ends at %s %d of %d", ErrMismatch, what, i+1, unit, in.Hi, in.Layers))
		}
		want = in.Hi
	}
	return conns, nil
}

func (p *Pipeline) dropConns() {
	for _, c := range p.conns {
		c.c.Close()
	}
	p.conns = nil
}

// exchange writes f to sc and reads the answer into sc.f, within the
// Timeout and ctx (whose end breaks the connection).
func (p *Pipeline) exchange(ctx context.Context, sc *stageConn, f *frame) error {
	sent, recv, err := sc.roundTrip(ctx, f, p.cfg.Timeout, p.cfg.MaxFrame)
	p.stats.Sent += sent
	p.stats.Received += recv
	return err
}

// roundTrip writes f and reads the answer into sc.f, within timeout and
// ctx. It returns the bytes written and read.
func (sc *stageConn) roundTrip(ctx context.Context, f *frame, timeout time.Duration, maxFrame int) (sent, recv int64, err error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if dl, ok := sc.c.(interface{ SetDeadline(time.Time) error }); ok {
		_ = dl.SetDeadline(deadline)
	} else {
		t := time.AfterFunc(time.Until(deadline), func() { sc.c.Close() })
		defer t.Stop()
	}
	stop := context.AfterFunc(ctx, func() { sc.c.Close() })
	defer stop()
	if sc.wbuf, err = writeFrame(sc.c, f, sc.wbuf); err != nil {
		return 0, 0, ctxErr(ctx, err)
	}
	sent = int64(len(sc.wbuf))
	if sc.rbuf, err = readFrame(sc.c, maxFrame, sc.rbuf, &sc.f); err != nil {
		return sent, 0, ctxErr(ctx, err)
	}
	return sent, int64(len(sc.rbuf)) + 4, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	// The connection's deadline is ctx's when that is the earlier one; it
	// may fire a moment before ctx reports it.
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	return err
}

// Epoch implements engine.Remote: it changes when a connection broke, so
// the first stage stops trusting its Sessions' caches.
// It takes no lock (a pass holds the lock for its whole exchange, and the
// worker asks while it picks a slot).
func (p *Pipeline) Epoch() uint64 { return p.epoch.Load() }

// Stats returns the counters.
//
// It never waits for a pass: it returns the counters as the last pass (or
// Start) left them. A pass holds the pipeline's lock for as long as a
// stage takes to answer, and the worker's heartbeat reads these: a stage
// that hangs must not silence the head's heartbeats (its node would then
// blame the head).
func (p *Pipeline) Stats() Stats {
	return p.pub.get()
}

// publish makes the counters what Stats returns; p.mu is held.
func (p *Pipeline) publish() {
	p.pub.set(p.stats)
}

// Forward implements engine.Remote: hidden goes through every stage in
// turn, the last stage's logits land in logits. A stage that answers with
// an error fails the pass (wrapping ErrStage, and engine.ErrStageState
// when the stage lost the session's positions); a broken connection also
// fails it, and the next pass reconnects.
func (p *Pipeline) Forward(ctx context.Context, segs []engine.RemoteSegment, hidden, logits []float32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.publish()
	if p.closed {
		return ErrClosed
	}
	if p.broken || p.conns == nil {
		p.stats.Reconnects++
		if err := p.connect(ctx); err != nil {
			p.breakConns()
			return err
		}
	}
	if len(segs) > MaxSegments {
		return fmt.Errorf("%w: %d segments in one pass", ErrProtocol, len(segs))
	}
	p.seq++
	f := frame{typ: frameForward, id: p.seq, segs: make([]Segment, len(segs)), data: hidden}
	rows := 0
	for i, sg := range segs {
		f.segs[i] = Segment{Session: sg.Session, Pos: uint32(sg.Pos), N: uint32(sg.N), Logits: sg.Logits}
		rows += sg.N
	}
	f.rows = uint32(rows)
	f.width = p.conns[0].info.Dim
	p.stats.Passes++
	for i, sc := range p.conns {
		start := time.Now()
		err := p.exchange(ctx, sc, &f)
		p.stats.RoundTrip += time.Since(start)
		p.stats.Exchanges++
		if err != nil {
			p.breakConns()
			return fmt.Errorf("%w: stage %d (layers %d-%d): %w", ErrStage, i+1, sc.info.Lo, sc.info.Hi, err)
		}
		r := &sc.f
		switch {
		case r.typ == frameError && r.code == codeStateLost:
			return fmt.Errorf("%w: stage %d: %w: %s", ErrStage, i+1, engine.ErrStageState, r.msg)
		case r.typ == frameError:
			return fmt.Errorf("%w: stage %d: %s", ErrStage, i+1, r.msg)
		case r.typ != frameResult || r.id != f.id:
			p.breakConns()
			return fmt.Errorf("%w: stage %d: frame type %d, id %d, answering pass %d", ErrProtocol, i+1, r.typ, r.id, f.id)
		}
		p.stats.Compute += time.Duration(r.compute)
		f.data, f.width = r.data, r.width
	}
	if len(f.data) != len(logits) {
		return fmt.Errorf("%w: the last stage returned %d values, want %d", ErrProtocol, len(f.data), len(logits))
	}
	copy(logits, f.data)
	return nil
}

// breakConns drops the connections after a failure: the next pass
// reconnects under a new epoch.
func (p *Pipeline) breakConns() {
	p.dropConns()
	if !p.broken {
		p.epoch.Add(1)
	}
	p.broken = true
}

// Close closes the connections; later passes fail with ErrClosed.
func (p *Pipeline) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.dropConns()
	return nil
}

var _ engine.Remote = (*Pipeline)(nil)

// published holds a group's counters as its last pass left them, under a
// lock a pass takes only to copy them in: Stats reads them without
// waiting for a pass that waits on a hung shard.
type published struct {
	mu sync.Mutex
	s  Stats
}

func (p *published) set(s Stats) {
	p.mu.Lock()
	p.s = s
	p.mu.Unlock()
}

func (p *published) get() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s
}

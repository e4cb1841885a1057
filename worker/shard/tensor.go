package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-project/rbee/model/engine"
)

// Tensor groups: the head (the shard with KV head 0) holds one connection
// to each other shard (member). Per forward pass it sends a begin frame
// (segments and token ids) to every member; each all-gather is a star:
// every member sends its part (a parts frame of one part), the head
// answers each with every shard's part in shard order (a parts frame of
// all); an all-reduce the same, but the head answers with the sum of the
// parts alone (Gatherer.AllReduce). Two latencies per exchange;
// Model.TensorExchanges per pass (two per layer where Wo and Wdown are
// split by columns, four where not).

// MemberLink is a tensor member's engine.Gatherer: the Server plugs the
// head's connection into it while it runs a pass. Give it to
// engine.LoadShard as ShardSpec.Peers and to ServerConfig.Link.
type MemberLink struct {
	mu   sync.Mutex
	conn io.ReadWriteCloser
	seq  uint32
	f    frame
	rbuf []byte
	wbuf []byte
	max  int
	busy bool
	// timeout bounds each gather (the server's WriteTimeout).
	timeout time.Duration
	// pairwise: the head and this member are the whole group and swap
	// parts (helloPairwise); else the head answers with every part or
	// the sum.
	pairwise bool
	out      [1][]float32 // the part a frame sends
	both     [2][]float32 // a pairwise all-gather's parts
	sum      []float32    // a pairwise all-reduce's sum
}

// NewMemberLink returns an unattached MemberLink.
func NewMemberLink() *MemberLink { return &MemberLink{} }

// Begin is the head's call; a member never makes it.
func (l *MemberLink) Begin(context.Context, []engine.RemoteSegment, []int32) error {
	return fmt.Errorf("%w: a tensor member does not begin passes", ErrProtocol)
}

// Epoch is constant: a member's caches live as long as its connection.
func (l *MemberLink) Epoch() uint64 { return 1 }

// AllGather sends part to the head and returns every shard's part.
func (l *MemberLink) AllGather(ctx context.Context, part []float32) ([][]float32, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	parts, err := l.exchange(part)
	if err != nil || !l.pairwise {
		return parts, err
	}
	if len(parts) != 1 {
		return nil, fmt.Errorf("%w: the head sent %d parts where it has one", ErrProtocol, len(parts))
	}
	l.both = [2][]float32{parts[0], part}
	return l.both[:], nil
}

// AllReduce sends part (a partial sum) to the head and returns the sum of
// every shard's: the one the head made, or in a pairwise group the head's
// part plus this one, added here as the head adds them.
func (l *MemberLink) AllReduce(ctx context.Context, part []float32) ([]float32, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	parts, err := l.exchange(part)
	if err != nil {
		return nil, err
	}
	if len(parts) != 1 || len(parts[0]) != len(part) {
		return nil, fmt.Errorf("%w: the head answered an all-reduce of %d values with %d parts", ErrProtocol, len(part), len(parts))
	}
	if !l.pairwise {
		return parts[0], nil
	}
	l.sum = append(l.sum[:0], parts[0]...)
	addInto(l.sum, part)
	return l.sum, nil
}

// addInto adds v to sum element by element.
func addInto(sum, v []float32) {
	for i, x := range v {
		sum[i] += x
	}
}

// exchange sends part to the head and returns the parts of its answer
// (valid until the next exchange). l.mu is held.
func (l *MemberLink) exchange(part []float32) ([][]float32, error) {
	if l.conn == nil {
		return nil, fmt.Errorf("%w: no head connected", ErrStage)
	}
	l.seq++
	if dl, ok := l.conn.(deadliner); ok && l.timeout > 0 {
		_ = dl.SetReadDeadline(time.Now().Add(l.timeout))
		_ = dl.SetWriteDeadline(time.Now().Add(l.timeout))
	}
	var err error
	l.out[0] = part
	if l.wbuf, err = writeFrame(l.conn, &frame{typ: frameParts, id: l.seq, parts: l.out[:]}, l.wbuf); err != nil {
		return nil, err
	}
	if l.rbuf, err = readFrame(l.conn, l.max, l.rbuf, &l.f); err != nil {
		return nil, err
	}
	if l.f.typ != frameParts || l.f.id != l.seq {
		return nil, fmt.Errorf("%w: frame type %d id %d where gather %d was expected", ErrProtocol, l.f.typ, l.f.id, l.seq)
	}
	return l.f.parts, nil
}

func (l *MemberLink) attach(conn io.ReadWriteCloser, maxFrame int, timeout time.Duration, pairwise bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conn, l.max, l.seq, l.timeout, l.pairwise = conn, maxFrame, 0, timeout, pairwise
}

// serveTensor runs the passes a tensor head begins on conn.
func (s *Server) serveTensor(ctx context.Context, conn io.ReadWriteCloser, f *frame, rbuf []byte, pairwise bool) error {
	link := s.cfg.Link
	if !link.tryAcquire() {
		return fmt.Errorf("%w: this tensor member already serves a head", ErrProtocol)
	}
	defer link.release()
	link.attach(conn, s.cfg.MaxFrame, s.cfg.WriteTimeout, pairwise)
	defer link.attach(nil, 0, 0, false)
	m := s.cfg.Model
	b := m.NewBatch()
	sessions := map[uint64]*stageSession{}
	var segs []engine.StageSegment
	var pass uint64
	var err error
	for {
		setRead(conn, s.cfg.IdleTimeout)
		if rbuf, err = readFrame(conn, s.cfg.MaxFrame, rbuf, f); err != nil {
			return err
		}
		if f.typ != frameBegin {
			return fmt.Errorf("%w: frame type %d where a begin was expected", ErrProtocol, f.typ)
		}
		pass++
		var err error
		if segs, err = bindSessions(sessions, f.segs, pass, s.cfg.MaxSessions, m.NewSession, segs[:0]); err != nil {
			_, _ = writeFrame(conn, &frame{typ: frameError, id: f.id, code: codeBadRequest, msg: err.Error()}, nil)
			return err
		}
		setRead(conn, s.cfg.WriteTimeout)
		setWrite(conn, s.cfg.WriteTimeout)
		link.mu.Lock()
		link.seq = 0 // gathers are numbered within a pass
		link.mu.Unlock()
		if err := b.TensorForward(ctx, segs, f.ids); err != nil {
			s.checkModelLost(err)
			// The head waits for this member's part: tell it why, then
			// hang up (the head reconnects the group).
			_, _ = writeFrame(conn, &frame{typ: frameError, id: f.id, code: codeInternal, msg: err.Error()}, nil)
			drainUnread(conn)
			return err
		}
	}
}

// drainUnread reads and drops what the head has sent until it hangs up
// (it does on an error frame), for at most drainFor: closing a TCP
// connection with unread data resets it, and a reset can cost the head
// the error frame (a pairwise head's part may be on its way).
func drainUnread(conn io.ReadWriteCloser) {
	setRead(conn, drainFor)
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, drainMax))
}

// drainFor and drainMax bound drainUnread: a head reads the error frame
// and hangs up at once; what it may have sent meanwhile is one part.
const (
	drainFor = time.Second
	drainMax = 4 << 20
)

func (l *MemberLink) tryAcquire() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy {
		return false
	}
	l.busy = true
	return true
}

func (l *MemberLink) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.busy = false
}

// TensorGroupConfig configures a TensorGroup.
type TensorGroupConfig struct {
	// Members dial the other shards, in KV-head order. Required.
	Members []Dialer
	// KVHi is the head's end KV head: the first member's KVLo. Required.
	KVHi int
	// Timeout bounds each exchange; 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxFrame caps a received frame; 0 means DefaultMaxFrame.
	MaxFrame int
	// Logger; nil discards.
	Logger *slog.Logger

	// starOnly (tests) says the star's hello to a lone member, as a head
	// of the version before helloPairwise did.
	starOnly bool
}

// pairwiseEarlyMax is the largest frame the two sides of a pairwise
// exchange both write before either reads: under the socket buffers of a
// fresh TCP connection (Linux starts a receive buffer at 128 KiB) and of
// a libp2p stream, so writes that cross cannot block each other. A larger
// part (the logits, a prompt chunk's rows) goes after the head has read
// the member's.
const pairwiseEarlyMax = 32 << 10

// TensorGroup is a tensor head's engine.Gatherer: it holds a connection
// to every member. After a broken connection (or a member's error) the
// next pass reconnects every member and Epoch changes.
type TensorGroup struct {
	cfg TensorGroupConfig
	log *slog.Logger

	mu      sync.Mutex // one pass at a time
	members []*stageConn
	epoch   atomic.Uint64
	broken  bool
	closed  bool
	seq     uint32 // pass
	gseq    uint32 // gather within the pass
	parts   [][]float32
	sum     []float32 // an all-reduce's sum, reused
	stats   Stats
	pub     published // stats as the last pass left them (Stats)
	// pairwise: the group is the head and one member, which swap parts
	// (helloPairwise); else the head answers every member.
	pairwise bool
	own      [1][]float32 // the head's part, in a pairwise frame
	// refused: the member refused helloPairwise once (an older version);
	// reconnections go straight to the star.
	refused bool
}

// watch closes the member connections if ctx ends before the returned
// stop is called: a cancelled pass does not wait for its deadline.
func (g *TensorGroup) watch(ctx context.Context) func() bool {
	members := g.members
	return context.AfterFunc(ctx, func() {
		for _, sc := range members {
			sc.c.Close()
		}
	})
}

// NewTensorGroup checks cfg and returns an unconnected TensorGroup.
func NewTensorGroup(cfg TensorGroupConfig) (*TensorGroup, error) {
	if len(cfg.Members) == 0 || cfg.KVHi < 1 {
		return nil, fmt.Errorf("%w: a tensor group needs members and the head's KV-head end (KVHi %d, %d members)", ErrMismatch, cfg.KVHi, len(cfg.Members))
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
	tg := &TensorGroup{cfg: cfg, log: log}
	tg.epoch.Store(1)
	return tg, nil
}

// Start connects to every member and checks that they cover the KV heads
// from KVHi to the last, with one shape.
func (g *TensorGroup) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	return g.connect(ctx)
}

func (g *TensorGroup) connect(ctx context.Context) error {
	g.drop()
	// A head with one member asks to swap parts (helloPairwise); a member
	// of an older version refuses, and the head dials it again for the
	// star.
	pairwise := len(g.cfg.Members) == 1 && !g.cfg.starOnly && !g.refused
	hello := ProtocolID
	if pairwise {
		hello = helloPairwise
	}
	conns, err := dialGroup(ctx, g.cfg.Members, ModeTensor, hello, uint32(g.cfg.KVHi), g.cfg.Timeout, g.cfg.MaxFrame)
	if pairwise && errors.Is(err, errHelloRefused) {
		g.log.Info("tensor member refused the pairwise exchange (an older version): using the star", "err", err)
		pairwise, g.refused = false, true
		conns, err = dialGroup(ctx, g.cfg.Members, ModeTensor, ProtocolID, uint32(g.cfg.KVHi), g.cfg.Timeout, g.cfg.MaxFrame)
	}
	if err != nil {
		return err
	}
	g.members = conns
	g.pairwise = pairwise
	g.broken = false
	g.parts = make([][]float32, len(conns)+1)
	return nil
}

func (g *TensorGroup) drop() {
	for _, c := range g.members {
		c.c.Close()
	}
	g.members = nil
}

func (g *TensorGroup) breakGroup() {
	g.drop()
	if !g.broken {
		g.epoch.Add(1)
	}
	g.broken = true
}

// Epoch implements engine.Gatherer.
// It takes no lock: a pass holds it for its exchanges.
func (g *TensorGroup) Epoch() uint64 { return g.epoch.Load() }

// Stats returns the counters: Passes, Exchanges (all-gathers), RoundTrip
// (time the head spent in them, waiting for the members included).
//
// It never waits for an exchange: it returns the counters as the last
// pass or exchange left them (an exchange holds the group's lock for as
// long as a member takes to answer, and the head's heartbeat reads these;
// see Pipeline.Stats).
func (g *TensorGroup) Stats() Stats {
	return g.pub.get()
}

// publish makes the counters what Stats returns; g.mu is held.
func (g *TensorGroup) publish() {
	g.pub.set(g.stats)
}

// deadline sets every member connection's deadline for the next exchange.
func (g *TensorGroup) deadline(ctx context.Context) {
	d := time.Now().Add(g.cfg.Timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	for _, sc := range g.members {
		if dl, ok := sc.c.(interface{ SetDeadline(time.Time) error }); ok {
			_ = dl.SetDeadline(d)
		}
	}
}

// Begin implements engine.Gatherer: it (re)connects if needed and sends
// the pass's rows to every member.
func (g *TensorGroup) Begin(ctx context.Context, segs []engine.RemoteSegment, ids []int32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	defer g.publish()
	if g.closed {
		return ErrClosed
	}
	if g.broken || g.members == nil {
		g.stats.Reconnects++
		if err := g.connect(ctx); err != nil {
			g.breakGroup()
			return err
		}
	}
	if len(segs) > MaxSegments || len(ids) > MaxRows {
		return fmt.Errorf("%w: %d segments, %d rows in one pass", ErrProtocol, len(segs), len(ids))
	}
	defer g.watch(ctx)()
	g.seq++
	g.gseq = 0
	g.stats.Passes++
	f := frame{typ: frameBegin, id: g.seq, segs: make([]Segment, len(segs)), ids: ids}
	for i, sg := range segs {
		f.segs[i] = Segment{Session: sg.Session, Pos: uint32(sg.Pos), N: uint32(sg.N), Logits: sg.Logits}
	}
	g.deadline(ctx)
	for i, sc := range g.members {
		var err error
		if sc.wbuf, err = writeFrame(sc.c, &f, sc.wbuf); err != nil {
			g.breakGroup()
			return fmt.Errorf("%w: member %d: %w", ErrStage, i+1, err)
		}
		g.stats.Sent += int64(len(sc.wbuf))
	}
	return nil
}

// AllGather implements engine.Gatherer: it collects every member's part,
// then sends all of them to every member.
func (g *TensorGroup) AllGather(ctx context.Context, part []float32) ([][]float32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	defer g.publish()
	return g.exchange(ctx, part, false, func() [][]float32 { return g.parts })
}

// AllReduce implements engine.Gatherer: it collects every member's partial
// sum, adds them to part in shard order and sends every member the sum
// alone (one hidden state, not one per shard). Every shard then holds the
// same bits.
func (g *TensorGroup) AllReduce(ctx context.Context, part []float32) ([]float32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	defer g.publish()
	var sum []float32
	_, err := g.exchange(ctx, part, true, func() [][]float32 {
		sum = append(g.sum[:0], part...)
		for _, p := range g.parts[1:] {
			for i, v := range p {
				sum[i] += v
			}
		}
		g.sum = sum
		return [][]float32{sum}
	})
	if err != nil {
		return nil, err
	}
	return sum, nil
}

// exchange collects every member's part (each the width of part when
// same), then sends every member what answer returns. g.mu is held.
func (g *TensorGroup) exchange(ctx context.Context, part []float32, same bool, answer func() [][]float32) ([][]float32, error) {
	if g.members == nil {
		return nil, fmt.Errorf("%w: the group is not connected", ErrStage)
	}
	start := time.Now()
	defer func() { g.stats.RoundTrip += time.Since(start); g.stats.Exchanges++ }()
	defer g.watch(ctx)()
	g.gseq++
	g.deadline(ctx)
	g.parts[0] = part
	fail := func(i int, err error) ([][]float32, error) {
		in := g.members[i].info
		g.breakGroup()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("%w: member %d (KV heads %d-%d): %w", ErrStage, i+1, in.Lo, in.Hi, err)
	}
	// Pairwise: the head's part goes to the member as soon as it is
	// made (when small enough to cross the member's), and the head
	// assembles or sums the two itself.
	sendOwn := func() error {
		sc := g.members[0]
		g.own[0] = part
		var err error
		sc.wbuf, err = writeFrame(sc.c, &frame{typ: frameParts, id: g.gseq, parts: g.own[:]}, sc.wbuf)
		g.stats.Sent += int64(len(sc.wbuf))
		return err
	}
	early := g.pairwise && partsFrameLen(len(part)) <= pairwiseEarlyMax
	if early {
		if err := sendOwn(); err != nil {
			return fail(0, err)
		}
	}
	for i, sc := range g.members {
		var err error
		if sc.rbuf, err = readFrame(sc.c, g.cfg.MaxFrame, sc.rbuf, &sc.f); err != nil {
			return fail(i, err)
		}
		g.stats.Received += int64(len(sc.rbuf)) + 4
		switch {
		case sc.f.typ == frameError:
			return fail(i, fmt.Errorf("%s", sc.f.msg))
		case sc.f.typ != frameParts || sc.f.id != g.gseq || len(sc.f.parts) != 1:
			return fail(i, fmt.Errorf("%w: frame type %d id %d where gather %d was expected", ErrProtocol, sc.f.typ, sc.f.id, g.gseq))
		case same && len(sc.f.parts[0]) != len(part):
			return fail(i, fmt.Errorf("%w: a partial sum of %d values where %d were expected (is every shard of the group on this version, with the same Gather setting?)", ErrProtocol, len(sc.f.parts[0]), len(part)))
		}
		g.parts[i+1] = sc.f.parts[0]
	}
	if g.pairwise {
		if !early {
			if err := sendOwn(); err != nil {
				return fail(0, err)
			}
		}
		answer()
		return g.parts, nil
	}
	out := frame{typ: frameParts, id: g.gseq, parts: answer()}
	for i, sc := range g.members {
		var err error
		if sc.wbuf, err = writeFrame(sc.c, &out, sc.wbuf); err != nil {
			return fail(i, err)
		}
		g.stats.Sent += int64(len(sc.wbuf))
	}
	return g.parts, nil
}

// Close closes the connections; later passes fail with ErrClosed.
func (g *TensorGroup) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.drop()
	return nil
}

var (
	_ engine.Gatherer = (*TensorGroup)(nil)
	_ engine.Gatherer = (*MemberLink)(nil)
)

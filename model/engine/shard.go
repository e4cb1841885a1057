package engine

import (
	"context"
	"errors"
	"fmt"
)

// Pipeline shards: one model split into stages by layer range. The first
// stage (layers [0, hi)) holds the token embedding, the tokenizer and the
// Sessions that generate; each later stage holds its layers' weights and,
// per first-stage Session, a KV cache of its layers; the last stage also
// holds the output norm and the output matrix. A forward pass runs the
// first stage's layers, hands the hidden states of its rows to the later
// stages through a Remote, and gets back the logits of the rows that want
// them. The later stages run exactly the float operations of the unsharded
// model in the same order, and hidden states cross as float32, so sharded
// and unsharded runs produce identical logits (TestPipelineMatchesWhole).

var (
	// ErrShard: the call needs a part of the model this shard does not
	// hold (a later stage generating, a first stage asked for embeddings),
	// or the shard spec or a stage's input is malformed.
	ErrShard = errors.New("engine: not available on this shard")
	// ErrStageState: a later stage does not hold the positions the first
	// stage's Session says it evaluated (the stage restarted or was
	// reconnected); the Session is emptied, and its next generation
	// evaluates its whole prompt again.
	ErrStageState = errors.New("engine: a shard of the group lost its session state")
)

// ShardSpec selects the layers a Model holds. The zero value is the whole
// model.
type ShardSpec struct {
	// Mode is Pipeline (the zero value) or Tensor.
	Mode ShardMode
	// Lo and Hi (Pipeline): the layer range [Lo, Hi); Hi 0 means the last
	// layer.
	Lo, Hi int
	// Next (Pipeline) runs the later stages. Required for a first stage
	// (Lo 0) that does not hold every layer; unused otherwise.
	Next Remote
	// KVLo and KVHi (Tensor): the KV heads [KVLo, KVHi) this shard
	// computes, with their query heads and the same fraction of the rows
	// of the other matrices (see tensor.go). The shard with KVLo 0 is the
	// group's head: it generates.
	KVLo, KVHi int
	// Peers (Tensor) exchanges activations with the group's other shards.
	Peers Gatherer
	// Gather (Tensor) splits every matrix by output rows and all-gathers
	// (four exchanges per layer) instead of all-reducing partial sums of
	// Wo and Wdown (two): the logits are then bit-identical to the whole
	// model's. Every shard of a group must be loaded with the same value.
	Gather bool
}

// Remote runs the later stages of a pipeline for a first stage. Its
// implementations carry hidden states to other processes (see
// worker/shard).
type Remote interface {
	// Forward runs the later stages over hidden (one row of the model's
	// embedding length per position, segment after segment, in the order
	// of segs) and writes into logits the logits of the last row of each
	// segment with Logits set, in order (vocabulary-sized rows).
	Forward(ctx context.Context, segs []RemoteSegment, hidden, logits []float32) error
	// Epoch changes whenever the later stages may have lost their caches
	// (a reconnection): a Session whose cache was built under another
	// epoch is treated as empty.
	Epoch() uint64
}

// RemoteSegment is one Session's rows in a forward pass handed to the
// later stages: N positions from Pos on (the stage drops what its cache
// holds from Pos on first: a rewound Session).
type RemoteSegment struct {
	Session uint64
	Pos, N  int
	Logits  bool
}

// StageSegment is one Session's rows in a later stage's forward pass
// (StageForward). Session is a Session of the stage's Model, which keeps
// the KV cache of the stage's layers for one first-stage Session.
type StageSegment struct {
	Session *Session
	Pos, N  int
	Logits  bool
}

// LoadShard opens a GGUF model file and prepares the layers of spec: the
// other layers' tensors are not read (their mapped pages are not
// touched), the token embedding only by the first stage, the output norm
// and matrix only by the last.
func LoadShard(path string, spec ShardSpec, opts Options) (*Model, error) {
	f, err := openGGUF(path)
	if err != nil {
		return nil, err
	}
	m, err := newModel(f, path, opts, spec)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func (m *Model) setShard(spec ShardSpec) error {
	m.heads, m.kvHeads = m.hp.nHead, m.hp.nHeadKV
	switch spec.Mode {
	case Pipeline:
	case Tensor:
		if m.hp.nExpert > 0 {
			return fmt.Errorf("%w: a mixture-of-experts model splits by layers (pipeline), not by heads", ErrShard)
		}
		return m.setTensor(spec)
	default:
		return fmt.Errorf("%w: shard mode %d", ErrShard, spec.Mode)
	}
	n := m.hp.nLayer
	lo, hi := spec.Lo, spec.Hi
	if hi == 0 {
		hi = n
	}
	if lo < 0 || lo >= hi || hi > n {
		return fmt.Errorf("%w: layer range [%d, %d) of a %d-layer model", ErrShard, spec.Lo, spec.Hi, n)
	}
	if lo == 0 && hi < n && spec.Next == nil {
		return fmt.Errorf("%w: a first stage of layers [0, %d) of %d needs the later stages (ShardSpec.Next)", ErrShard, hi, n)
	}
	m.lo, m.hi = lo, hi
	if lo == 0 && hi < n {
		m.next = spec.Next
	}
	return nil
}

// whole reports whether the Model holds every layer.
func (m *Model) whole() bool { return m.lo == 0 && m.hi == m.hp.nLayer && m.tp == nil }

// generates reports whether the Model's Sessions generate: the whole
// model, a pipeline's first stage, a tensor group's head.
func (m *Model) generates() bool { return m.lo == 0 && (m.tp == nil || m.tp.head) }

// Shard returns the layer range the Model holds ([0, Layers) when whole).
func (m *Model) Shard() (lo, hi int) { return m.lo, m.hi }

// StageForward runs a later stage's layers over hidden (rows of the
// model's embedding length, segment after segment) for the Sessions of
// segs (distinct Sessions of this Model; each Session's cache is cut to
// Pos first, and Pos must not exceed what it holds). It returns the
// output hidden states (same shape) on a middle stage, and the logits of
// the last row of each segment with Logits set on the last stage. The
// slice belongs to b and is valid until its next use.
func (b *Batch) StageForward(ctx context.Context, segs []StageSegment, hidden []float32) ([]float32, error) {
	m := b.m
	hp := &m.hp
	if m.lo == 0 {
		return nil, fmt.Errorf("%w: the first stage evaluates tokens, not hidden states", ErrShard)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("%w: no segments", ErrShard)
	}
	rows, err := m.checkSegments(segs)
	if err != nil {
		return nil, err
	}
	if len(hidden) != rows*hp.dim {
		return nil, fmt.Errorf("%w: %d hidden values for %d rows of %d", ErrShard, len(hidden), rows, hp.dim)
	}
	if len(b.zeros) < rows {
		b.zeros = make([]int32, rows)
	}
	b.plan = b.plan[:0]
	for _, sg := range segs {
		sg.Session.tokens = sg.Session.tokens[:sg.Pos]
		b.plan = append(b.plan, segment{s: sg.Session, ids: b.zeros[:sg.N], logits: sg.Logits})
	}
	n, nl, err := b.layers(ctx, b.plan, hidden)
	clear(b.plan)
	if err != nil {
		return nil, err
	}
	if m.output != nil {
		return b.logits[:nl*hp.vocab], nil
	}
	return b.x[:n*hp.dim], nil
}

// checkSegments checks the segments of a later stage's or a tensor
// member's pass against m and returns their rows: each a Session of m,
// given once, within the context, starting at or before what it holds
// and where its windowed layers still hold the first query's window.
func (m *Model) checkSegments(segs []StageSegment) (rows int, err error) {
	for i, sg := range segs {
		switch {
		case sg.Session == nil || sg.Session.m != m:
			return 0, fmt.Errorf("%w: segment %d: not a Session of this Model", ErrShard, i)
		case sg.N < 1 || sg.Pos < 0 || sg.Pos+sg.N > m.hp.nCtx:
			return 0, fmt.Errorf("%w: segment %d: positions [%d, %d) outside the context of %d", ErrShard, i, sg.Pos, sg.Pos+sg.N, m.hp.nCtx)
		case sg.Pos > len(sg.Session.tokens):
			return 0, fmt.Errorf("%w: session holds %d positions, asked to evaluate from %d", ErrStageState, len(sg.Session.tokens), sg.Pos)
		case !sg.Session.holdsWindow(sg.Pos):
			return 0, fmt.Errorf("%w: session's windowed layers hold positions from %d, too few to evaluate from %d (window %d)", ErrStageState, sg.Session.base, sg.Pos, m.hp.swaWindow)
		}
		for _, o := range segs[:i] {
			if o.Session == sg.Session {
				return 0, fmt.Errorf("%w: segment %d: Session given twice", ErrShard, i)
			}
		}
		rows += sg.N
	}
	return rows, nil
}

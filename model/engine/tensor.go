package engine

import (
	"context"
	"fmt"

	"github.com/rbee-project/rbee/model/quant"
)

// Tensor shards: every shard holds a slice of every layer. A shard owns
// the KV heads [KVLo, KVHi) (and the query heads of their groups) and the
// same fraction of the output rows of Wo, the FFN gate/up (FFN rows),
// Wdown and the output matrix. Every matrix is split by output rows, so
// every dot product is computed whole, by one shard, exactly as the
// unsharded model computes it; the shards all-gather the attention
// output, the Wo rows, the SwiGLU activations and the Wdown rows (four
// exchanges per layer) and the logits at the end. Logits are therefore
// bit-identical to the whole model's (TestTensorMatchesWhole). The usual
// scheme (Wo and Wdown split by input columns, two all-reduces of partial
// sums per layer) exchanges half as often but sums in another order, so it
// matches only within a tolerance.

// ShardMode selects how a model is split.
type ShardMode int

const (
	// Pipeline: each shard holds a range of layers (ShardSpec.Lo, Hi).
	Pipeline ShardMode = iota
	// Tensor: each shard holds a slice of every layer (ShardSpec.KVLo,
	// KVHi).
	Tensor
)

// Gatherer exchanges activations among the shards of a tensor-parallel
// group. Every shard calls AllGather the same number of times in the same
// order during a forward pass.
type Gatherer interface {
	// Begin, called by the head (the shard with KV head 0) before each
	// forward pass, hands the other shards the pass's rows: segments and
	// their token ids, in order. They run it with Batch.TensorForward.
	Begin(ctx context.Context, segs []RemoteSegment, ids []int32) error
	// AllGather sends this shard's part and returns every shard's, in
	// shard order (own included); rows of the activation are the same in
	// every part, widths may differ. The slices are valid until the next
	// call.
	AllGather(ctx context.Context, part []float32) ([][]float32, error)
	// Epoch changes whenever the other shards may have lost their caches
	// (see Remote.Epoch).
	Epoch() uint64
}

// TensorShard reports the KV heads [kvLo, kvHi) of a tensor shard; ok is
// false for any other Model.
func (m *Model) TensorShard() (kvLo, kvHi int, ok bool) {
	if m.tp == nil {
		return 0, 0, false
	}
	return m.tp.kvLo, m.tp.kvHi, true
}

// tensorSplit is a tensor shard's slice of the model.
type tensorSplit struct {
	g                  Gatherer
	head               bool
	kvLo, kvHi         int
	dLo, dHi, fLo, fHi int // rows of Wo and Wdown (dim), of gate and up (ff)
	vLo, vHi           int // rows of the output matrix (vocabulary)
	qLo, qHi, kLo, kHi int // rows of Wq, of Wk and Wv
	nKV                int
}

// share is the shard's part [lo, hi) of n rows when KV heads [kvLo, kvHi)
// of nKV are its: the partition by kv-head fraction, so the shards' parts
// tile [0, n) exactly.
func share(n, kvLo, kvHi, nKV int) (int, int) { return n * kvLo / nKV, n * kvHi / nKV }

func (m *Model) setTensor(spec ShardSpec) error {
	hp := &m.hp
	if spec.Lo != 0 || spec.Hi != 0 {
		return fmt.Errorf("%w: a tensor shard holds every layer (Lo, Hi must be 0)", ErrShard)
	}
	if spec.KVLo < 0 || spec.KVLo >= spec.KVHi || spec.KVHi > hp.nHeadKV {
		return fmt.Errorf("%w: KV heads [%d, %d) of %d", ErrShard, spec.KVLo, spec.KVHi, hp.nHeadKV)
	}
	if spec.Peers == nil {
		return fmt.Errorf("%w: a tensor shard needs its group (ShardSpec.Peers)", ErrShard)
	}
	group := hp.nHead / hp.nHeadKV
	t := &tensorSplit{g: spec.Peers, head: spec.KVLo == 0, kvLo: spec.KVLo, kvHi: spec.KVHi, nKV: hp.nHeadKV}
	t.dLo, t.dHi = share(hp.dim, spec.KVLo, spec.KVHi, hp.nHeadKV)
	t.fLo, t.fHi = share(hp.ff, spec.KVLo, spec.KVHi, hp.nHeadKV)
	t.qLo, t.qHi = spec.KVLo*group*hp.headDim, spec.KVHi*group*hp.headDim
	t.kLo, t.kHi = spec.KVLo*hp.headDim, spec.KVHi*hp.headDim
	if t.dHi == t.dLo || t.fHi == t.fLo {
		return fmt.Errorf("%w: KV heads [%d, %d) of %d leave no rows of %d or %d", ErrShard, spec.KVLo, spec.KVHi, hp.nHeadKV, hp.dim, hp.ff)
	}
	m.lo, m.hi = 0, hp.nLayer
	m.heads, m.kvHeads = (spec.KVHi-spec.KVLo)*group, spec.KVHi-spec.KVLo
	m.tp = t
	return nil
}

// rowSlice returns rows [lo, hi) of mat (no copy, no page touched). A
// slice of a mapped tensor is repacked like a whole one (repackWeights),
// under a name that says its rows, so a shard's rows give what the whole
// model's give, bit for bit, whichever kernel computes them.
func (m *Model) rowSlice(mat *quant.Matrix, lo, hi int) (*quant.Matrix, error) {
	rb, err := mat.Type.RowBytes(mat.Cols)
	if err != nil {
		return nil, err
	}
	s := &quant.Matrix{Type: mat.Type, Rows: hi - lo, Cols: mat.Cols, Data: mat.Data[lo*rb : hi*rb]}
	if t, ok := m.src[mat]; ok {
		st := *t
		st.Name = fmt.Sprintf("%s[rows %d:%d]", t.Name, lo, hi)
		m.src[s] = &st
		delete(m.src, mat)
	}
	return s, nil
}

// sliceTensors cuts the loaded layers and output to the shard's rows.
func (m *Model) sliceTensors() error {
	t := m.tp
	t.vLo, t.vHi = share(m.hp.vocab, t.kvLo, t.kvHi, t.nKV)
	if t.vHi == t.vLo {
		return fmt.Errorf("%w: no vocabulary rows for KV heads [%d, %d)", ErrShard, t.kvLo, t.kvHi)
	}
	var err error
	if m.output, err = m.rowSlice(m.output, t.vLo, t.vHi); err != nil {
		return err
	}
	for i := range m.layers {
		l := &m.layers[i]
		for _, s := range []struct {
			p      **quant.Matrix
			lo, hi int
		}{
			{&l.wq, t.qLo, t.qHi}, {&l.wk, t.kLo, t.kHi}, {&l.wv, t.kLo, t.kHi},
			{&l.wo, t.dLo, t.dHi}, {&l.wGate, t.fLo, t.fHi}, {&l.wUp, t.fLo, t.fHi}, {&l.wDown, t.dLo, t.dHi},
		} {
			if *s.p, err = m.rowSlice(*s.p, s.lo, s.hi); err != nil {
				return err
			}
		}
		if l.bq != nil {
			l.bq = l.bq[t.qLo:t.qHi]
		}
		if l.bk != nil {
			l.bk = l.bk[t.kLo:t.kHi]
		}
		if l.bv != nil {
			l.bv = l.bv[t.kLo:t.kHi]
		}
	}
	return nil
}

// gather all-gathers part (rows × this shard's width) into full (rows ×
// the whole width), each shard's columns in shard order.
func (b *Batch) gather(ctx context.Context, part, full []float32, rows int) error {
	parts, err := b.m.tp.g.AllGather(ctx, part)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStageState, err)
	}
	width := len(full) / rows
	off := 0
	for _, p := range parts {
		w := len(p) / rows
		if w*rows != len(p) || off+w > width {
			return fmt.Errorf("%w: a shard sent %d values for %d rows", ErrShard, len(p), rows)
		}
		for i := 0; i < rows; i++ {
			copy(full[i*width+off:i*width+off+w], p[i*w:(i+1)*w])
		}
		off += w
	}
	if off != width {
		return fmt.Errorf("%w: gathered %d of %d columns", ErrShard, off, width)
	}
	return nil
}

// tensorForward is forward on a tensor shard: the head first tells the
// other shards the rows. A failure empties the Sessions of segs (the
// other shards may not hold what they say).
func (b *Batch) tensorForward(ctx context.Context, segs []segment) error {
	m := b.m
	var err error
	if m.tp.head {
		epoch := m.tp.g.Epoch()
		b.remote, b.tids = b.remote[:0], b.tids[:0]
		for i := range segs {
			sg := &segs[i]
			if len(sg.s.tokens) > 0 && sg.s.epoch != epoch {
				err = fmt.Errorf("%w: the group was reconnected since session %d was evaluated", ErrStageState, sg.s.id)
			}
			sg.s.epoch = epoch
			b.remote = append(b.remote, RemoteSegment{Session: sg.s.id, Pos: len(sg.s.tokens), N: len(sg.ids), Logits: sg.logits})
			b.tids = append(b.tids, sg.ids...)
		}
		if err == nil {
			err = m.tp.g.Begin(ctx, b.remote, b.tids)
		}
	}
	if err == nil {
		_, _, err = b.layers(ctx, segs, nil)
	}
	if err != nil {
		for i := range segs {
			s := segs[i].s
			s.tokens = s.tokens[:0]
		}
	}
	return err
}

// TensorForward runs a forward pass the head began (Gatherer.Begin) on a
// tensor shard that is not the head: segs name this shard's Sessions (one
// per head Session; each cut to Pos first, which must not exceed what it
// holds) and ids their rows' tokens, in order.
func (b *Batch) TensorForward(ctx context.Context, segs []StageSegment, ids []int32) error {
	m := b.m
	if m.tp == nil || m.tp.head {
		return fmt.Errorf("%w: TensorForward runs on a tensor shard other than the head", ErrShard)
	}
	rows, err := m.checkSegments(segs)
	if err != nil {
		return err
	}
	if len(segs) == 0 || rows != len(ids) {
		return fmt.Errorf("%w: %d ids for %d rows", ErrShard, len(ids), rows)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= m.hp.vocab {
			return fmt.Errorf("%w: token id %d outside vocabulary of %d", ErrBadRequest, id, m.hp.vocab)
		}
	}
	b.plan = b.plan[:0]
	off := 0
	for _, sg := range segs {
		sg.Session.tokens = sg.Session.tokens[:sg.Pos]
		b.plan = append(b.plan, segment{s: sg.Session, ids: ids[off : off+sg.N], logits: sg.Logits})
		off += sg.N
	}
	_, _, err = b.layers(ctx, b.plan, nil)
	clear(b.plan)
	return err
}

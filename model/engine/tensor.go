package engine

import (
	"context"
	"fmt"

	"github.com/rbee-project/rbee/model/quant"
)

// Tensor shards: every shard holds a slice of every layer. A shard owns
// the KV heads [KVLo, KVHi) (and the query heads of their groups) and the
// same fraction of the FFN rows (gate and up) and of the output matrix's
// rows. Wo and Wdown are split by input columns where the split falls on
// the weights' block boundaries (Megatron's scheme): each shard multiplies
// its own heads' attention output and its own SwiGLU activations into a
// partial hidden state, and the shards all-reduce those (two exchanges
// per layer, each the width of the hidden state). Every shard adds the
// parts in shard order, so all shards hold the same hidden state bit for
// bit; it differs from the unsharded model's by the order of the sums
// only, within float rounding (TestTensorMatchesWhole checks greedy ids
// and log-probabilities). Where a split does not fall on block boundaries,
// or with ShardSpec.Gather, that matrix is split by output rows instead:
// every dot product is computed whole, by one shard, exactly as the
// unsharded model computes it, and the shards all-gather its input and
// its output (two exchanges for each such matrix); with Gather on both,
// the logits are bit-identical to the whole model's. The logits are
// all-gathered at the end.

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
	// AllReduce sends this shard's partial sum (every shard's part has
	// the same length) and returns the sum of every shard's, added in
	// shard order, the same bits on every shard (a group's head adds them
	// and sends the sum alone). The slice is valid until the next call.
	AllReduce(ctx context.Context, part []float32) ([]float32, error)
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

// TensorExchanges is how many exchanges (Gatherer.AllGather and
// AllReduce calls) a tensor shard makes per forward pass: two per layer for each of Wo and
// Wdown split by output rows, one for each split by columns, and the
// logits'. It is 0 for any other Model.
func (m *Model) TensorExchanges() int {
	if m.tp == nil {
		return 0
	}
	n := 1
	for i := range m.layers {
		n += 4 - boolInt(m.tp.sumWo[i]) - boolInt(m.tp.sumDown[i])
	}
	return n
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
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
	gather             bool // ShardSpec.Gather: no all-reduce
	// copies are the column slices colSlice made: memory of their own,
	// which releaseCopies frees once they are repacked.
	copies []*quant.Matrix
	// sumWo[l], sumDown[l]: layer l's Wo (Wdown) is split by input
	// columns and its partial outputs all-reduced; else it is split by
	// output rows and its input and output all-gathered.
	sumWo, sumDown []bool
}

// shareAligned is share with every boundary rounded down to a multiple of
// a (the last one is n, a multiple of a).
func shareAligned(n, kvLo, kvHi, nKV, a int) (int, int) {
	lo, hi := share(n, kvLo, kvHi, nKV)
	return lo / a * a, hi / a * a
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
	t := &tensorSplit{g: spec.Peers, head: spec.KVLo == 0, kvLo: spec.KVLo, kvHi: spec.KVHi, nKV: hp.nHeadKV, gather: spec.Gather}
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
	s, err := m.rowView(mat, lo, hi)
	if err != nil {
		return nil, err
	}
	delete(m.src, mat)
	return s, nil
}

// rowView is rows [lo, hi) of mat, a view that keeps mat's tensor as its
// source (for repacking) beside mat.
func (m *Model) rowView(mat *quant.Matrix, lo, hi int) (*quant.Matrix, error) {
	rb, err := mat.Type.RowBytes(mat.Cols)
	if err != nil {
		return nil, err
	}
	s := &quant.Matrix{Type: mat.Type, Rows: hi - lo, Cols: mat.Cols, Data: mat.Data[lo*rb : hi*rb]}
	if t, ok := m.src[mat]; ok {
		st := *t
		st.Name = fmt.Sprintf("%s[rows %d:%d]", t.Name, lo, hi)
		m.src[s] = &st
	}
	return s, nil
}

// sliceTensors cuts the loaded layers and output to the shard's part.
// Every decision here depends only on the model file, the group's KV head
// count and ShardSpec.Gather, never on this shard's own range, so every
// shard of a group makes the same ones.
func (m *Model) sliceTensors() error {
	t, hp := m.tp, &m.hp
	t.vLo, t.vHi = share(hp.vocab, t.kvLo, t.kvHi, t.nKV)
	if t.vHi == t.vLo {
		return fmt.Errorf("%w: no vocabulary rows for KV heads [%d, %d)", ErrShard, t.kvLo, t.kvHi)
	}
	t.sumWo, t.sumDown = make([]bool, len(m.layers)), make([]bool, len(m.layers))
	if !t.gather {
		// The FFN rows are cut where every layer's Wdown can be cut by
		// columns: at multiples of the largest block size, when that
		// leaves every KV head's share of them non-empty.
		a := 1
		for i := range m.layers {
			a = max(a, m.layers[i].wDown.Type.BlockSize())
		}
		ffCut := func(k int) int { lo, _ := share(hp.ff, k, k, t.nKV); return lo }
		aligned := func(k int) int { lo, _ := shareAligned(hp.ff, k, k, t.nKV, a); return lo }
		if cutsAt(hp.ff, t.nKV, a, aligned) {
			ffCut = aligned
			t.fLo, t.fHi = shareAligned(hp.ff, t.kvLo, t.kvHi, t.nKV, a)
		}
		group := hp.nHead / hp.nHeadKV
		woCut := func(k int) int { return k * group * hp.headDim }
		for i := range m.layers {
			l := &m.layers[i]
			t.sumWo[i] = cutsAt(hp.nHead*hp.headDim, t.nKV, l.wo.Type.BlockSize(), woCut)
			t.sumDown[i] = cutsAt(hp.ff, t.nKV, l.wDown.Type.BlockSize(), ffCut)
		}
	}
	var err error
	if m.output, err = m.rowSlice(m.output, t.vLo, t.vHi); err != nil {
		return err
	}
	for i := range m.layers {
		l := &m.layers[i]
		// Wo and Wdown: by the columns of this shard's heads and FFN
		// rows, or by output rows.
		woLo, woHi, downLo, downHi := t.dLo, t.dHi, t.dLo, t.dHi
		if t.sumWo[i] {
			woLo, woHi = t.qLo, t.qHi
		}
		if t.sumDown[i] {
			downLo, downHi = t.fLo, t.fHi
		}
		for _, s := range []struct {
			p      **quant.Matrix
			lo, hi int
			cols   bool
		}{
			{&l.wq, t.qLo, t.qHi, false}, {&l.wk, t.kLo, t.kHi, false}, {&l.wv, t.kLo, t.kHi, false},
			{&l.wGate, t.fLo, t.fHi, false}, {&l.wUp, t.fLo, t.fHi, false},
			{&l.wo, woLo, woHi, t.sumWo[i]}, {&l.wDown, downLo, downHi, t.sumDown[i]},
		} {
			slice := m.rowSlice
			if s.cols {
				slice = m.colSlice
			}
			if *s.p, err = slice(*s.p, s.lo, s.hi); err != nil {
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

// cutsAt reports whether every boundary at(k), k in [0, nKV], is a
// multiple of a, each above the one before, and at(nKV) is n: then any
// split of the KV heads cuts n columns into non-empty whole blocks.
func cutsAt(n, nKV, a int, at func(k int) int) bool {
	prev := -1
	for k := 0; k <= nKV; k++ {
		c := at(k)
		if c%a != 0 || c <= prev {
			return false
		}
		prev = c
	}
	return prev == n
}

// releaseCopies drops the column slices' own copies of the weights where
// MatMul reads a repacked copy instead, so a shard does not hold those
// weights twice.
func (m *Model) releaseCopies() {
	if m.tp == nil {
		return
	}
	for _, c := range m.tp.copies {
		c.ReleaseData()
	}
	m.tp.copies = nil
}

// colSlice returns columns [lo, hi) of every row of mat as a new matrix
// (a copy: the columns of a row are not contiguous with the next row's).
// lo and hi are multiples of the type's block size. It is repacked like a
// whole matrix, under a name that says its columns.
func (m *Model) colSlice(mat *quant.Matrix, lo, hi int) (*quant.Matrix, error) {
	bs, bb := mat.Type.BlockSize(), mat.Type.BlockBytes()
	if lo%bs != 0 || hi%bs != 0 || lo >= hi || hi > mat.Cols {
		return nil, fmt.Errorf("%w: columns [%d, %d) of %d are not whole blocks of %d", ErrShard, lo, hi, mat.Cols, bs)
	}
	rb, err := mat.Type.RowBytes(mat.Cols)
	if err != nil {
		return nil, err
	}
	a, w := lo/bs*bb, (hi-lo)/bs*bb
	data := make([]byte, mat.Rows*w)
	for r := 0; r < mat.Rows; r++ {
		copy(data[r*w:(r+1)*w], mat.Data[r*rb+a:r*rb+a+w])
	}
	s := &quant.Matrix{Type: mat.Type, Rows: mat.Rows, Cols: hi - lo, Data: data}
	m.tp.copies = append(m.tp.copies, s)
	if t, ok := m.src[mat]; ok {
		// The copy is what the shard uses: give the mapped pages the
		// copy read back to the page cache.
		if err := m.file.ReleaseTensor(t); err != nil {
			m.log.Warn("release of column-sliced tensor pages failed", "tensor", t.Name, "err", err)
		}
		st := *t
		st.Name = fmt.Sprintf("%s[cols %d:%d]", t.Name, lo, hi)
		m.src[s] = &st
		delete(m.src, mat)
	}
	return s, nil
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

// partialSum multiplies in (n rows) by w, this shard's columns of a
// matrix split by input columns, into a partial hidden state and
// all-reduces it into out.
func (b *Batch) partialSum(ctx context.Context, w *quant.Matrix, in, out []float32, n int) error {
	part := b.part[:n*b.m.hp.dim]
	quant.MatMul(b.m.pool, part, w, in, n)
	return b.allReduce(ctx, part, out)
}

// allReduce all-reduces part (a partial sum, the shape of sum) into sum.
func (b *Batch) allReduce(ctx context.Context, part, sum []float32) error {
	got, err := b.m.tp.g.AllReduce(ctx, part)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStageState, err)
	}
	if len(got) != len(sum) {
		return fmt.Errorf("%w: an all-reduce gave %d values of %d (is every shard of the group on this version, with the same ShardSpec.Gather?)", ErrShard, len(got), len(sum))
	}
	copy(sum, got)
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

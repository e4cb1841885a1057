package engine

import (
	"context"
	"fmt"
	"math"
	"runtime/debug"

	"github.com/rbee-project/rbee/model/quant"
)

// segment is one Session's rows in a forward pass: ids are evaluated at
// positions len(s.tokens)… and appended to its cache.
type segment struct {
	s      *Session
	ids    []int32
	logits bool // compute the logits of the last row
	q      *Sequence

	// Set by forward.
	pos0, row0 int
	lrow       int // row of the logits buffer, when logits
}

// Batch holds the scratch of forward passes that evaluate rows of several
// Sessions at once: every weight product runs once over all rows, so the
// weights are streamed from memory once per step whatever the number of
// sequences; RoPE, the KV append and attention run per row against that
// row's Session. The buffers grow to the largest step seen and are reused,
// so steady-state steps allocate nothing. A Batch is used by one goroutine
// at a time; forward passes of different Batches on one Model are
// serialised.
type Batch struct {
	m *Model

	rowCap, logitCap                  int
	x, xb, xb2, q, k, v, att, hb, hb2 []float32
	lx                                []float32 // final-normed rows that want logits
	logits                            []float32 // logitCap × vocab
	rowSeg                            []int32   // segment of each row
	scores                            []float32 // threads × scoreLen attention weights
	scoreLen                          int       // nCtx rounded up to whole key tiles (quant.AttnScoresF16 writes them)
	// KVF16: threads × headDim queries rounded to f16, threads × max(nCtx,
	// headDim) halves of scratch for the rounding.
	qh     []float32
	half   []uint16
	segs   []segment // the running forward pass
	remote []RemoteSegment
	zeros  []int32 // StageForward's placeholder ids
	// Tensor shards: the gathered attention output and SwiGLU activations,
	// this shard's rows of a Wo/Wdown product and of the logits.
	attFull, hbFull, part, partLogits []float32
	tids                              []int32   // the ids of a tensor pass, for Gatherer.Begin
	plan                              []segment // Step's segments, reused
	aLayer                            int       // layer of the running attention and row ops
	attnFn                            func(worker, start, end int)
	swigluFn                          func(worker, start, end int) // SwiGLU over elements [start, end) of hb, hb2
	moe                               moeBuffers                   // expert FFN scratch (moe.go)
	rowOp                             rowOp                        // what rowsFn runs
	rowsFn                            func(worker, start, end int) // rowOp over rows [start, end)
	drawFn                            func(worker, start, end int) // Step's draws over plan [start, end)
}

// rowOp is a per-row step of a layer that Batch.runRows spreads over the
// pool.
type rowOp uint8

const (
	rowAttnNorm rowOp = iota // xb = rmsnorm(x) · attn_norm
	rowRopeKV                // RoPE on q and k; k and v into the row's Session's cache
	rowFFNNorm               // xb = rmsnorm(x) · ffn_norm
)

// parallelRows is the row count from which the per-row steps of a layer
// (the norms, RoPE and the KV writes) run on the pool: a decode step of a
// few sequences is cheaper on the caller than a hand-off, and one of eight
// spent 9% of its time with the second thread waiting for them.
const parallelRows = 4

// NewBatch returns an empty Batch for m.
func (m *Model) NewBatch() *Batch {
	sl := vTiles(m.hp.nCtx) * quant.TileF32
	b := &Batch{m: m, scores: make([]float32, m.pool.Threads()*sl), scoreLen: sl}
	if m.kv == KVF16 {
		th := m.pool.Threads()
		b.qh = make([]float32, th*m.hp.headDim)
		b.half = make([]uint16, th*b.halfLen())
	}
	b.attnFn = b.attention
	b.swigluFn = func(_, start, end int) { swiglu(b.hb[start:end], b.hb2[start:end]) }
	if m.hp.gelu {
		b.swigluFn = func(_, start, end int) { geglu(b.hb[start:end], b.hb2[start:end]) }
	}
	b.rowsFn = b.rows
	b.drawFn = b.draw
	return b
}

// runRows runs op over the n rows of layer b.aLayer: on the pool from
// parallelRows rows, else on the caller. Each row's work is the same
// either way, so the results are too.
func (b *Batch) runRows(n int, op rowOp) {
	b.rowOp = op
	if n >= parallelRows && b.m.pool.Threads() > 1 {
		b.m.pool.Run(n, b.rowsFn)
		return
	}
	b.rows(0, 0, n)
}

// rows runs b.rowOp over rows [start, end) on pool worker worker.
func (b *Batch) rows(worker, start, end int) {
	m, hp := b.m, &b.m.hp
	l := &m.layers[b.aLayer]
	dim := hp.dim
	switch b.rowOp {
	case rowAttnNorm, rowFFNNorm:
		w := l.attnNorm
		if b.rowOp == rowFFNNorm {
			w = l.ffnNorm
		}
		for i := start; i < end; i++ {
			rmsNorm(b.xb[i*dim:(i+1)*dim], b.x[i*dim:(i+1)*dim], w, hp.eps)
		}
	case rowRopeKV:
		for i := start; i < end; i++ {
			b.ropeKV(worker, i)
		}
	}
}

// ropeKV applies the per-head q/k norms (if any) and RoPE to row i's q
// and k at its position and writes its k
// and v into its Session's cache of layer b.aLayer.
func (b *Batch) ropeKV(worker, i int) {
	m := b.m
	li, hd := b.aLayer, m.hp.headDim
	qDim, kvDim := m.heads*hd, m.kvHeads*hd
	sg := &b.segs[b.rowSeg[i]]
	s, pos := sg.s, sg.pos0+i-sg.row0
	q, k, v := b.q[i*qDim:(i+1)*qDim], b.k[i*kvDim:(i+1)*kvDim], b.v[i*kvDim:(i+1)*kvDim]
	l := &m.layers[li]
	rope := &m.rope
	if l.swa && m.ropeSWA != nil {
		rope = m.ropeSWA
	}
	for h := 0; h < m.heads; h++ {
		qh := q[h*hd : (h+1)*hd]
		if l.qNorm != nil {
			rmsNorm(qh, qh, l.qNorm, m.hp.eps)
		}
		rope.apply(qh, pos)
		if m.hp.qScale != 0 {
			scaleBy(qh, m.hp.qScale)
		}
	}
	for h := 0; h < m.kvHeads; h++ {
		if l.kNorm != nil {
			rmsNorm(k[h*hd:(h+1)*hd], k[h*hd:(h+1)*hd], l.kNorm, m.hp.eps)
		}
		rope.apply(k[h*hd:(h+1)*hd], pos)
	}
	row := pos - s.first(li) // the cache's row of pos
	t0 := vIndex(row, 0, hd)
	for h := 0; h < m.kvHeads; h++ {
		o := h * hd
		if m.kv == KVF32 {
			copy(s.keys(li, h)[row*hd:(row+1)*hd], k[o:o+hd])
			vh := s.values(li, h)
			for d, val := range v[o : o+hd] {
				vh[t0+d*quant.TileF32] = val
			}
			continue
		}
		quant.F32ToF16s(s.values16(li, h)[row*hd:(row+1)*hd], v[o:o+hd])
		kh, conv := s.keys16(li, h), b.half[worker*b.halfLen():][:hd]
		quant.F32ToF16s(conv, k[o:o+hd])
		for d, x := range conv {
			kh[t0+d*quant.TileF32] = x
		}
	}
}

// halfLen is each pool worker's share of b.half.
func (b *Batch) halfLen() int { return max(b.m.hp.nCtx, b.m.hp.headDim) }

func (b *Batch) ensureRows(n, nLogits int) {
	hp := &b.m.hp
	if n > b.rowCap {
		qDim := hp.nHead * hp.headDim
		lq, lkv, lff := b.m.heads*hp.headDim, b.m.kvHeads*hp.headDim, max(hp.ff, hp.ffExp)
		if tp := b.m.tp; tp != nil {
			lff = tp.fHi - tp.fLo
			b.attFull = make([]float32, n*qDim)
			b.hbFull = make([]float32, n*hp.ff)
			b.part = make([]float32, n*hp.dim) // a row slice's part or a partial sum
		}
		b.rowCap = n
		b.x = make([]float32, n*hp.dim)
		b.xb = make([]float32, n*max(hp.dim, qDim))
		b.xb2 = make([]float32, n*hp.dim)
		b.q = make([]float32, n*lq)
		b.k = make([]float32, n*lkv)
		b.v = make([]float32, n*lkv)
		b.att = make([]float32, n*lq)
		b.hb = make([]float32, n*lff)
		b.hb2 = make([]float32, n*lff)
		b.rowSeg = make([]int32, n)
	}
	if nLogits > b.logitCap {
		b.logitCap = nLogits
		b.lx = make([]float32, nLogits*hp.dim)
		b.logits = make([]float32, nLogits*hp.vocab)
		if tp := b.m.tp; tp != nil {
			b.partLogits = make([]float32, nLogits*(tp.vHi-tp.vLo))
		}
	}
}

// logitsOf returns the logits the last forward pass computed for sg.
func (b *Batch) logitsOf(sg *segment) []float32 {
	v := b.m.hp.vocab
	return b.logits[sg.lrow*v : (sg.lrow+1)*v]
}

// forward runs the transformer over the rows of segs (each Session at most
// once), appends their keys and values to their caches and computes the
// logits of the last row of each segment that asks for them. The callers
// have checked the ids and that every segment fits its context. On a
// pipeline's first stage the later stages run after the local layers
// (Remote.Forward, outside the compute lock); if they fail, the Sessions
// of segs are emptied, since the stages may no longer hold what the
// Sessions' caches say.
func (b *Batch) forward(ctx context.Context, segs []segment) error {
	m := b.m
	if m.tp != nil {
		return b.tensorForward(ctx, segs)
	}
	n, nl, err := b.layers(ctx, segs, nil)
	if err != nil || m.next == nil {
		return err
	}
	epoch := m.next.Epoch()
	b.remote = b.remote[:0]
	for i := range segs {
		sg := &segs[i]
		if sg.pos0 > 0 && sg.s.epoch != epoch {
			err = fmt.Errorf("%w: the later stages were reconnected since session %d was evaluated", ErrStageState, sg.s.id)
		}
		b.remote = append(b.remote, RemoteSegment{Session: sg.s.id, Pos: sg.pos0, N: len(sg.ids), Logits: sg.logits})
	}
	if err == nil {
		dim, vocab := m.hp.dim, m.hp.vocab
		err = m.next.Forward(ctx, b.remote, b.x[:n*dim], b.logits[:nl*vocab])
	}
	for i := range segs {
		s := segs[i].s
		if err != nil {
			s.tokens = s.tokens[:0]
		}
		s.epoch = epoch
	}
	return err
}

// layers runs this Model's layers over the rows of segs: their input is
// the token embeddings on a first stage, else hidden (rows × dim). The
// last stage then computes the logits of the segments that ask for them
// (b.logits), and n rows of output hidden states are in b.x otherwise.
func (b *Batch) layers(ctx context.Context, segs []segment, hidden []float32) (n, nl int, err error) {
	defer recoverFault(&err, b.m.holdsFileMapping)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	m := b.m
	m.computeMu.Lock()
	defer m.computeMu.Unlock()
	if m.closed.Load() {
		return 0, 0, ErrClosed
	}
	// Last, under computeMu (Close closes the watched files): a pass over
	// weights whose file changed in place is an error, not its result.
	defer func() {
		if err == nil {
			err = m.filesChanged()
		}
	}()
	hp := &m.hp
	work := 0
	for i := range segs {
		sg := &segs[i]
		sg.pos0, sg.row0 = len(sg.s.tokens), n
		sg.s.ensureKV(sg.pos0 + len(sg.ids))
		n += len(sg.ids)
		work += len(sg.ids) * (sg.pos0 + len(sg.ids))
		if sg.logits {
			sg.lrow = nl
			nl++
		}
	}
	b.ensureRows(n, nl)
	b.segs = segs
	defer func() { b.segs = nil }()
	dim, hd := hp.dim, hp.headDim
	qDim, kvDim := m.heads*hd, m.kvHeads*hd
	pool := m.pool
	tp := m.tp

	for si := range segs {
		sg := &segs[si]
		for j := range sg.ids {
			b.rowSeg[sg.row0+j] = int32(si)
		}
	}
	if m.embd != nil {
		rb, err := m.embd.Type.RowBytes(dim)
		if err != nil {
			return 0, 0, err
		}
		for si := range segs {
			sg := &segs[si]
			for j, id := range sg.ids {
				i := sg.row0 + j
				row := m.embd.Data[int(id)*rb : (int(id)+1)*rb]
				if err := quant.Dequantize(m.embd.Type, row, b.x[i*dim:(i+1)*dim]); err != nil {
					return 0, 0, fmt.Errorf("engine: embedding row %d: %w", id, err)
				}
				if hp.embScale != 0 {
					scaleBy(b.x[i*dim:(i+1)*dim], hp.embScale)
				}
			}
		}
	} else {
		copy(b.x[:n*dim], hidden)
	}
	x, xb, xb2 := b.x[:n*dim], b.xb[:n*dim], b.xb2[:n*dim]
	q, k, v := b.q[:n*qDim], b.k[:n*kvDim], b.v[:n*kvDim]
	ff := hp.ff
	if tp != nil {
		ff = tp.fHi - tp.fLo
	}
	att, hb, hb2 := b.att[:n*qDim], b.hb[:n*ff], b.hb2[:n*ff]
	for li := range m.layers {
		l := &m.layers[li]
		b.aLayer = li
		b.runRows(n, rowAttnNorm)
		// One job for the products that share their input (the array
		// stays on the stack: MatMuls keeps only its elements).
		qkv := [...]quant.Product{{Dst: q, M: l.wq}, {Dst: k, M: l.wk}, {Dst: v, M: l.wv}}
		quant.MatMuls(pool, xb, n, qkv[:])
		addBias(q, l.bq)
		addBias(k, l.bk)
		addBias(v, l.bv)
		b.runRows(n, rowRopeKV)
		if work*m.heads*hd >= parallelAttention {
			pool.Run(n*m.heads, b.attnFn)
		} else {
			b.attention(0, 0, n*m.heads)
		}
		switch {
		case tp == nil:
			quant.MatMul(pool, xb2, l.wo, att, n)
			addBias(xb2[:n*dim], l.bo) // a tensor shard has none (ShardSpec refuses gpt-oss's experts)
		case tp.sumWo[li]:
			// This shard's heads times its columns of Wo: a partial sum
			// of the whole hidden state.
			if err := b.partialSum(ctx, l.wo, att, xb2, n); err != nil {
				return 0, 0, err
			}
		default:
			// Every shard needs every head's output for its rows of Wo,
			// and the whole hidden state for the norms that follow.
			full := b.attFull[:n*hp.nHead*hd]
			if err := b.gather(ctx, att, full, n); err != nil {
				return 0, 0, err
			}
			part := b.part[:n*(tp.dHi-tp.dLo)]
			quant.MatMul(pool, part, l.wo, full, n)
			if err := b.gather(ctx, part, xb2, n); err != nil {
				return 0, 0, err
			}
		}
		postNorm(xb2, l.attnPost, dim, hp.eps)
		addTo(x, xb2)
		b.runRows(n, rowFFNNorm)
		if l.moe != nil {
			b.moeFFN(l, xb, xb2, b.hb, b.hb2, n)
		} else if err := b.denseFFN(ctx, li, xb, xb2, hb, hb2, n); err != nil {
			return 0, 0, err
		}
		postNorm(xb2, l.ffnPost, dim, hp.eps)
		addTo(x, xb2)
	}
	last := m.output != nil
	for si := range segs {
		sg := &segs[si]
		s := sg.s
		if s.pooled != nil {
			for j := range sg.ids {
				i := sg.row0 + j
				rmsNorm(xb[:dim], x[i*dim:(i+1)*dim], m.outN, hp.eps)
				addTo(s.pooled, xb[:dim])
			}
		}
		s.tokens = append(s.tokens, sg.ids...)
		if sg.logits && last {
			r := sg.row0 + len(sg.ids) - 1
			rmsNorm(b.lx[sg.lrow*dim:(sg.lrow+1)*dim], x[r*dim:(r+1)*dim], m.outN, hp.eps)
		}
	}
	if nl > 0 && last && tp == nil {
		quant.MatMul(pool, b.logits, m.output, b.lx[:nl*dim], nl)
	}
	if nl > 0 && tp != nil {
		part := b.partLogits[:nl*(tp.vHi-tp.vLo)]
		quant.MatMul(pool, part, m.output, b.lx[:nl*dim], nl)
		if err := b.gather(ctx, part, b.logits[:nl*hp.vocab], nl); err != nil {
			return 0, 0, err
		}
	}
	if nl > 0 && last && hp.finalCap != 0 {
		softCap(b.logits[:nl*hp.vocab], hp.finalCap)
	}
	return n, nl, nil
}

// denseFFN sets xb2 (n rows of the hidden size) to layer li's gated FFN
// of xb, through hb and hb2 (n rows of this shard's FFN width): the whole
// product, or a tensor shard's part exchanged with the group.
func (b *Batch) denseFFN(ctx context.Context, li int, xb, xb2, hb, hb2 []float32, n int) error {
	m, hp, tp, pool := b.m, &b.m.hp, b.m.tp, b.m.pool
	l := &m.layers[li]
	gateUp := [...]quant.Product{{Dst: hb, M: l.wGate}, {Dst: hb2, M: l.wUp}}
	quant.MatMuls(pool, xb, n, gateUp[:])
	if len(hb) >= parallelSwiGLU {
		pool.Run(len(hb), b.swigluFn)
	} else {
		b.swigluFn(0, 0, len(hb))
	}
	switch {
	case tp == nil:
		quant.MatMul(pool, xb2, l.wDown, hb, n)
	case tp.sumDown[li]:
		return b.partialSum(ctx, l.wDown, hb, xb2, n)
	default:
		full := b.hbFull[:n*hp.ff]
		if err := b.gather(ctx, hb, full, n); err != nil {
			return err
		}
		part := b.part[:n*(tp.dHi-tp.dLo)]
		quant.MatMul(pool, part, l.wDown, full, n)
		return b.gather(ctx, part, xb2, n)
	}
	return nil
}

// attention computes causal softmax attention for the (row, head) pairs
// [start, end) of the running forward pass, each row against its own
// Session's cache. worker selects the score buffer.
func (b *Batch) attention(worker, start, end int) {
	hp := &b.m.hp
	hd := hp.headDim
	group := hp.nHead / hp.nHeadKV
	qDim := b.m.heads * hd
	scale := float32(1 / math.Sqrt(float64(hd)))
	if hp.qScale != 0 {
		scale = 1 // q was scaled after RoPE (ropeKV)
	}
	swa := b.m.layers[b.aLayer].swa
	sc := b.scores[worker*b.scoreLen : (worker+1)*b.scoreLen]
	var half []uint16
	if b.half != nil {
		n := b.halfLen()
		half = b.half[worker*n : (worker+1)*n]
	}
	for t := start; t < end; t++ {
		i, h := t/b.m.heads, t%b.m.heads
		sg := &b.segs[b.rowSeg[i]]
		pos := sg.pos0 + i - sg.row0
		q := b.q[i*qDim+h*hd : i*qDim+(h+1)*hd]
		kh := h / group
		// A windowed layer attends to positions lo to pos; its scores are
		// computed from the tile that holds lo (the cache's rows start at
		// a tile: first), those before lo masked (weight 0). Others
		// attend to every position from 0.
		lo, start := 0, 0
		if swa {
			lo = max(0, pos+1-hp.swaWindow)
			if b.m.hasSWA() {
				start = lo / quant.TileF32 * quant.TileF32
			}
		}
		n, r0 := pos+1-start, start-sg.s.first(b.aLayer) // positions; the cache's row of start
		if b.m.kv == KVF32 {
			quant.DotF32Tiled(sc[:n], q, sg.s.keys(b.aLayer, kh)[r0*hd:], hd, hd, quant.TileF32)
		} else {
			// As ggml multiplies with an f16 cache: the query rounded to
			// f16 too, so every product is exact and only the sums round.
			qh := b.qh[worker*hd : (worker+1)*hd]
			roundF16(qh, q, half)
			quant.AttnScoresF16(sc, qh, sg.s.keys16(b.aLayer, kh)[r0*hd:], n, hd)
		}
		w := sc[:n]
		if hp.attnCap != 0 {
			softCap(w, hp.attnCap)
		}
		// Keys swaWindow or more positions back are masked: weight 0.
		clear(w[:lo-start])
		if sinks := b.m.layers[b.aLayer].sinks; sinks != nil {
			quant.SoftmaxSink(w[lo-start:], scale, sinks[h])
		} else {
			quant.Softmax(w[lo-start:], scale)
		}
		out := b.att[i*qDim+h*hd : i*qDim+(h+1)*hd]
		if b.m.kv == KVF32 {
			quant.DotF32Tiled(out, w, sg.s.values(b.aLayer, kh)[r0*hd:], n, quant.TileF32, hd*quant.TileF32)
		} else {
			roundF16(w, w, half) // the weights too, as ggml does
			quant.AttnValuesF16(out, w, sg.s.values16(b.aLayer, kh)[r0*hd:], n, hd)
		}
	}
}

// roundF16 sets dst to src rounded to f16 (and back: exactly
// representable), through scratch, which must hold len(src) halves.
func roundF16(dst, src []float32, scratch []uint16) {
	h := scratch[:len(src)]
	quant.F32ToF16s(h, src)
	quant.F16ToF32s(dst, h)
}

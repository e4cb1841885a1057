package engine

import (
	"context"
	"fmt"
	"github.com/rbee-project/rbee/model/quant"
	"math"
)

// promptBatch is the most tokens one forward pass processes. Prompts are
// split into chunks of this size: large enough that the weight matrices are
// streamed from memory once per 128 tokens instead of once per token, small
// enough that the activation scratch stays a few MiB for 7B-class shapes.
const promptBatch = 128

// parallelSwiGLU is the element count from which the SwiGLU activation runs
// on the pool: below it (a decode step of a small model) the hand-off costs
// more than the exp calls it spreads.
const parallelSwiGLU = 16384

// parallelAttention is the attention work (multiply-adds of q·k) from
// which attention runs on the pool; a decode step at a short context is
// cheaper than waking the workers.
const parallelAttention = 1 << 16

// minKVTokens is the first KV-cache allocation; the cache then doubles up to
// the context size, so short sessions on long-context models stay small.
const minKVTokens = 64

// Session is one conversation state: the tokens evaluated so far and their
// KV cache, plus the scratch of its own forward passes, so that decoding a
// token allocates nothing. A Session must be used by one goroutine at a
// time; many Sessions may run concurrently on one Model (their forward
// passes are serialised, each using all of the Model's threads), or advance
// together, one forward pass for all, through a Batch (see Begin).
type Session struct {
	m      *Model
	tokens []int32     // evaluated tokens; the KV cache holds exactly these
	kc     [][]float32 // KVF32: per layer, per KV head: capTok × headDim keys after RoPE, row per position (keys)
	vc     [][]float32 // KVF32: per layer, per KV head: values in tiles of quant.TileF32 positions (values)
	kc16   [][]uint16  // KVF16: per layer, per KV head: keys in tiles of quant.TileF32 positions (keys16)
	vc16   [][]uint16  // KVF16: per layer, per KV head: capTok × headDim values, row per position (values16)
	capTok int
	// The sliding-window layers' caches (gemma2/3's windowed layers) hold
	// only the positions from base on, in rows of their own: swaRows of
	// them (at most capTok). base is a multiple of quant.TileF32, so a
	// position keeps its place within its tile, and a shift of the cache
	// moves whole tiles. See ensureKV.
	base, swaRows int

	b      *Batch    // scratch of this Session's own forward passes (eval)
	segs   []segment // eval's one segment, kept so that it does not escape
	logits []float32 // the logits of the last eval, a view into b
	smp    *sampler
	one    [1]int32 // the decode step's input, kept here so it does not escape
	// pooled, while Embed runs, sums the final-normed hidden state of
	// every evaluated token.
	pooled []float32
	// id names the Session to the later stages of a pipeline; epoch is
	// the Remote's epoch its cache was built under (see Remote.Epoch).
	id    uint64
	epoch uint64
}

// NewSession returns a Session with an empty KV cache.
func (m *Model) NewSession() *Session {
	hp := &m.hp
	s := &Session{
		m:      m,
		tokens: make([]int32, 0, hp.nCtx),
		segs:   make([]segment, 1),
		id:     m.sessionIDs.Add(1),
	}
	if m.kv == KVF32 {
		s.kc, s.vc = make([][]float32, len(m.layers)), make([][]float32, len(m.layers))
	} else {
		s.kc16, s.vc16 = make([][]uint16, len(m.layers)), make([][]uint16, len(m.layers))
	}
	if m.lo == 0 {
		// A later stage's Session only holds a cache (StageForward).
		s.b = m.NewBatch()
		s.smp = newSampler(hp.vocab)
	}
	return s
}

// ID numbers the Session within its Model (from 1): a pipeline's first
// stage names its Sessions to the later stages by it.
func (s *Session) ID() uint64 { return s.id }

// Embed returns the embedding of a prompt: the mean over its tokens of the
// model's final hidden state (after the output norm, before the output
// projection), L2-normalised. The session is reset first (every token must
// be evaluated); afterwards its cache holds ids, like after a prompt.
func (s *Session) Embed(ctx context.Context, ids []int32) ([]float32, error) {
	if !s.m.whole() {
		return nil, fmt.Errorf("%w: embeddings need the whole model in one process", ErrShard)
	}
	s.Reset()
	dim := s.m.hp.dim
	s.pooled = make([]float32, dim)
	defer func() { s.pooled = nil }()
	if _, err := s.eval(ctx, ids); err != nil {
		s.Reset()
		return nil, err
	}
	out := s.pooled
	var norm float64
	for i := range out {
		out[i] /= float32(len(ids))
		norm += float64(out[i]) * float64(out[i])
	}
	if norm > 0 {
		inv := float32(1 / math.Sqrt(norm))
		for i := range out {
			out[i] *= inv
		}
	}
	return out, nil
}

// Reset forgets the evaluated tokens (the cache memory is kept).
func (s *Session) Reset() { s.tokens = s.tokens[:0] }

// Tokens returns the ids whose keys and values are in the cache. The slice
// is the Session's own: read it, do not modify it, and do not keep it past
// the next call.
func (s *Session) Tokens() []int32 { return s.tokens }

// CommonPrefix returns how many leading tokens of prompt the cache already
// holds: what a generation of prompt on this Session would not evaluate
// again (at most len(prompt)-1, since the last token is always evaluated
// for its logits).
func (s *Session) CommonPrefix(prompt []int32) int {
	if s.stale() {
		return 0
	}
	n := commonPrefix(s.tokens, prompt)
	if n > 0 && n == len(prompt) {
		n--
	}
	if !s.holdsWindow(n) {
		// The windowed layers no longer hold the window before position
		// n: the prompt is evaluated again from its start.
		n = 0
	}
	return n
}

// holdsWindow reports whether a pass may start at position pos: its
// first query's window (from pos-window+1) is still in the windowed
// layers' caches, which hold the positions from base on. A pass from 0
// starts the caches again.
func (s *Session) holdsWindow(pos int) bool {
	return pos == 0 || s.base == 0 || pos >= s.base+s.m.hp.swaWindow-1
}

// stale reports that the later stages of a pipeline were reconnected
// since the cache was built: they no longer hold it.
func (s *Session) stale() bool {
	if len(s.tokens) == 0 {
		return false
	}
	switch {
	case s.m.next != nil:
		return s.epoch != s.m.next.Epoch()
	case s.m.tp != nil && s.m.tp.head:
		return s.epoch != s.m.tp.g.Epoch()
	}
	return false
}

func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// ensureKV makes the cache hold positions up to nTok (exclusive) for a
// forward pass that evaluates positions len(s.tokens) to nTok-1. The
// cache grows by doubling up to the context size. The sliding-window
// layers' caches stop growing at about a window and a prompt chunk
// (swaSpan): once a pass needs more rows than that, the positions no
// query of this pass or a later one attends to (below its first query's
// window) are dropped from their front, whole tiles at a time, and base
// moves up. A Session that starts again from position 0 starts again
// from base 0.
func (s *Session) ensureKV(nTok int) {
	pos0 := len(s.tokens)
	if pos0 == 0 {
		s.base = 0
	}
	swa := s.m.hasSWA()
	if swa {
		s.slideWindow(pos0, nTok)
	}
	if nTok <= s.capTok && (!swa || nTok-s.base <= s.swaRows) {
		return
	}
	c := s.capTok
	if nTok > c {
		c = min(max(nTok, 2*s.capTok, minKVTokens), s.m.hp.nCtx)
	}
	rows := s.swaRows
	if swa {
		rows = max(min(c, s.m.swaSpan()), s.swaRows, nTok-s.base)
	}
	s.resizeKV(c, rows, pos0)
}

// slideWindow drops the front of the windowed layers' caches when the
// pass that evaluates positions pos0 to nTok-1 would not fit their rows
// (see ensureKV).
func (s *Session) slideWindow(pos0, nTok int) {
	if nTok-s.base <= max(s.swaRows, s.m.swaSpan()) {
		return // fits, or the rows may grow to fit
	}
	w := s.m.hp.swaWindow
	keep := max(0, pos0-w+1) / quant.TileF32 * quant.TileF32 // the first position a query of this pass sees
	if keep < s.base {
		// Cannot happen: CommonPrefix (and the stages that follow the
		// head's positions) never cut the tokens below base+window-1.
		panic(fmt.Sprintf("engine: session at %d tokens with its windowed cache from %d (window %d)", pos0, s.base, w))
	}
	if keep == s.base {
		return
	}
	shift, used := keep-s.base, pos0-s.base // positions dropped; held now
	hd := s.m.hp.headDim
	rowsK, tiled := s.swaRows*hd, vTiles(s.swaRows)*quant.TileF32*hd
	for l := range s.m.layers {
		if !s.m.layers[l].swa {
			continue
		}
		for h := 0; h < s.m.kvHeads; h++ {
			// Rows per position and whole tiles alike move by shift·hd
			// elements: shift is a multiple of the tile.
			if s.kc != nil {
				slideBlock(s.kc[l][h*rowsK:(h+1)*rowsK], shift*hd, used*hd)
				slideBlock(s.vc[l][h*tiled:(h+1)*tiled], shift*hd, vTiles(used)*quant.TileF32*hd)
			} else {
				slideBlock(s.kc16[l][h*tiled:(h+1)*tiled], shift*hd, vTiles(used)*quant.TileF32*hd)
				slideBlock(s.vc16[l][h*rowsK:(h+1)*rowsK], shift*hd, used*hd)
			}
		}
	}
	s.base = keep
}

// slideBlock moves b[shift:used] to the front of b.
func slideBlock[T float32 | uint16](b []T, shift, used int) {
	if used > shift {
		copy(b, b[shift:used])
	}
}

// resizeKV gives the cache capTok rows for the global layers and swa for
// the windowed ones, keeping the used positions (pos0 of them, the
// windowed layers' from base).
func (s *Session) resizeKV(capTok, swa, pos0 int) {
	hd := s.m.hp.headDim
	kvh := s.m.kvHeads
	for l := range s.m.layers {
		oldRows, newRows, used := s.capTok, capTok, pos0
		if s.m.layers[l].swa && s.m.hasSWA() {
			oldRows, newRows, used = s.swaRows, swa, pos0-s.base
		}
		oldK, oldV := oldRows*hd, vTiles(oldRows)*quant.TileF32*hd
		newK, newV := newRows*hd, vTiles(newRows)*quant.TileF32*hd
		usedV := vTiles(used) * quant.TileF32 * hd
		if s.kc != nil {
			s.kc[l] = growKV(s.kc[l], kvh, oldK, newK, used*hd)
			s.vc[l] = growKV(s.vc[l], kvh, oldV, newV, usedV)
		} else {
			s.kc16[l] = growKV(s.kc16[l], kvh, oldV, newV, usedV) // the f16 cache's keys are tiled, its values rows
			s.vc16[l] = growKV(s.vc16[l], kvh, oldK, newK, used*hd)
		}
	}
	s.capTok, s.swaRows = capTok, swa
}

// growKV returns a layer's cache c (kvHeads blocks of oldN elements)
// with blocks of newN elements, the first used elements of each block
// copied; c itself when the size does not change.
func growKV[T float32 | uint16](c []T, kvHeads, oldN, newN, used int) []T {
	if oldN == newN && c != nil {
		return c
	}
	n := make([]T, kvHeads*newN)
	for h := 0; h < kvHeads && used > 0; h++ {
		copy(n[h*newN:], c[h*oldN:h*oldN+used])
	}
	return n
}

// The KV cache of a layer holds, for each KV head h, a contiguous block of
// keys and one of values, so that attention for one head streams two
// contiguous arrays (one pass over each, no page or cache line shared
// with another head's work):
//
//   - keys(l, h): capTok rows of headDim, row per position (q·k is one
//     contiguous dot per position);
//   - values(l, h): the positions in tiles of quant.TileF32, each tile
//     headDim rows of TileF32 floats (transposed, row per dimension), so
//     that weights·v is a dot product per dimension that
//     quant.DotF32Tiled walks tile by tile with DotF32's summation order,
//     and appending a position writes one float per row of one tile (a
//     few cache lines of one page, not one line per dimension across the
//     whole cache as a plain transposed array would). vIndex locates an
//     element.
//
// keys and values are the KVF32 cache's blocks. The KVF16 cache's are
// laid out the other way round for quant's f16 attention kernels, which
// compute eight positions (scores) or eight dimensions (values) per
// instruction without horizontal sums: keys16 in tiles (vIndex), so a
// query's scores are FMAs over dimensions, values16 a row per position, so
// the weighted sum is FMAs over positions.
//
// A windowed layer's blocks hold the positions from first(l) = base on,
// in swaRows rows: position p is row p-first(l).
func (s *Session) keys(l, h int) []float32 { return kvBlock(s.kc, l, h, s.rows(l)*s.m.hp.headDim) }

func (s *Session) values(l, h int) []float32 {
	return kvBlock(s.vc, l, h, vTiles(s.rows(l))*quant.TileF32*s.m.hp.headDim)
}

func (s *Session) keys16(l, h int) []uint16 {
	return kvBlock(s.kc16, l, h, vTiles(s.rows(l))*quant.TileF32*s.m.hp.headDim)
}

func (s *Session) values16(l, h int) []uint16 { return kvBlock(s.vc16, l, h, s.rows(l)*s.m.hp.headDim) }

// rows is how many positions layer l's cache has room for.
func (s *Session) rows(l int) int {
	if s.m.layers[l].swa && s.m.hasSWA() {
		return s.swaRows
	}
	return s.capTok
}

// first is the first position layer l's cache holds.
func (s *Session) first(l int) int {
	if s.m.layers[l].swa && s.m.hasSWA() {
		return s.base
	}
	return 0
}

// kvBlock is head h's block of n elements in layer l's cache of c.
func kvBlock[T float32 | uint16](c [][]T, l, h, n int) []T { return c[l][h*n : (h+1)*n] }

// vTiles is the number of value tiles that hold n positions.
func vTiles(n int) int { return (n + quant.TileF32 - 1) / quant.TileF32 }

// vIndex is the index of dimension d of position pos in values(l, h) and
// in keys16(l, h) (the tiled layout).
func vIndex(pos, d, hd int) int {
	return (pos/quant.TileF32)*hd*quant.TileF32 + d*quant.TileF32 + pos%quant.TileF32
}

// checkIDs refuses token ids outside the vocabulary.
func (s *Session) checkIDs(ids []int32, what string) error {
	for _, id := range ids {
		if id < 0 || int(id) >= s.m.hp.vocab {
			return fmt.Errorf("%w: %stoken id %d outside vocabulary of %d", ErrBadRequest, what, id, s.m.hp.vocab)
		}
	}
	return nil
}

// eval appends ids to the evaluated tokens and returns the logits that
// predict the token after the last of them. The slice is owned by the
// Session and valid until the next call.
func (s *Session) eval(ctx context.Context, ids []int32) ([]float32, error) {
	hp := &s.m.hp
	if !s.m.generates() {
		return nil, fmt.Errorf("%w: this shard runs the passes its first stage or head sends (StageForward, TensorForward)", ErrShard)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: nothing to evaluate", ErrEmptyPrompt)
	}
	if len(s.tokens)+len(ids) > hp.nCtx {
		return nil, fmt.Errorf("%w: %d cached + %d new tokens > context %d", ErrContextOverflow, len(s.tokens), len(ids), hp.nCtx)
	}
	if err := s.checkIDs(ids, ""); err != nil {
		return nil, err
	}
	for len(ids) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(len(ids), promptBatch)
		s.segs[0] = segment{s: s, ids: ids[:n], logits: len(ids) == n}
		if err := s.b.forward(ctx, s.segs); err != nil {
			return nil, err
		}
		ids = ids[n:]
	}
	s.logits = s.b.logitsOf(&s.segs[0])
	return s.logits, nil
}

// rmsNorm writes x·w/√(mean(x²)+eps) to dst, summing in float64 like ggml.
func rmsNorm(dst, x, w []float32, eps float32) {
	var sum float64
	for _, v := range x {
		sum += float64(v * v)
	}
	mean := float32(sum / float64(len(x)))
	// ggml: 1.0f/sqrtf(mean + eps), rounded in float32 at each step.
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	w = w[:len(x)]
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = v * scale * w[i]
	}
}

// addBias adds the per-row bias b to every row of x (no-op for nil b).
func addBias(x, b []float32) {
	if b == nil {
		return
	}
	for i := 0; i+len(b) <= len(x); i += len(b) {
		row := x[i : i+len(b)]
		for j, v := range b {
			row[j] += v
		}
	}
}

func addTo(dst, src []float32) {
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] += v
	}
}

// swiglu sets g = silu(g)·u.
func swiglu(g, u []float32) {
	u = u[:len(g)]
	// e^-v for a chunk at a time through the vector kernel (bit-identical
	// to math.Exp), on the stack.
	var e [64]float32
	for len(g) > 0 {
		c := min(len(g), len(e))
		for i, v := range g[:c] {
			e[i] = -v
		}
		quant.ExpF32s(e[:c], e[:c])
		for i, v := range g[:c] {
			g[i] = v / (1 + e[i]) * u[i]
		}
		g, u = g[c:], u[c:]
	}
}

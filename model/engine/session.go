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
	return n
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

func (s *Session) ensureKV(nTok int) {
	if nTok <= s.capTok {
		return
	}
	hp := &s.m.hp
	c := max(nTok, 2*s.capTok, minKVTokens)
	c = min(c, hp.nCtx)
	hd, used := hp.headDim, len(s.tokens)
	oldK, oldV := s.capTok*hd, vTiles(s.capTok)*quant.TileF32*hd
	newK, newV := c*hd, vTiles(c)*quant.TileF32*hd
	usedV := vTiles(used) * quant.TileF32 * hd
	kvh := s.m.kvHeads
	growKV(s.kc, kvh, oldK, newK, used*hd)
	growKV(s.vc, kvh, oldV, newV, usedV)
	growKV(s.kc16, kvh, oldV, newV, usedV) // the f16 cache's keys are tiled, its values rows
	growKV(s.vc16, kvh, oldK, newK, used*hd)
	s.capTok = c
}

// growKV replaces every layer's cache in c (kvHeads blocks of oldN
// elements) with one of blocks of newN elements, copying the first used
// elements of each block.
func growKV[T float32 | uint16](c [][]T, kvHeads, oldN, newN, used int) {
	for l := range c {
		n := make([]T, kvHeads*newN)
		for h := 0; h < kvHeads && used > 0; h++ {
			copy(n[h*newN:], c[l][h*oldN:h*oldN+used])
		}
		c[l] = n
	}
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
func (s *Session) keys(l, h int) []float32 { return kvBlock(s.kc, l, h, s.capTok*s.m.hp.headDim) }

func (s *Session) values(l, h int) []float32 {
	return kvBlock(s.vc, l, h, vTiles(s.capTok)*quant.TileF32*s.m.hp.headDim)
}

func (s *Session) keys16(l, h int) []uint16 {
	return kvBlock(s.kc16, l, h, vTiles(s.capTok)*quant.TileF32*s.m.hp.headDim)
}

func (s *Session) values16(l, h int) []uint16 { return kvBlock(s.vc16, l, h, s.capTok*s.m.hp.headDim) }

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

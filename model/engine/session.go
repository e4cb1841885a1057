package engine

import (
	"context"
	"fmt"
	"math"

	"github.com/rbee-project/rbee/model/quant"
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
// KV cache, plus preallocated scratch buffers, so that decoding a token
// allocates nothing. A Session must be used by one goroutine at a time; many
// Sessions may run concurrently on one Model (their forward passes are
// serialised, each using all of the Model's threads).
type Session struct {
	m      *Model
	tokens []int32     // evaluated tokens; the KV cache holds exactly these
	kc     [][]float32 // per layer: capTok × kvDim keys after RoPE, row per position
	vc     [][]float32 // per layer: kvDim × capTok values, transposed (row per dimension)
	capTok int

	batchCap                          int
	x, xb, xb2, q, k, v, att, hb, hb2 []float32
	logits                            []float32
	scores                            []float32 // threads × nCtx attention weights
	aLayer, aPos0                     int       // arguments of the running attention
	attnFn                            func(worker, start, end int)
	swigluFn                          func(worker, start, end int) // SwiGLU over elements [start, end) of hb, hb2
	smp                               *sampler
	one                               [1]int32 // the decode step's input, kept here so it does not escape
	// pooled, while Embed runs, sums the final-normed hidden state of
	// every evaluated token.
	pooled []float32
}

// NewSession returns a Session with an empty KV cache.
func (m *Model) NewSession() *Session {
	hp := &m.hp
	s := &Session{
		m:      m,
		tokens: make([]int32, 0, hp.nCtx),
		kc:     make([][]float32, hp.nLayer),
		vc:     make([][]float32, hp.nLayer),
		logits: make([]float32, hp.vocab),
		scores: make([]float32, m.pool.Threads()*hp.nCtx),
		smp:    newSampler(hp.vocab),
	}
	s.attnFn = s.attention
	s.swigluFn = func(_, start, end int) { swiglu(s.hb[start:end], s.hb2[start:end]) }
	return s
}

// Embed returns the embedding of a prompt: the mean over its tokens of the
// model's final hidden state (after the output norm, before the output
// projection), L2-normalised. The session is reset first (every token must
// be evaluated); afterwards its cache holds ids, like after a prompt.
func (s *Session) Embed(ctx context.Context, ids []int32) ([]float32, error) {
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

func (s *Session) ensureBatch(n int) {
	if n <= s.batchCap {
		return
	}
	hp := &s.m.hp
	qDim, kvDim := hp.nHead*hp.headDim, hp.nHeadKV*hp.headDim
	s.batchCap = n
	s.x = make([]float32, n*hp.dim)
	s.xb = make([]float32, n*max(hp.dim, qDim))
	s.xb2 = make([]float32, n*hp.dim)
	s.q = make([]float32, n*qDim)
	s.k = make([]float32, n*kvDim)
	s.v = make([]float32, n*kvDim)
	s.att = make([]float32, n*qDim)
	s.hb = make([]float32, n*hp.ff)
	s.hb2 = make([]float32, n*hp.ff)
}

func (s *Session) ensureKV(nTok int) {
	if nTok <= s.capTok {
		return
	}
	hp := &s.m.hp
	c := max(nTok, 2*s.capTok, minKVTokens)
	c = min(c, hp.nCtx)
	kvDim := hp.nHeadKV * hp.headDim
	used := len(s.tokens)
	for l := range s.kc {
		nk := make([]float32, c*kvDim)
		nv := make([]float32, c*kvDim)
		if used > 0 {
			copy(nk, s.kc[l][:used*kvDim])
			for r := 0; r < kvDim; r++ {
				copy(nv[r*c:r*c+used], s.vc[l][r*s.capTok:r*s.capTok+used])
			}
		}
		s.kc[l], s.vc[l] = nk, nv
	}
	s.capTok = c
}

// eval appends ids to the evaluated tokens and returns the logits that
// predict the token after the last of them. The slice is owned by the
// Session and valid until the next call.
func (s *Session) eval(ctx context.Context, ids []int32) ([]float32, error) {
	hp := &s.m.hp
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: nothing to evaluate", ErrEmptyPrompt)
	}
	if len(s.tokens)+len(ids) > hp.nCtx {
		return nil, fmt.Errorf("%w: %d cached + %d new tokens > context %d", ErrContextOverflow, len(s.tokens), len(ids), hp.nCtx)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= hp.vocab {
			return nil, fmt.Errorf("%w: token id %d outside vocabulary of %d", ErrBadRequest, id, hp.vocab)
		}
	}
	s.ensureKV(len(s.tokens) + len(ids))
	for len(ids) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(len(ids), promptBatch)
		if err := s.forward(ids[:n], len(ids) == n); err != nil {
			return nil, err
		}
		ids = ids[n:]
	}
	return s.logits, nil
}

// forward runs the transformer over one batch of tokens at positions
// len(s.tokens)…, appends their keys and values to the cache and, when
// wantLogits, computes the logits of the last token into s.logits.
func (s *Session) forward(ids []int32, wantLogits bool) error {
	m := s.m
	m.computeMu.Lock()
	defer m.computeMu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	hp := &m.hp
	n := len(ids)
	s.ensureBatch(n)
	dim, hd := hp.dim, hp.headDim
	qDim, kvDim := hp.nHead*hd, hp.nHeadKV*hd
	pos0 := len(s.tokens)
	pool := m.pool

	rb, err := m.embd.Type.RowBytes(dim)
	if err != nil {
		return err
	}
	for i, id := range ids {
		row := m.embd.Data[int(id)*rb : (int(id)+1)*rb]
		if err := quant.Dequantize(m.embd.Type, row, s.x[i*dim:(i+1)*dim]); err != nil {
			return fmt.Errorf("engine: embedding row %d: %w", id, err)
		}
	}
	x, xb, xb2 := s.x[:n*dim], s.xb[:n*dim], s.xb2[:n*dim]
	q, k, v := s.q[:n*qDim], s.k[:n*kvDim], s.v[:n*kvDim]
	att, hb, hb2 := s.att[:n*qDim], s.hb[:n*hp.ff], s.hb2[:n*hp.ff]
	for li := range m.layers {
		l := &m.layers[li]
		for i := 0; i < n; i++ {
			rmsNorm(xb[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], l.attnNorm, hp.eps)
		}
		quant.MatMul(pool, q, l.wq, xb, n)
		quant.MatMul(pool, k, l.wk, xb, n)
		quant.MatMul(pool, v, l.wv, xb, n)
		addBias(q, l.bq)
		addBias(k, l.bk)
		addBias(v, l.bv)
		kc, vc := s.kc[li], s.vc[li]
		for i := 0; i < n; i++ {
			pos := pos0 + i
			for h := 0; h < hp.nHead; h++ {
				m.rope.apply(q[i*qDim+h*hd:i*qDim+(h+1)*hd], pos)
			}
			for h := 0; h < hp.nHeadKV; h++ {
				m.rope.apply(k[i*kvDim+h*hd:i*kvDim+(h+1)*hd], pos)
			}
		}
		copy(kc[pos0*kvDim:(pos0+n)*kvDim], k)
		for i := 0; i < n; i++ {
			for r, val := range v[i*kvDim : (i+1)*kvDim] {
				vc[r*s.capTok+pos0+i] = val
			}
		}
		s.aLayer, s.aPos0 = li, pos0
		if work := n * hp.nHead * (pos0 + n) * hd; work >= parallelAttention {
			pool.Run(n*hp.nHead, s.attnFn)
		} else {
			s.attention(0, 0, n*hp.nHead)
		}
		quant.MatMul(pool, xb2, l.wo, att, n)
		addTo(x, xb2)
		for i := 0; i < n; i++ {
			rmsNorm(xb[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], l.ffnNorm, hp.eps)
		}
		quant.MatMul(pool, hb, l.wGate, xb, n)
		quant.MatMul(pool, hb2, l.wUp, xb, n)
		if len(hb) >= parallelSwiGLU {
			pool.Run(len(hb), s.swigluFn)
		} else {
			swiglu(hb, hb2)
		}
		quant.MatMul(pool, xb2, l.wDown, hb, n)
		addTo(x, xb2)
	}
	if s.pooled != nil {
		for i := 0; i < n; i++ {
			rmsNorm(xb[:dim], x[i*dim:(i+1)*dim], m.outN, hp.eps)
			addTo(s.pooled, xb[:dim])
		}
	}
	s.tokens = append(s.tokens, ids...)
	if wantLogits {
		last := x[(n-1)*dim : n*dim]
		rmsNorm(xb[:dim], last, m.outN, hp.eps)
		quant.MatMul(pool, s.logits, m.output, xb[:dim], 1)
	}
	return nil
}

// attention computes causal softmax attention for the (token, head) pairs
// [start, end) of the running forward pass. worker selects the score buffer.
func (s *Session) attention(worker, start, end int) {
	hp := &s.m.hp
	hd := hp.headDim
	group := hp.nHead / hp.nHeadKV
	qDim, kvDim := hp.nHead*hd, hp.nHeadKV*hd
	kc, vc := s.kc[s.aLayer], s.vc[s.aLayer]
	scale := float32(1 / math.Sqrt(float64(hd)))
	sc := s.scores[worker*hp.nCtx : (worker+1)*hp.nCtx]
	for t := start; t < end; t++ {
		i, h := t/hp.nHead, t%hp.nHead
		pos := s.aPos0 + i
		q := s.q[i*qDim+h*hd : i*qDim+(h+1)*hd]
		ko := (h / group) * hd
		mx := float32(math.Inf(-1))
		for j := 0; j <= pos; j++ {
			d := quant.DotF32(q, kc[j*kvDim+ko:j*kvDim+ko+hd]) * scale
			sc[j] = d
			if d > mx {
				mx = d
			}
		}
		var sum float64
		for j := 0; j <= pos; j++ {
			e := float32(math.Exp(float64(sc[j] - mx)))
			sc[j] = e
			sum += float64(e)
		}
		inv := float32(1 / sum)
		w := sc[:pos+1]
		for j := range w {
			w[j] *= inv
		}
		out := s.att[i*qDim+h*hd : i*qDim+(h+1)*hd]
		for d := range out {
			row := (ko + d) * s.capTok
			out[d] = quant.DotF32(w, vc[row:row+pos+1])
		}
	}
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
	for i, v := range g {
		g[i] = v / (1 + float32(math.Exp(float64(-v)))) * u[i]
	}
}

package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SampleParams selects the next token from the logits. The zero value is
// greedy decoding without penalties.
//
// The chain follows llama.cpp's default order: repetition penalty → top-k →
// top-p → min-p → temperature → softmax → draw. Temperature 0 (or below
// 1e-6) is greedy argmax after the penalty, with the lowest id winning a tie.
type SampleParams struct {
	// Temperature divides the logits; 0 means greedy.
	Temperature float32
	// TopK keeps the K most likely tokens; 0 keeps all.
	TopK int
	// TopP keeps the smallest set whose probability mass reaches TopP; 0 or 1
	// disables it.
	TopP float32
	// MinP drops tokens whose probability is below MinP times that of the most
	// likely token; 0 disables it.
	MinP float32
	// RepeatPenalty divides positive (multiplies negative) logits of the
	// tokens seen in the last RepeatLastN positions; 0 or 1 disables it.
	RepeatPenalty float32
	// RepeatLastN is the penalty window; 0 means 64 (llama.cpp's default),
	// -1 the whole context.
	RepeatLastN int
	// Seed seeds the random draw; equal seeds give equal outputs.
	Seed uint64
}

// defaultRepeatLastN is llama.cpp's default penalty window (common.h).
const defaultRepeatLastN = 64

// greedyTemperature: below this the distribution is treated as a point mass,
// like llama.cpp's temp <= 0 case; tiny positive values would only overflow exp.
const greedyTemperature = 1e-6

func (p SampleParams) validate() error {
	switch {
	case math.IsNaN(float64(p.Temperature)) || p.Temperature < 0:
		return fmt.Errorf("%w: temperature %v must be >= 0", ErrBadRequest, p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("%w: top_k %d must be >= 0", ErrBadRequest, p.TopK)
	case math.IsNaN(float64(p.TopP)) || p.TopP < 0 || p.TopP > 1:
		return fmt.Errorf("%w: top_p %v must be in [0, 1]", ErrBadRequest, p.TopP)
	case math.IsNaN(float64(p.MinP)) || p.MinP < 0 || p.MinP > 1:
		return fmt.Errorf("%w: min_p %v must be in [0, 1]", ErrBadRequest, p.MinP)
	case math.IsNaN(float64(p.RepeatPenalty)) || p.RepeatPenalty < 0:
		return fmt.Errorf("%w: repeat_penalty %v must be >= 0", ErrBadRequest, p.RepeatPenalty)
	case p.RepeatLastN < -1:
		return fmt.Errorf("%w: repeat_last_n %d must be >= -1", ErrBadRequest, p.RepeatLastN)
	}
	return nil
}

type candidate struct {
	id    int32
	logit float32
	p     float32
}

// sampler holds the per-Session buffers of the sampling chain, so that a
// draw allocates nothing. Not safe for concurrent use.
type sampler struct {
	cands []candidate
	seen  []uint32 // per-token stamp for the penalty's "seen" set
	stamp uint32
	rng   *rand.Rand
	pcg   *rand.PCG
	raw   []float32 // the logits before sampling, kept when logprobs are asked for
	// broken: the last sample that drew nothing saw a NaN or +Inf logit
	// (broken weights), not only -Inf ones (a constraint's mask).
	broken bool
}

func newSampler(vocab int) *sampler {
	pcg := rand.NewPCG(0, 0)
	return &sampler{
		cands: make([]candidate, vocab),
		seen:  make([]uint32, vocab),
		pcg:   pcg,
		rng:   rand.New(pcg),
	}
}

// reseed restarts the random stream; the second PCG word is a fixed odd
// constant so that seed 0 is as good as any other.
func (s *sampler) reseed(seed uint64) { s.pcg.Seed(seed, 0x9e3779b97f4a7c15) }

// skip advances the random stream by n draws, as n non-greedy samples do.
func (s *sampler) skip(n int) {
	for range n {
		s.rng.Float64()
	}
}

// argmax returns the index of the largest value, the lowest one on ties.
func argmax(logits []float32) int32 {
	best, bi := float32(math.Inf(-1)), 0
	for i, v := range logits {
		if v > best {
			best, bi = v, i
		}
	}
	return int32(bi)
}

// applyPenalty applies the repetition penalty in place to logits for every
// distinct token of recent.
func (s *sampler) applyPenalty(logits []float32, recent []int32, penalty float32) {
	if penalty == 0 || penalty == 1 || len(recent) == 0 {
		return
	}
	s.stamp++
	if s.stamp == 0 { // wrapped: clear the stamps once every 2^32 draws
		clear(s.seen)
		s.stamp = 1
	}
	for _, id := range recent {
		if id < 0 || int(id) >= len(logits) || s.seen[id] == s.stamp {
			continue
		}
		s.seen[id] = s.stamp
		if logits[id] <= 0 {
			logits[id] *= penalty
		} else {
			logits[id] /= penalty
		}
	}
}

func byLogitDesc(a, b candidate) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	case a.id < b.id:
		return -1
	case a.id > b.id:
		return 1
	}
	return 0
}

// less reports whether a ranks below b (smaller logit, or equal logit and
// larger id).
func less(a, b candidate) bool {
	return a.logit < b.logit || (a.logit == b.logit && a.id > b.id)
}

// topK moves the k best candidates to the front of c in descending order and
// returns them. It keeps a min-heap of size k: O(n log k).
func topK(c []candidate, k int) []candidate {
	if k <= 0 || k >= len(c) {
		slices.SortFunc(c, byLogitDesc)
		return c
	}
	h := c[:k]
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	for i := k; i < len(c); i++ {
		if less(h[0], c[i]) {
			h[0], c[i] = c[i], h[0]
			siftDown(h, 0)
		}
	}
	slices.SortFunc(h, byLogitDesc)
	return h
}

// topKLogits is topK over the candidates of logits (each id its index),
// in buf, without writing a candidate for every logit first: the same
// comparisons in the same order, so the same result, at a vocabulary's
// reads instead of a candidate array's writes and reads (32000 logits are
// 384 KB of candidates, per sequence and token). 0 < k < len(logits).
func topKLogits(buf []candidate, logits []float32, k int) []candidate {
	h := buf[:k]
	for i := range h {
		h[i] = candidate{id: int32(i), logit: logits[i]}
	}
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	for i := k; i < len(logits); i++ {
		if c := (candidate{id: int32(i), logit: logits[i]}); less(h[0], c) {
			h[0] = c
			siftDown(h, 0)
		}
	}
	slices.SortFunc(h, byLogitDesc)
	return h
}

func siftDown(h []candidate, i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && less(h[r], h[l]) {
			m = r
		}
		if !less(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// softmax fills c[i].p from c[i].logit (any order).
func softmax(c []candidate) {
	maxL := c[0].logit
	for i := range c {
		maxL = max(maxL, c[i].logit)
	}
	var sum float64
	for i := range c {
		e := float32(math.Exp(float64(c[i].logit - maxL)))
		c[i].p = e
		sum += float64(e)
	}
	for i := range c {
		c[i].p = float32(float64(c[i].p) / sum)
	}
}

// sample runs the chain over logits (modified in place by the penalty) and
// returns the chosen token id.
func (s *sampler) sample(logits []float32, p SampleParams, history []int32) int32 {
	if p.RepeatPenalty != 0 && p.RepeatPenalty != 1 {
		n := p.RepeatLastN
		if n == 0 {
			n = defaultRepeatLastN
		}
		recent := history
		if n > 0 && len(recent) > n {
			recent = recent[len(recent)-n:]
		}
		s.applyPenalty(logits, recent, p.RepeatPenalty)
	}
	if id, ok := s.draw(logits, p); ok {
		return id
	}
	// A NaN among the logits (a model with broken weights) poisons the
	// chain's comparisons: NaN counts as -Inf, and with no finite logit
	// left no token can be drawn (-1; the generation ends in an error).
	finite := false
	s.broken = false
	for i, v := range logits {
		switch {
		case v != v:
			logits[i] = negInf32
			s.broken = true
		case v > negInf32:
			finite = true
			s.broken = s.broken || math.IsInf(float64(v), 1)
		}
	}
	if !finite {
		return -1
	}
	if id, ok := s.draw(logits, p); ok {
		return id
	}
	return -1
}

// negInf32 is float32 -Inf.
var negInf32 = float32(math.Inf(-1))

// draw is the chain after the penalty: ok false when the logits leave no
// candidate or no probabilities (NaN or +Inf among them).
func (s *sampler) draw(logits []float32, p SampleParams) (int32, bool) {
	if p.Temperature < greedyTemperature {
		id := argmax(logits)
		return id, logits[id] > negInf32
	}
	topP := p.TopP > 0 && p.TopP < 1
	var c []candidate
	if p.TopK > 0 && p.TopK < len(logits) {
		// Sorted from here on; only the k best become candidates.
		c = topKLogits(s.cands, logits, p.TopK)
	} else {
		c = s.cands[:len(logits)]
		for i, v := range logits {
			c[i] = candidate{id: int32(i), logit: v}
		}
		if topP {
			c = topK(c, p.TopK) // sorted: top-p needs the order
		}
	}
	if topP && len(c) > 1 {
		softmax(c)
		var cum float32
		for i := range c {
			cum += c[i].p
			if cum >= p.TopP {
				c = c[:i+1]
				break
			}
		}
	}
	if p.MinP > 0 && len(c) > 1 {
		// min-p on logits: p_i >= minP·p_max  ⇔  l_i >= l_max + ln(minP).
		maxL := c[0].logit
		for i := range c {
			maxL = max(maxL, c[i].logit)
		}
		thr := maxL + float32(math.Log(float64(p.MinP)))
		n := 0
		for i := range c {
			if c[i].logit >= thr {
				c[n] = c[i]
				n++
			}
		}
		c = c[:n]
	}
	if len(c) == 0 {
		return -1, false
	}
	for i := range c {
		c[i].logit /= p.Temperature
	}
	softmax(c)
	if c[0].p != c[0].p {
		return -1, false
	}
	r := float32(s.rng.Float64())
	var cum float32
	for i := range c {
		cum += c[i].p
		if r < cum {
			return c[i].id, true
		}
	}
	return c[len(c)-1].id, true
}

// TokenLogprob is one token's log-probability under the model's raw
// distribution.
type TokenLogprob struct {
	ID      int32
	Text    string // the token's piece (see tokenizer.Piece)
	Logprob float32
}

// MaxTopLogprobs bounds GenerateRequest.TopLogprobs; it is OpenAI's limit.
const MaxTopLogprobs = 20

// fillLogprobs sets tok's piece, log-probability and n alternatives from
// the raw logits.
func (s *Session) fillLogprobs(tok *Token, raw []float32, n int) {
	tok.Piece = s.m.tok.Piece(tok.ID)
	tok.Logprob, tok.TopLogprobs = s.smp.logprobs(raw, tok.ID, n)
	for i := range tok.TopLogprobs {
		tok.TopLogprobs[i].Text = s.m.tok.Piece(tok.TopLogprobs[i].ID)
	}
}

// logprobs returns the log-softmax of raw at id and the n most likely
// tokens (descending, lowest id first on ties), reusing s.cands. raw is the
// unmodified logits: OpenAI reports the model's distribution, before
// penalties, temperature and constraints.
func (s *sampler) logprobs(raw []float32, id int32, n int) (float32, []TokenLogprob) {
	maxL := raw[argmax(raw)]
	var sum float64
	for _, v := range raw {
		sum += math.Exp(float64(v - maxL))
	}
	lse := float64(maxL) + math.Log(sum)
	chosen := float32(float64(raw[id]) - lse)
	if n <= 0 {
		return chosen, nil
	}
	c := s.cands[:len(raw)]
	for i, v := range raw {
		c[i] = candidate{id: int32(i), logit: v}
	}
	c = topK(c, min(n, len(c)))
	top := make([]TokenLogprob, len(c))
	for i, cd := range c {
		top[i] = TokenLogprob{ID: cd.id, Logprob: float32(float64(cd.logit) - lse)}
	}
	return chosen, top
}

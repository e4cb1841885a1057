package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rbee-project/rbee/model/tokenizer"
)

// GenerateRequest is one completion request.
type GenerateRequest struct {
	// Prompt is the token ids to continue (BOS included if wanted); it must
	// not be empty.
	Prompt []int32
	// MaxTokens caps the generated tokens; 0 means until the context is full.
	MaxTokens int
	// Sample selects tokens; the zero value is greedy.
	Sample SampleParams
	// Stop ends generation as soon as the decoded text contains one of these
	// strings; the stop string and what follows are not emitted.
	Stop []string
	// StopQuiet, if set, is a leading span of the output in which Stop
	// is not looked for (a think-tag model's reasoning block, where a
	// stop string meant for the answer must not end the generation).
	StopQuiet *QuietSpan
	// Resume continues an interrupted generation of the same request: the
	// last Resume ids of Prompt are the tokens it had generated (and emitted)
	// so far. They are replayed through the text decoder and the stop
	// matcher without being emitted, the random draw is advanced by one draw
	// per replayed token (the sampler takes exactly one per non-greedy
	// token), Index and CompletionTokens count from Resume, MaxTokens counts
	// them too, and PromptTokens excludes them. With the same model, Sample
	// and Stop the emitted tokens are those the uninterrupted generation
	// would have emitted after the first Resume ones. It must leave at least
	// one prompt token.
	Resume int
	// Constraint, if set, restricts every sampled token (a grammar, see
	// model/grammar); generation ends with StopEOS once it is Done.
	Constraint Constraint
	// Logprobs asks for each token's log-probability (Token.Logprob) and
	// TopLogprobs (0..MaxTopLogprobs) of the most likely alternatives.
	Logprobs    bool
	TopLogprobs int
}

// QuietSpan is a leading span of the output that stop strings do not
// match in: from Open, when the output begins with it (after blanks),
// or from the first token when Inside, up to and including the first
// Close after it. An output that begins otherwise has none.
type QuietSpan struct {
	Open, Close string
	Inside      bool
}

// Constraint restricts which tokens may be sampled. One Constraint serves
// one generation; the engine calls Mask before each draw, then Accept with
// the drawn token (end-of-generation tokens included). Calls for one
// generation never overlap, but Batch.Step may make them on a pool thread,
// at the same time as other generations' draws: a Constraint must not
// share mutable state with another one without its own locking.
type Constraint interface {
	// Mask sets the logits of the tokens that may not come next to -Inf;
	// it must leave at least one token allowed.
	Mask(logits []float32)
	// Accept advances past id; an error (a token Mask forbade) ends the
	// generation with that error.
	Accept(id int32) error
	// Done reports that the output is complete: nothing may follow.
	Done() bool
}

// Token is one generated token as emitted by Generate.
type Token struct {
	// ID is the token id, or -1 for a final text-only chunk (text that was
	// held back because it could have begun a stop string, or bytes of an
	// incomplete UTF-8 sequence flushed at the end).
	ID int32
	// Text is the UTF-8-safe text this token completes; it may be "" while a
	// multi-byte character or a possible stop-string prefix is pending.
	Text string
	// Index counts generated tokens from 0.
	Index int
	// Logprob is the token's log-probability under the raw logits (before
	// penalties, temperature and constraints), and TopLogprobs the most
	// likely tokens; both only when GenerateRequest.Logprobs is set and
	// ID >= 0. Piece is then the token's own bytes (tokenizer.Piece).
	Logprob     float32
	TopLogprobs []TokenLogprob
	Piece       string
}

// Stop reasons reported in Result.StopReason.
const (
	StopEOS       = "eos"
	StopString    = "stop"
	StopLength    = "length"
	StopCancelled = "cancelled"
)

// Result summarises a Generate call.
type Result struct {
	PromptTokens int
	// CachedTokens are the leading PromptTokens the session's cache held
	// already (an earlier turn of the conversation), not evaluated again.
	CachedTokens     int
	CompletionTokens int
	StopReason       string // StopEOS, StopString, StopLength or StopCancelled
	PromptDuration   time.Duration
	GenDuration      time.Duration
}

// prefillChunk bounds the prompt rows of one Batch step (all prefilling
// sequences together): a newcomer's prompt is evaluated in chunks of at most
// this many tokens, each in one step with the decoding sequences' rows, so
// the decoders wait at most one chunk's forward pass for it. 128 is the
// single-session prompt batch: weights are streamed once per 128 prompt
// tokens either way.
const prefillChunk = promptBatch

// Generate evaluates req.Prompt and samples up to req.MaxTokens tokens,
// calling emit for each in order. It stops at an end-of-generation token
// (not emitted), a stop string, MaxTokens, a full context, ctx cancellation
// (checked between tokens; Result.StopReason "cancelled" and ctx's error are
// returned), or an error from emit (returned as is).
//
// The Session's cache keeps the evaluated tokens: when the next prompt
// starts with them, only the new suffix is evaluated.
//
// Generate is the one-sequence case of Begin and Batch.Step, run on the
// Session's own Batch.
func (s *Session) Generate(ctx context.Context, req GenerateRequest, emit func(Token) error) (Result, error) {
	q, err := s.Begin(req)
	if err != nil {
		return Result{}, err
	}
	seqs := []*Sequence{q}
	if q.done { // a resumed generation that had already ended
		for _, t := range q.out {
			if err := emit(t); err != nil {
				return q.res, err
			}
		}
	}
	for !q.done {
		if err := ctx.Err(); err != nil {
			q.Cancel()
			return q.res, err
		}
		if err := s.b.Step(seqs); err != nil {
			return q.res, err
		}
		for _, t := range q.out {
			if err := emit(t); err != nil {
				return q.res, err
			}
		}
	}
	return q.res, q.err
}

// Sequence is one generation in progress on a Session: Begin starts it and
// Batch.Step advances it, together with the sequences of other Sessions,
// one prompt chunk or one token per step. The Session must not be used in
// any other way until the Sequence is done (or cancelled).
type Sequence struct {
	s      *Session
	req    GenerateRequest
	prompt []int32 // the part of the prompt not in the cache when it began
	split  int     // index in prompt where resumed tokens (GenerateRequest.Resume) begin
	pi     int     // prompt tokens evaluated so far
	next   int32   // sampled, emitted, not yet evaluated
	dec    *tokenizer.StreamDecoder
	st     stopper
	out    []Token // produced by the last step
	done   bool
	err    error // a constraint refused the drawn token (see Err)
	res    Result
	start  time.Time
	gen    time.Time
}

// Begin validates req and starts a generation on s; the cached prefix of
// the prompt is reused (at least one token is evaluated for logits). Bad
// requests (empty prompt, token ids outside the vocabulary, a prompt that
// leaves no room in the context, bad sampling parameters or stop strings)
// are errors wrapping ErrEmptyPrompt, ErrBadRequest or ErrContextOverflow
// that leave the Session as it was.
func (s *Session) Begin(req GenerateRequest) (*Sequence, error) {
	hp := &s.m.hp
	if !s.m.generates() {
		return nil, fmt.Errorf("%w: generation runs on the first stage or the head", ErrShard)
	}
	if len(req.Prompt) == 0 {
		return nil, ErrEmptyPrompt
	}
	if req.MaxTokens < 0 {
		return nil, fmt.Errorf("%w: max_tokens %d must be >= 0", ErrBadRequest, req.MaxTokens)
	}
	if err := req.Sample.validate(); err != nil {
		return nil, err
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs {
		return nil, fmt.Errorf("%w: top_logprobs %d must be in [0, %d]", ErrBadRequest, req.TopLogprobs, MaxTopLogprobs)
	}
	for _, st := range req.Stop {
		if st == "" {
			return nil, fmt.Errorf("%w: empty stop string", ErrBadRequest)
		}
	}
	if err := s.checkIDs(req.Prompt, "prompt "); err != nil {
		return nil, err
	}
	if req.Resume < 0 || req.Resume >= len(req.Prompt) {
		return nil, fmt.Errorf("%w: resume %d must leave at least one of the %d prompt tokens", ErrBadRequest, req.Resume, len(req.Prompt))
	}
	// A resumed generation may have filled the context: its last token
	// was emitted, never evaluated; it ends at once (below).
	full := req.Resume > 0 && len(req.Prompt) == hp.nCtx
	if len(req.Prompt)+1 > hp.nCtx && !full {
		return nil, fmt.Errorf("%w: %d prompt tokens + 1 > context %d", ErrContextOverflow, len(req.Prompt), hp.nCtx)
	}
	common := s.CommonPrefix(req.Prompt)
	s.tokens = s.tokens[:common]
	s.smp.reseed(req.Sample.Seed)
	s.smp.skip(req.Resume)
	q := &Sequence{
		s: s, req: req, prompt: req.Prompt[common:],
		split: max(0, len(req.Prompt)-req.Resume-common),
		dec:   s.m.tok.NewStreamDecoder(),
		st:    newStopper(req.Stop, req.StopQuiet),
		out:   make([]Token, 0, 2),
		res:   Result{PromptTokens: len(req.Prompt) - req.Resume, CachedTokens: min(common, len(req.Prompt)-req.Resume), CompletionTokens: req.Resume},
		start: time.Now(),
	}
	// Resumed tokens were sent by an earlier attempt: they go through the
	// decoder and the stop matcher again, unsent.
	for _, id := range req.Prompt[len(req.Prompt)-req.Resume:] {
		if req.Constraint != nil {
			if err := req.Constraint.Accept(id); err != nil {
				return nil, fmt.Errorf("%w: resumed token %d: %v", ErrBadRequest, id, err)
			}
		}
		if _, hit := q.st.push(q.dec.Next(id)); hit {
			q.done, q.res.StopReason = true, StopString // it had ended on a stop string
			return q, nil
		}
	}
	// An attempt interrupted after its last token ends here, flushing what
	// the decoder and the stop matcher still hold (Tokens, before any Step).
	switch {
	case req.Resume > 0 && req.Constraint != nil && req.Constraint.Done():
		q.finish(StopEOS)
	case req.Resume > 0 && (req.MaxTokens > 0 && q.res.CompletionTokens >= req.MaxTokens || full):
		q.finish(StopLength)
	}
	return q, nil
}

// Session returns the Session the sequence runs on.
func (q *Sequence) Session() *Session { return q.s }

// Tokens returns what the last Step produced: nothing (a prompt chunk), one
// token, and at the end possibly a final text-only Token (ID -1). The slice
// is reused by the next Step.
func (q *Sequence) Tokens() []Token { return q.out }

// Done reports whether the generation has ended; Result then says why.
func (q *Sequence) Done() bool { return q.done }

// Result returns the generation's summary so far.
func (q *Sequence) Result() Result { return q.res }

// Err is the error that ended the generation, if any: the Constraint
// refused the token drawn under its own mask (a bug in the constraint).
func (q *Sequence) Err() error { return q.err }

// Prefilling reports whether part of the prompt is still to be evaluated.
func (q *Sequence) Prefilling() bool { return q.pi < len(q.prompt) }

// Cancel ends the generation with StopReason "cancelled". The tokens
// evaluated so far stay in the Session's cache.
func (q *Sequence) Cancel() {
	if q.done {
		return
	}
	q.out = q.out[:0]
	q.done = true
	q.res.StopReason = StopCancelled
	q.timeGen()
}

func (q *Sequence) timeGen() {
	if !q.gen.IsZero() {
		q.res.GenDuration = time.Since(q.gen)
	}
}

// Step runs one forward pass for seqs (sequences of distinct Sessions of
// this Batch's Model; done ones are skipped): a decoding sequence adds the
// token it sampled last, a prefilling one the next chunk of its prompt
// (prefillChunk tokens at most for all of them together, given in the
// order of seqs; those left out wait for a later step). Every sequence that
// has evaluated its whole prompt then samples its next token; see Tokens
// and Done. An error (ErrClosed) leaves the sequences unchanged.
func (b *Batch) Step(seqs []*Sequence) error {
	return b.StepContext(context.Background(), seqs)
}

// StepContext is Step with a context that bounds the exchange with the
// later stages of a pipeline (Remote.Forward); an unsharded Model's step
// does not block on anything else.
func (b *Batch) StepContext(ctx context.Context, seqs []*Sequence) error {
	b.plan = b.plan[:0]
	budget := prefillChunk
	for _, q := range seqs {
		if q.done {
			continue // a sequence done at Begin keeps its final Tokens
		}
		q.out = q.out[:0]
		if q.pi < len(q.prompt) {
			n := min(len(q.prompt)-q.pi, budget)
			if q.pi >= q.split {
				// Resumed tokens go one per step, as the decoding that
				// produced them evaluated them: a chunk agrees with
				// single-token evaluation only up to float rounding,
				// which could flip a near-tie of the next draw.
				n = min(n, 1)
			} else {
				n = min(n, q.split-q.pi)
			}
			if n == 0 {
				continue
			}
			budget -= n
			b.plan = append(b.plan, segment{s: q.s, ids: q.prompt[q.pi : q.pi+n], logits: q.pi+n == len(q.prompt), q: q})
			continue
		}
		q.s.one[0] = q.next
		b.plan = append(b.plan, segment{s: q.s, ids: q.s.one[:], logits: true, q: q})
	}
	if len(b.plan) == 0 {
		return nil
	}
	if err := b.forward(ctx, b.plan); err != nil {
		return err
	}
	draws := 0
	for i := range b.plan {
		sg := &b.plan[i]
		q := sg.q
		if q.pi < len(q.prompt) {
			q.pi += len(sg.ids)
			if q.pi == len(q.prompt) {
				q.res.PromptDuration = time.Since(q.start)
				q.gen = time.Now()
			}
		}
		if sg.logits {
			draws++
		}
	}
	// Each sequence draws from its own logits with its own Session's
	// sampler, decoder and constraint: with several, the draws run on the
	// pool (top-k over a 32000-token vocabulary is tens of microseconds
	// each, and the other threads would wait for them).
	if draws >= parallelDraws && b.m.pool.Threads() > 1 {
		b.m.pool.Run(len(b.plan), b.drawFn)
	} else {
		b.draw(0, 0, len(b.plan))
	}
	return nil
}

// parallelDraws is how many sequences' draws of one step go to the pool:
// below it a hand-off costs about what it saves.
const parallelDraws = 4

// draw samples the next token of the plan's segments [start, end) that
// want one (Batch.drawFn, on pool worker worker).
func (b *Batch) draw(_, start, end int) {
	for i := start; i < end; i++ {
		if sg := &b.plan[i]; sg.logits {
			sg.q.sample(b.logitsOf(sg))
		}
	}
}

// sample picks the next token from logits and applies the stop rules: the
// body of the generation loop.
func (q *Sequence) sample(logits []float32) {
	s := q.s
	var raw []float32
	if q.req.Logprobs {
		s.smp.raw = append(s.smp.raw[:0], logits...)
		raw = s.smp.raw
	}
	if q.req.Constraint != nil {
		q.req.Constraint.Mask(logits)
	}
	id := s.smp.sample(logits, q.req.Sample, s.tokens)
	if id < 0 && q.req.Constraint != nil && !s.smp.broken {
		// The constraint masked every token: say so, not that the
		// weights are broken.
		q.err = fmt.Errorf("%w: no token of the model's vocabulary continues the constrained output (a JSON schema or forced tool call) after %d tokens",
			ErrConstraint, q.res.CompletionTokens)
		q.finish(StopEOS)
		return
	}
	if id < 0 {
		// No finite logit: weights that hold NaN or infinities. The
		// generation ends with an error; nothing panics.
		q.err = fmt.Errorf("%w: its logits are not numbers (NaN or infinite): are its weights broken?", ErrBadModel)
		q.finish(StopEOS)
		return
	}
	if q.req.Constraint != nil {
		if err := q.req.Constraint.Accept(id); err != nil {
			q.err = err
			q.finish(StopEOS)
			return
		}
	}
	if s.m.tok.IsEOG(id) {
		q.finish(StopEOS)
		return
	}
	text, hit := q.st.push(q.dec.Next(id))
	tok := Token{ID: id, Text: text, Index: q.res.CompletionTokens}
	if raw != nil {
		s.fillLogprobs(&tok, raw, q.req.TopLogprobs)
	}
	q.out = append(q.out, tok)
	q.res.CompletionTokens++
	switch {
	case hit:
		q.done = true
		q.res.StopReason = StopString
		q.timeGen()
	case q.req.Constraint != nil && q.req.Constraint.Done():
		q.finish(StopEOS) // the constrained output is complete
	case q.req.MaxTokens > 0 && q.res.CompletionTokens >= q.req.MaxTokens,
		len(s.tokens)+1 > s.m.hp.nCtx:
		q.finish(StopLength)
	default:
		q.next = id
	}
}

// finish ends the generation, flushing what the decoder and the stop
// matcher still hold as a final text-only Token.
func (q *Sequence) finish(reason string) {
	rest, hit := q.st.push(q.dec.Flush())
	if !hit {
		rest += q.st.held
	}
	if hit {
		reason = StopString
	}
	if rest != "" {
		q.out = append(q.out, Token{ID: -1, Text: rest, Index: q.res.CompletionTokens})
	}
	q.done = true
	q.res.StopReason = reason
	q.timeGen()
}

// stopper holds back decoded text that might begin a stop string and
// detects complete stop strings.
type stopper struct {
	stops []string
	held  string
	// quiet is the span stop strings do not match in, until it has
	// ended (nil); inside: the span has begun; tail: the end of it seen
	// so far that may begin its Close.
	quiet  *QuietSpan
	inside bool
	tail   string
}

func newStopper(stops []string, quiet *QuietSpan) stopper {
	st := stopper{stops: stops}
	if len(stops) > 0 && quiet != nil {
		st.quiet, st.inside = quiet, quiet.Inside
	}
	return st
}

// blanks are what may come before a QuietSpan's Open (and what chat
// templates trim from a message's content: renderOpen).
const blanks = " \t\r\n"

// push adds text and returns what can be emitted now; hit reports a stop
// string (the returned text then ends right before it).
func (st *stopper) push(text string) (out string, hit bool) {
	if len(st.stops) == 0 {
		return text, false
	}
	if st.quiet != nil {
		var pass string
		pass, text = st.quietPart(text)
		if st.quiet != nil {
			return pass, false // all of it in the span, or held
		}
		out, hit = st.match(text)
		return pass + out, hit
	}
	return st.match(text)
}

// quietPart splits text into what passes unmatched (the quiet span's)
// and what follows it. While the output may still begin with Open it
// holds the text back.
func (st *stopper) quietPart(text string) (pass, rest string) {
	q := st.quiet
	if !st.inside {
		buf := st.held + text
		lead := strings.TrimLeft(buf, blanks)
		if len(lead) < len(q.Open) && strings.HasPrefix(q.Open, lead) {
			st.held = buf
			return "", ""
		}
		st.held = ""
		if !strings.HasPrefix(lead, q.Open) {
			st.quiet = nil
			return "", buf
		}
		st.inside = true
		n := len(buf) - len(lead) + len(q.Open)
		pass, rest = st.quietPart(buf[n:])
		return buf[:n] + pass, rest
	}
	s := st.tail + text
	i := strings.Index(s, q.Close)
	if i < 0 {
		st.tail = s[max(0, len(s)-len(q.Close)+1):]
		return text, ""
	}
	rest = s[i+len(q.Close):]
	st.quiet, st.tail = nil, ""
	return text[:len(text)-len(rest)], rest
}

// match looks for the stop strings in text.
func (st *stopper) match(text string) (out string, hit bool) {
	buf := st.held + text
	cut := -1
	for _, s := range st.stops {
		if i := strings.Index(buf, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		st.held = ""
		return buf[:cut], true
	}
	// Keep the longest suffix that is a proper prefix of a stop string.
	keep := 0
	for _, s := range st.stops {
		for k := min(len(s)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, s[:k]) {
				keep = k
				break
			}
		}
	}
	st.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

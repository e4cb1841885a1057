package engine

import (
	"context"
	"fmt"
	"strings"
	"time"
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
	// Constraint, if set, restricts every sampled token (a grammar, see
	// model/grammar); generation ends with StopEOS once it is Done.
	Constraint Constraint
	// Logprobs asks for each token's log-probability (Token.Logprob) and
	// TopLogprobs (0..MaxTopLogprobs) of the most likely alternatives.
	Logprobs    bool
	TopLogprobs int
}

// Constraint restricts which tokens may be sampled. One Constraint serves
// one generation; the engine calls Mask before each draw, then Accept with
// the drawn token (end-of-generation tokens included).
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
	PromptTokens     int
	CompletionTokens int
	StopReason       string // StopEOS, StopString, StopLength or StopCancelled
	PromptDuration   time.Duration
	GenDuration      time.Duration
}

// Generate evaluates req.Prompt and samples up to req.MaxTokens tokens,
// calling emit for each in order. It stops at an end-of-generation token
// (not emitted), a stop string, MaxTokens, a full context, ctx cancellation
// (checked between tokens; Result.StopReason "cancelled" and ctx's error are
// returned), or an error from emit (returned as is).
//
// The Session's cache keeps the evaluated tokens: when the next prompt
// starts with them, only the new suffix is evaluated.
func (s *Session) Generate(ctx context.Context, req GenerateRequest, emit func(Token) error) (res Result, err error) {
	hp := &s.m.hp
	if len(req.Prompt) == 0 {
		return res, ErrEmptyPrompt
	}
	if req.MaxTokens < 0 {
		return res, fmt.Errorf("%w: max_tokens %d must be >= 0", ErrBadRequest, req.MaxTokens)
	}
	if err := req.Sample.validate(); err != nil {
		return res, err
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs {
		return res, fmt.Errorf("%w: top_logprobs %d must be in [0, %d]", ErrBadRequest, req.TopLogprobs, MaxTopLogprobs)
	}
	for _, st := range req.Stop {
		if st == "" {
			return res, fmt.Errorf("%w: empty stop string", ErrBadRequest)
		}
	}
	for _, id := range req.Prompt {
		if id < 0 || int(id) >= hp.vocab {
			return res, fmt.Errorf("%w: prompt token id %d outside vocabulary of %d", ErrBadRequest, id, hp.vocab)
		}
	}
	if len(req.Prompt)+1 > hp.nCtx {
		return res, fmt.Errorf("%w: %d prompt tokens + 1 > context %d", ErrContextOverflow, len(req.Prompt), hp.nCtx)
	}
	res.PromptTokens = len(req.Prompt)

	// Reuse the cached prefix; at least one token is evaluated for logits.
	common := 0
	for common < len(s.tokens) && common < len(req.Prompt) && s.tokens[common] == req.Prompt[common] {
		common++
	}
	if common == len(req.Prompt) {
		common--
	}
	s.tokens = s.tokens[:common]

	start := time.Now()
	var logits []float32
	logits, err = s.eval(ctx, req.Prompt[common:])
	res.PromptDuration = time.Since(start)
	if err != nil {
		s.tokens = s.tokens[:common] // partial chunks are not trusted
		if ctx.Err() != nil {
			res.StopReason = StopCancelled
		}
		return res, err
	}
	s.smp.reseed(req.Sample.Seed)
	dec := s.m.tok.NewStreamDecoder()
	st := stopper{stops: req.Stop}
	genStart := time.Now()
	defer func() { res.GenDuration = time.Since(genStart) }()
	for {
		if err := ctx.Err(); err != nil {
			res.StopReason = StopCancelled
			return res, err
		}
		var raw []float32
		if req.Logprobs {
			s.smp.raw = append(s.smp.raw[:0], logits...)
			raw = s.smp.raw
		}
		if req.Constraint != nil {
			req.Constraint.Mask(logits)
		}
		id := s.smp.sample(logits, req.Sample, s.tokens)
		if req.Constraint != nil {
			if err := req.Constraint.Accept(id); err != nil {
				return res, err
			}
		}
		if s.m.tok.IsEOG(id) {
			res.StopReason = StopEOS
			break
		}
		text, hit := st.push(dec.Next(id))
		idx := res.CompletionTokens
		res.CompletionTokens++
		tok := Token{ID: id, Text: text, Index: idx}
		if raw != nil {
			s.fillLogprobs(&tok, raw, req.TopLogprobs)
		}
		if err := emit(tok); err != nil {
			return res, err
		}
		if hit {
			res.StopReason = StopString
			return res, nil
		}
		if req.Constraint != nil && req.Constraint.Done() {
			res.StopReason = StopEOS
			break
		}
		if req.MaxTokens > 0 && res.CompletionTokens >= req.MaxTokens {
			res.StopReason = StopLength
			break
		}
		if len(s.tokens)+1 > hp.nCtx {
			res.StopReason = StopLength
			break
		}
		s.one[0] = id
		if logits, err = s.eval(ctx, s.one[:]); err != nil {
			if ctx.Err() != nil {
				res.StopReason = StopCancelled
			}
			return res, err
		}
	}
	// Flush what the decoder and the stop matcher still hold.
	rest, hit := st.push(dec.Flush())
	if !hit {
		rest += st.held
	}
	if hit {
		res.StopReason = StopString
	}
	if rest != "" {
		if err := emit(Token{ID: -1, Text: rest, Index: res.CompletionTokens}); err != nil {
			return res, err
		}
	}
	return res, nil
}

// stopper holds back decoded text that might begin a stop string and
// detects complete stop strings.
type stopper struct {
	stops []string
	held  string
}

// push adds text and returns what can be emitted now; hit reports a stop
// string (the returned text then ends right before it).
func (st *stopper) push(text string) (out string, hit bool) {
	if len(st.stops) == 0 {
		return text, false
	}
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

// Package relay sends an inference request to a worker the router picks
// and relays its answer to the client, and owns what makes a stream
// outlive its worker: the retry before the first token, resuming a stream
// on another worker from the token ids already relayed, the wait for a
// place when every queue is full, and the decoding of workers' answers
// (token events, OpenAI chunks, error bodies). The node's three APIs
// (jobs, OpenAI, Ollama) each translate their request into one Forward
// call. See node/DESIGN.md, "Resume".
package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
)

// Picker chooses workers and counts requests in flight (the router).
type Picker interface {
	Pick(f router.Filter) (router.Target, error)
	Track(workerID string) func()
	// Failed and Served tell the picker how a worker's attempt ended:
	// failed as a worker (a *Retryable), or answered.
	Failed(workerID string)
	Served(workerID string)
	// Arriving reports whether a worker matching f is about to be
	// pickable (one view of it has not caught up with the other yet).
	Arriving(f router.Filter) bool
}

// Caller sends one HTTP request to a worker: on loopback for this node's
// workers, through the worker's node over libp2p for the others.
type Caller interface {
	CallWorker(ctx context.Context, t router.Target, method, path string, body []byte) (*http.Response, error)
}

// Config configures a Relay.
type Config struct {
	Router Picker
	Caller Caller
	// QueueFullWait bounds the wait for a place when every worker's queue
	// is full (0: DefaultQueueFullWait).
	QueueFullWait time.Duration
	// ArriveWait bounds the wait for a worker that is arriving (see
	// router.Router.Arriving) when no other can take the request (0:
	// DefaultArriveWait).
	ArriveWait time.Duration
	Logger     *slog.Logger
}

// Relay forwards requests to workers. Safe for concurrent use.
type Relay struct{ cfg Config }

// New returns a relay.
func New(cfg Config) *Relay {
	if cfg.QueueFullWait <= 0 {
		cfg.QueueFullWait = DefaultQueueFullWait
	}
	if cfg.ArriveWait <= 0 {
		cfg.ArriveWait = DefaultArriveWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Relay{cfg: cfg}
}

// Streams that outlive their worker. Every inference request (infer jobs,
// the OpenAI and the Ollama APIs) goes through forwardStream: the request
// is sent to a worker chosen by the scheduler and its answer relayed; when
// that worker fails — before answering, or in the middle of a stream — the
// request goes on on another worker of the same model. Before anything
// reached the client it starts again there; after, it is resumed: the
// worker gets the request plus the token ids already relayed
// (worker.Ext.Resume) and continues exactly where the failed one stopped,
// so the client sees one stream. See DESIGN.md, "Resume".

// DefaultArriveWait bounds how long a request waits for a worker that is
// arriving: ready in the registry while its node's report of it is still
// on its way by gossip, or reported ready while the leader's ready write
// is still on its way to this replica. Right after `worker spawn` returns
// or a sharded group is placed again, a request on another node would
// otherwise fail with no_worker for up to a gossip round trip. The router
// calls a worker arriving for at most 10 s from when it first found it
// so, however long the views disagree.
const DefaultArriveWait = 10 * time.Second

// arrivePoll is how soon a request waiting for an arriving worker first
// looks again, doubling up to arrivePollMax: a gossip broadcast or a Raft
// apply lands in milliseconds to a few hundred, and each look reads the
// router's views (copies of every load report and registry worker), which
// many requests waiting at once would otherwise repeat every few ms.
const (
	arrivePoll    = 25 * time.Millisecond
	arrivePollMax = 200 * time.Millisecond
)

// DefaultQueueFullWait bounds how long a request waits for a place when every
// candidate worker answers 429 (queue full). When a worker dies, its
// queued requests all move to the survivors at once and may find their
// queues full for as long as those take to finish a few generations;
// waiting for a place beats a 503 while capacity comes back, and the
// bound keeps an overloaded cluster answering.
const DefaultQueueFullWait = 10 * time.Second

// queueFullBackoff caps the pause between two rounds over full workers: a
// queue place frees within one generation, and a short pause keeps the
// request near the front.
const queueFullBackoff = 500 * time.Millisecond

// State is what a relay has passed to its client so far.
type State struct {
	// IDs are the generated tokens the client has the text of, in order.
	IDs []int32
	// Delivered: the client has received part of the answer.
	Delivered bool
	// Unresumable: the client has text whose token ids are unknown (an
	// external engine's stream), so the stream cannot go on elsewhere.
	Unresumable bool
	// TokenIDs asks OpenAI streams for worker.TokenIDEvent events.
	TokenIDs bool
	// ID and Created are an OpenAI completion's, kept across workers.
	ID      string
	Created int64
	// TextLen is the length in bytes of the text the client has: a
	// resumed completion's logprobs text_offset counts on from it.
	TextLen int
	// Format is the worker's started event's: its model answers in
	// gpt-oss's harmony format (worker.FormatHarmony), with think tags
	// (worker.FormatThink), or plain text (""); ThinkOpen, the prompt
	// opened the think block. worker.NewReasoningStream parses by them.
	Format    string
	ThinkOpen bool
}

// Ext is the extension field of the next attempt; nil when it needs none.
func (st *State) Ext() *worker.Ext {
	if !st.TokenIDs && len(st.IDs) == 0 {
		return nil
	}
	return &worker.Ext{V: worker.ExtVersion, TokenIDs: st.TokenIDs, Resume: st.IDs, ID: st.ID, Created: st.Created, TextOffset: st.TextLen}
}

// NotResumed is the failure of a worker that did not continue a resumed
// stream as asked (an external engine, or a worker of an older version).
func NotResumed(t router.Target) error {
	return &Retryable{Err: fmt.Errorf("worker %s on %s cannot resume a stream", t.Registry.ID, t.NodeName)}
}

// Body is a request body as the node amends it per attempt.
type Body map[string]json.RawMessage

// NewBody parses a JSON object body. A generation's (sampled) seed
// is pinned: a request without one (or with a negative one, which asks the
// worker to draw it) gets a random one here, so that a stream resumed on
// another worker samples as the first one would have.
func NewBody(raw []byte, sampled bool) (Body, error) {
	var b Body
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, err
	}
	if b == nil {
		return nil, errors.New("request body must be a JSON object")
	}
	// Go's JSON decoding matches field names without regard to case, so
	// "Seed" or "RBEE" reach the worker as seed and the node's extension:
	// take the fields the node reads or sets under their own names.
	b.canonical("seed")
	b.canonical(worker.ExtField)
	var seed *int64
	if v, ok := b["seed"]; sampled && (!ok || (json.Unmarshal(v, &seed) == nil && (seed == nil || *seed < 0))) {
		b["seed"], _ = json.Marshal(rand.Int64())
	}
	delete(b, worker.ExtField) // the node's to set
	return b, nil
}

// canonical renames a field spelled name in another case to name (the
// last one, in key order, when several are).
func (b Body) canonical(name string) {
	keys := make([]string, 0, len(b))
	for k := range b {
		if k != name && strings.EqualFold(k, name) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := b[name]; !ok {
			b[name] = b[k]
		}
		delete(b, k)
	}
}

// With is the body with ext set (or without the extension when nil).
func (b Body) With(ext *worker.Ext) []byte {
	if ext != nil {
		b[worker.ExtField], _ = json.Marshal(ext)
	} else {
		delete(b, worker.ExtField)
	}
	out, _ := json.Marshal(map[string]json.RawMessage(b))
	return out
}

// Forward sends body to path on a worker chosen by f and relays the
// answer with relay, which records what reached the client in st. A relay
// returns nil when the answer is complete, a *Retryable when the worker
// failed, or another error, which ends the request. After a failure the
// request goes to another worker: again from the start while nothing
// reached the client, resumed from st's token ids after. At most
// maxAttempts workers fail per request. A filter without an affinity
// key gets the body's (AffinityKey), so the turns of one conversation go
// to one worker. It returns the worker that finished it and how many
// workers were tried.
func (rl *Relay) Forward(ctx context.Context, f router.Filter, path string, body Body, st *State,
	relay func(*http.Response, router.Target) error) (router.Target, int, error) {
	if f.Exclude == nil {
		f.Exclude = map[string]bool{}
	}
	if f.Affinity == "" {
		f.Affinity = body.AffinityKey()
	}
	var last error
	for tried := 1; ; tried++ {
		resp, t, done, err := rl.open(ctx, f, path, body.With(st.Ext()))
		if err == nil {
			err = relay(resp, t)
			resp.Body.Close()
			done()
			if err == nil {
				rl.cfg.Router.Served(t.Registry.ID)
				return t, tried, nil
			}
		}
		if ctx.Err() != nil {
			return t, tried, ctx.Err()
		}
		var rt *Retryable
		if errors.As(err, &rt) && t.Registry.ID != "" {
			rl.cfg.Router.Failed(t.Registry.ID)
		}
		switch {
		case errors.Is(err, router.ErrNoWorker) && last != nil && st.Delivered:
			return t, tried, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%v; no other worker can go on with the stream", last)}
		case errors.Is(err, router.ErrNoWorker) && last != nil:
			return t, tried, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%w: every worker tried failed before the first token; last: %v", ErrAllFailed, last)}
		case !errors.As(err, &rt):
			return t, tried, err
		case st.Delivered && st.Unresumable:
			return t, tried, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%v (the stream cannot go on elsewhere: the client has text whose token ids are unknown)", err)}
		case tried >= maxAttempts:
			return t, tried, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%w: gave up after %d workers; last: %v", ErrAllFailed, tried, err)}
		}
		last = err
		f.Exclude[t.Registry.ID] = true
		rl.cfg.Logger.Warn("worker failed; the request goes on on another", "worker", t.Registry.ID, "node", t.NodeName,
			"tokens_relayed", len(st.IDs), "err", err)
	}
}

// open opens body at path on one worker chosen by f. A worker that
// answers 429 (queue full) does not count as failed: the next candidate is
// asked, and when every one is full the round starts again after a pause,
// for up to queueFullWait. Connection errors and 5xx answers are a
// *Retryable naming the worker in t. done must be called when the
// response is finished with.
func (rl *Relay) open(ctx context.Context, f router.Filter, path string, body []byte) (resp *http.Response, t router.Target, done func(), err error) {
	full := map[string]bool{}
	pause := 20 * time.Millisecond
	deadline := time.Now().Add(rl.cfg.QueueFullWait)
	for {
		round := router.Filter{Model: f.Model, Device: f.Device, WorkerID: f.WorkerID, Hive: f.Hive, Affinity: f.Affinity, Exclude: map[string]bool{}}
		for id := range f.Exclude {
			round.Exclude[id] = true
		}
		for id := range full {
			round.Exclude[id] = true
		}
		var t router.Target
		var err error
		if len(full) == 0 {
			var waited bool
			t, waited, err = rl.pick(ctx, round)
			if waited {
				// The wait for an arriving worker is not the wait for
				// a place in its queue.
				deadline = time.Now().Add(rl.cfg.QueueFullWait)
			}
		} else {
			t, err = rl.cfg.Router.Pick(round)
		}
		if err != nil && ctx.Err() != nil {
			return nil, t, nil, ctx.Err()
		}
		if err != nil {
			if len(full) == 0 {
				return nil, t, nil, err
			}
			if time.Now().After(deadline) {
				return nil, t, nil, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%w: the queue of every worker serving it stayed full for %v", ErrAllFailed, rl.cfg.QueueFullWait)}
			}
			select {
			case <-ctx.Done():
				return nil, t, nil, ctx.Err()
			case <-time.After(pause):
			}
			pause = min(2*pause, queueFullBackoff)
			clear(full)
			continue
		}
		done := rl.cfg.Router.Track(t.Registry.ID)
		resp, err := rl.cfg.Caller.CallWorker(ctx, t, http.MethodPost, path, body)
		switch {
		case err != nil:
			done()
			return nil, t, nil, &Retryable{Err: err}
		case resp.StatusCode == http.StatusTooManyRequests:
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			done()
			full[t.Registry.ID] = true
			rl.cfg.Logger.Debug("worker queue full; asking another", "worker", t.Registry.ID, "node", t.NodeName)
			continue
		case resp.StatusCode >= 500:
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			done()
			return nil, t, nil, &Retryable{Err: fmt.Errorf("worker %s answered %d: %s", t.Registry.ID, resp.StatusCode, WorkerErrorMessage(b))}
		}
		return resp, t, done, nil
	}
}

// Pick picks a worker for f like the router does, but while none is a
// candidate and one is arriving (router.Router.Arriving) it waits for it,
// up to ArriveWait, polling with backoff. ctx's end ends the wait.
func (rl *Relay) Pick(ctx context.Context, f router.Filter) (router.Target, error) {
	t, _, err := rl.pick(ctx, f)
	return t, err
}

func (rl *Relay) pick(ctx context.Context, f router.Filter) (t router.Target, waited bool, err error) {
	by := time.Now().Add(rl.cfg.ArriveWait)
	poll := arrivePoll
	for {
		t, err = rl.cfg.Router.Pick(f)
		if err == nil || !errors.Is(err, router.ErrNoWorker) || !time.Now().Before(by) || !rl.cfg.Router.Arriving(f) {
			return t, waited, err
		}
		if !waited {
			rl.cfg.Logger.Debug("no worker yet, one is arriving: waiting for it", "model", f.Model, "worker", f.WorkerID, "up_to", rl.cfg.ArriveWait)
		}
		waited = true
		select {
		case <-ctx.Done():
			return t, waited, ctx.Err()
		case <-time.After(min(poll, time.Until(by))):
		}
		poll = min(2*poll, arrivePollMax)
	}
}

// Rejected is a worker's 4xx answer: the request itself is at fault, and
// another worker would answer the same.
type Rejected struct {
	// Status is the worker's HTTP status; Detail its error body.
	Status int
	Detail worker.ErrorDetail
	msg    string
}

func (r *Rejected) Error() string { return r.msg }

// RejectedBy reads a worker's 4xx answer into a *Rejected inside a
// bad-request job error.
func RejectedBy(resp *http.Response, t router.Target) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	r := &Rejected{Status: resp.StatusCode, msg: fmt.Sprintf("worker %s answered %d: %s", t.Registry.ID, resp.StatusCode, WorkerErrorMessage(b))}
	if d, ok := WorkerError(b); ok {
		r.Detail = d
	} else {
		r.Detail.Message = string(b)
	}
	return &jobs.Error{Code: jobs.CodeBadRequest, Err: r}
}

// Infer relays one worker's /v1/infer stream: token events go to
// onToken as they arrive (their ids into st); it returns the end event.
// A stream that breaks or ends with an error event other than a Rejected
// request is the worker's failure (*Retryable).
func Infer(resp *http.Response, t router.Target, st *State, onToken func(worker.TokenEvent) error) (worker.EndEvent, error) {
	var end worker.EndEvent
	if resp.StatusCode != http.StatusOK {
		return end, RejectedBy(resp, t)
	}
	started := false
	err := sse.Read(resp.Body, MaxEvent, func(ev sse.Event) error {
		switch ev.Type {
		case "started":
			var se worker.StartedEvent
			if err := json.Unmarshal(ev.Data, &se); err != nil {
				return err
			}
			if se.Resumed != len(st.IDs) {
				return NotResumed(t)
			}
			started = true
			st.Format, st.ThinkOpen = se.Format, se.ThinkOpen
		case "token":
			var te worker.TokenEvent
			if err := json.Unmarshal(ev.Data, &te); err != nil {
				return err
			}
			switch {
			case !started && len(st.IDs) > 0:
				return NotResumed(t)
			case !started:
				st.Unresumable = true // an engine: its events carry no ids
			case te.ID >= 0:
				st.IDs = append(st.IDs, te.ID)
			}
			if te.ID < 0 {
				// The final flush of held-back text: a worker that went on
				// would flush it again.
				st.Unresumable = true
			}
			st.Delivered = true
			if err := onToken(te); err != nil {
				return fmt.Errorf("%w: %v", ErrClientGone, err)
			}
		case "end":
			if err := json.Unmarshal(ev.Data, &end); err != nil {
				return err
			}
			return io.EOF
		case "error":
			var ee worker.ErrorEvent
			_ = json.Unmarshal(ev.Data, &ee)
			err := fmt.Errorf("worker %s: %s (%s)", t.Registry.ID, ee.Message, ee.Code)
			if ee.Code == "invalid_request" {
				return &jobs.Error{Code: jobs.CodeBadRequest, Err: err}
			}
			return &Retryable{Err: err}
		}
		return nil
	})
	switch {
	case errors.Is(err, io.EOF):
		return end, nil
	case err == nil:
		err = errors.New("stream ended without an end event")
	}
	return end, workerFailed(t, st, err)
}

// ErrClientGone: the client of a stream went away; nothing to go on with.
var ErrClientGone = errors.New("the client went away")

// workerFailed classifies the error that ended a relay: a *Retryable, a
// *jobs.Error or ErrClientGone as they are, anything else (the stream
// broke) as the worker's failure.
func workerFailed(t router.Target, st *State, err error) error {
	var rt *Retryable
	var je *jobs.Error
	if errors.As(err, &rt) || errors.As(err, &je) || errors.Is(err, ErrClientGone) {
		return err
	}
	return &Retryable{Err: fmt.Errorf("worker %s on %s failed mid-stream after %d tokens: %w", t.Registry.ID, t.NodeName, len(st.IDs), err)}
}

// ErrAllFailed: every worker tried failed before answering.
var ErrAllFailed = errors.New("no worker could take the request")

// ErrExtRefused: a worker refused rbee's extension field (an older
// version, which knows no such parameter).
var ErrExtRefused = errors.New("the worker does not take rbee's extension field")

// RefusedExt reads a 400 answer and returns ErrExtRefused when it refuses
// the extension field, else nil with the answer put back for the relay.
func RefusedExt(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if d, ok := WorkerError(b); ok && d.Param != nil && *d.Param == worker.ExtField {
		return ErrExtRefused
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

// MaxAnswer bounds a complete (non-streaming) answer of a worker, which
// the node holds whole before it passes it on: OpenAI's largest batch of
// embeddings (2,048 inputs) of a 4,096-wide model is about 100 MiB of JSON
// floats; a completion is far below.
const MaxAnswer = 160 << 20

// ErrAnswerTooLarge: a worker's complete answer is over MaxAnswer. Not
// the worker's failure (a batch of embeddings too large to pass on would
// be as large on any worker): the request ends, nothing is passed on cut
// short, and the worker is not retried or counted as failed.
var ErrAnswerTooLarge = errors.New("relay: the answer is too large to pass on")

// Whole passes a complete answer on (a non-streaming one, or an error
// answer): a worker that fails while it is read has sent the client
// nothing yet, so the request can start again elsewhere; an answer over
// MaxAnswer is ErrAnswerTooLarge.
func Whole(w http.ResponseWriter, resp *http.Response, t router.Target, st *State) error {
	return whole(w, resp, t, st, MaxAnswer)
}

func whole(w http.ResponseWriter, resp *http.Response, t router.Target, st *State, limit int) error {
	b, err := ReadAnswer(resp.Body, t, limit)
	if err != nil {
		return err
	}
	st.Delivered = true
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(validUTF8(b))
	return nil
}

// ReadAnswer reads a worker's complete answer of at most limit bytes
// (MaxAnswer where the caller has no reason for another): a read that
// fails is the worker's failure (a *Retryable), a longer answer
// ErrAnswerTooLarge naming the worker and the limit.
func ReadAnswer(body io.Reader, t router.Target, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, int64(limit)+1))
	if err != nil {
		return nil, &Retryable{Err: fmt.Errorf("worker %s on %s failed mid-answer: %w", t.Registry.ID, t.NodeName, err)}
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%w: worker %s on %s answered over %d MiB (ask for less: fewer inputs)", ErrAnswerTooLarge, t.Registry.ID, t.NodeName, limit>>20)
	}
	return b, nil
}

// validUTF8 is a worker's JSON as valid UTF-8, as JSON must be: an
// engine's text with invalid bytes (it decoded them for JSON, so they can
// only be inside strings) gets U+FFFD for each run of them, as rbee's own
// worker and Go's encoder write it, instead of passing bytes on that
// strict clients fail to decode.
func validUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	return bytes.ToValidUTF8(b, []byte("\uFFFD"))
}

// present reports whether a JSON field was sent with a value.
func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// OpenAIStream relays a worker's OpenAI stream event by event. The
// worker's TokenIDEvent before each token's chunk is consumed: its id is
// recorded once the chunk that follows has been passed on (or the next
// token began: its text is still held back), so st.IDs are always the
// tokens whose text the client has. A chunk carrying an error, or a stream
// that ends before [DONE], is the worker's failure; first is called at the
// first chunk passed on.
func OpenAIStream(sw *sse.Writer, resp *http.Response, t router.Target, st *State, first func()) error {
	pending := int32(-1)
	commit := func() {
		if pending >= 0 {
			st.IDs = append(st.IDs, pending)
			pending = -1
		}
	}
	err := sse.Read(resp.Body, MaxEvent, func(ev sse.Event) error {
		switch ev.Type {
		case worker.TokenIDEvent:
			var ti worker.TokenID
			if err := json.Unmarshal(ev.Data, &ti); err != nil || ti.ID < 0 {
				return fmt.Errorf("malformed %s event", worker.TokenIDEvent)
			}
			commit()
			pending = ti.ID
			return nil
		case "":
		default:
			return nil
		}
		done := string(ev.Data) == "[DONE]"
		if !done {
			var c struct {
				ID      string          `json:"id"`
				Created int64           `json:"created"`
				Error   json.RawMessage `json:"error"`
				Choices []struct {
					Text  string `json:"text"`
					Delta struct {
						Content string `json:"content"`
						// ReasoningContent: a reasoning model's
						// (gpt-oss's analysis channel), text like content.
						ReasoningContent string          `json:"reasoning_content"`
						ToolCalls        json.RawMessage `json:"tool_calls"`
					} `json:"delta"`
					Logprobs json.RawMessage `json:"logprobs"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(ev.Data, &c); err != nil {
				return fmt.Errorf("malformed chunk: %w", err)
			}
			if len(c.Error) > 0 && string(c.Error) != "null" {
				d, _ := WorkerError(ev.Data)
				err := fmt.Errorf("worker %s: %s (%s)", t.Registry.ID, d.Message, d.Code)
				if d.Code == "invalid_request" {
					return &jobs.Error{Code: jobs.CodeBadRequest, Err: err}
				}
				return &Retryable{Err: err}
			}
			if st.ID == "" {
				st.ID, st.Created = c.ID, c.Created
			}
			for _, ch := range c.Choices {
				sent := ch.Text+ch.Delta.Content+ch.Delta.ReasoningContent != "" || present(ch.Delta.ToolCalls) || present(ch.Logprobs)
				if sent && pending < 0 {
					// Text (reasoning too), a tool call or a token's logprobs without its
					// token id: an engine's stream, a tool stream (which
					// holds text back), or the final flush of held-back
					// text. Another worker could not go on without
					// sending the client some of it twice.
					st.Unresumable = true
				}
				st.TextLen += len(ch.Text)
			}
		}
		first()
		if err := sw.Data("", validUTF8(ev.Data)); err != nil {
			return fmt.Errorf("%w: %v", ErrClientGone, err)
		}
		st.Delivered = true
		commit()
		if done {
			return io.EOF
		}
		return nil
	})
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		err = errors.New("stream ended before [DONE]")
	}
	return workerFailed(t, st, err)
}

// maxAttempts bounds how many workers one request tries before its first
// token: enough to route around a crashed worker or two, never a loop.
const maxAttempts = 3

// MaxEvent bounds one line and one event of a worker's token stream:
// events are a token or a summary, far below 4 MiB.
const MaxEvent = 4 << 20

// Retryable marks a failure before the first token that another worker
// may not have.
type Retryable struct{ Err error }

func (r *Retryable) Error() string { return r.Err.Error() }
func (r *Retryable) Unwrap() error { return r.Err }

// WorkerError decodes a worker's or an engine's error answer, the one
// place that does: rbee's OpenAI-shaped {"error":{"message",…}}, where an
// engine's "code" may be a number. ok is false for any other body.
func WorkerError(b []byte) (d worker.ErrorDetail, ok bool) {
	var eb struct {
		Error *struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Param   *string         `json:"param"`
			Code    json.RawMessage `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &eb) != nil || eb.Error == nil || eb.Error.Message == "" {
		return d, false
	}
	d = worker.ErrorDetail{Message: eb.Error.Message, Type: eb.Error.Type, Param: eb.Error.Param}
	if err := json.Unmarshal(eb.Error.Code, &d.Code); err != nil && string(eb.Error.Code) != "null" {
		d.Code = string(eb.Error.Code) // a number
	}
	return d, true
}

// WorkerErrorMessage is the message of a worker's error answer: its
// OpenAI-shaped message (with the field at fault), else the text.
func WorkerErrorMessage(b []byte) string {
	if d, ok := WorkerError(b); ok {
		if d.Param != nil {
			return d.Message + " (field " + *d.Param + ")"
		}
		return d.Message
	}
	return strings.TrimSpace(string(b))
}

package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
)

// Streams that outlive their worker. Every inference request (infer jobs,
// the OpenAI and the Ollama APIs) goes through forwardStream: the request
// is sent to a worker chosen by the scheduler and its answer relayed; when
// that worker fails — before answering, or in the middle of a stream — the
// request goes on on another worker of the same model. Before anything
// reached the client it starts again there; after, it is resumed: the
// worker gets the request plus the token ids already relayed
// (worker.Ext.Resume) and continues exactly where the failed one stopped,
// so the client sees one stream. See DESIGN.md, "Resume".

// queueFullWait bounds how long a request waits for a place when every
// candidate worker answers 429 (queue full). When a worker dies, its
// queued requests all move to the survivors at once and may find their
// queues full for as long as those take to finish a few generations;
// waiting for a place beats a 503 while capacity comes back, and the
// bound keeps an overloaded cluster answering.
const queueFullWait = 10 * time.Second

// queueFullBackoff caps the pause between two rounds over full workers: a
// queue place frees within one generation, and a short pause keeps the
// request near the front.
const queueFullBackoff = 500 * time.Millisecond

// streamState is what a relay has passed to its client so far.
type streamState struct {
	// ids are the generated tokens the client has the text of, in order.
	ids []int32
	// delivered: the client has received part of the answer.
	delivered bool
	// unresumable: the client has text whose token ids are unknown (an
	// external engine's stream), so the stream cannot go on elsewhere.
	unresumable bool
	// tokenIDs asks OpenAI streams for worker.TokenIDEvent events.
	tokenIDs bool
	// id and created are an OpenAI completion's, kept across workers.
	id      string
	created int64
	// textLen is the length in bytes of the text the client has: a
	// resumed completion's logprobs text_offset counts on from it.
	textLen int
}

// ext is the extension field of the next attempt; nil when it needs none.
func (st *streamState) ext() *worker.Ext {
	if !st.tokenIDs && len(st.ids) == 0 {
		return nil
	}
	return &worker.Ext{V: worker.ExtVersion, TokenIDs: st.tokenIDs, Resume: st.ids, ID: st.id, Created: st.created, TextOffset: st.textLen}
}

// notResumed is the failure of a worker that did not continue a resumed
// stream as asked (an external engine, or a worker of an older version).
func notResumed(t router.Target) error {
	return &retryable{fmt.Errorf("worker %s on %s cannot resume a stream", t.Registry.ID, t.NodeName)}
}

// streamBody is a request body as the node amends it per attempt.
type streamBody map[string]json.RawMessage

// newStreamBody parses a JSON object body. A generation's (sampled) seed
// is pinned: a request without one (or with a negative one, which asks the
// worker to draw it) gets a random one here, so that a stream resumed on
// another worker samples as the first one would have.
func newStreamBody(raw []byte, sampled bool) (streamBody, error) {
	var b streamBody
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, err
	}
	if b == nil {
		return nil, errors.New("request body must be a JSON object")
	}
	var seed *int64
	if v, ok := b["seed"]; sampled && (!ok || (json.Unmarshal(v, &seed) == nil && (seed == nil || *seed < 0))) {
		b["seed"], _ = json.Marshal(rand.Int64())
	}
	delete(b, worker.ExtField) // the node's to set
	return b, nil
}

// with is the body with ext set (or without the extension when nil).
func (b streamBody) with(ext *worker.Ext) []byte {
	if ext != nil {
		b[worker.ExtField], _ = json.Marshal(ext)
	} else {
		delete(b, worker.ExtField)
	}
	out, _ := json.Marshal(map[string]json.RawMessage(b))
	return out
}

// forwardStream sends body to path on a worker chosen by f and relays the
// answer with relay, which records what reached the client in st. A relay
// returns nil when the answer is complete, a *retryable when the worker
// failed, or another error, which ends the request. After a failure the
// request goes to another worker: again from the start while nothing
// reached the client, resumed from st's token ids after. At most
// maxAttempts workers fail per request. It returns the worker that
// finished it and how many workers were tried.
func (n *Node) forwardStream(ctx context.Context, f router.Filter, path string, body streamBody, st *streamState,
	relay func(*http.Response, router.Target) error) (router.Target, int, error) {
	if f.Exclude == nil {
		f.Exclude = map[string]bool{}
	}
	var last error
	for tried := 1; ; tried++ {
		resp, t, done, err := n.openWorker(ctx, f, path, body.with(st.ext()))
		if err == nil {
			err = relay(resp, t)
			resp.Body.Close()
			done()
			if err == nil {
				return t, tried, nil
			}
		}
		if ctx.Err() != nil {
			return t, tried, ctx.Err()
		}
		var rt *retryable
		switch {
		case errors.Is(err, ErrNoWorker) && last != nil && st.delivered:
			return t, tried, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%v; no other worker can go on with the stream", last)}
		case errors.Is(err, ErrNoWorker) && last != nil:
			return t, tried, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%w: every worker tried failed before the first token; last: %v", ErrAllFailed, last)}
		case !errors.As(err, &rt):
			return t, tried, err
		case st.delivered && st.unresumable:
			return t, tried, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%v (the stream cannot go on elsewhere: the client has text whose token ids are unknown)", err)}
		case tried >= maxAttempts:
			return t, tried, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%w: gave up after %d workers; last: %v", ErrAllFailed, tried, err)}
		}
		last = err
		f.Exclude[t.Registry.ID] = true
		n.log.Warn("worker failed; the request goes on on another", "worker", t.Registry.ID, "node", t.NodeName,
			"tokens_relayed", len(st.ids), "err", err)
	}
}

// openWorker opens body at path on one worker chosen by f. A worker that
// answers 429 (queue full) does not count as failed: the next candidate is
// asked, and when every one is full the round starts again after a pause,
// for up to queueFullWait. Connection errors and 5xx answers are a
// *retryable naming the worker in t. done must be called when the
// response is finished with.
func (n *Node) openWorker(ctx context.Context, f router.Filter, path string, body []byte) (resp *http.Response, t router.Target, done func(), err error) {
	full := map[string]bool{}
	pause := 20 * time.Millisecond
	deadline := time.Now().Add(queueFullWait)
	for {
		round := router.Filter{Model: f.Model, Device: f.Device, WorkerID: f.WorkerID, Hive: f.Hive, Exclude: map[string]bool{}}
		for id := range f.Exclude {
			round.Exclude[id] = true
		}
		for id := range full {
			round.Exclude[id] = true
		}
		t, err := n.router.Pick(round)
		if err != nil {
			if len(full) == 0 {
				return nil, t, nil, err
			}
			if time.Now().After(deadline) {
				return nil, t, nil, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("%w: the queue of every worker serving it stayed full for %v", ErrAllFailed, queueFullWait)}
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
		done := n.router.Track(t.Registry.ID)
		resp, err := n.callWorker(ctx, t, http.MethodPost, path, body)
		switch {
		case err != nil:
			done()
			return nil, t, nil, &retryable{err}
		case resp.StatusCode == http.StatusTooManyRequests:
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			done()
			full[t.Registry.ID] = true
			n.log.Debug("worker queue full; asking another", "worker", t.Registry.ID, "node", t.NodeName)
			continue
		case resp.StatusCode >= 500:
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			done()
			return nil, t, nil, &retryable{fmt.Errorf("worker %s answered %d: %s", t.Registry.ID, resp.StatusCode, workerErrorMessage(b))}
		}
		return resp, t, done, nil
	}
}

// rejected is a worker's 4xx answer: the request itself is at fault, and
// another worker would answer the same.
type rejected struct {
	status int
	body   worker.ErrorDetail
	msg    string
}

func (r *rejected) Error() string { return r.msg }

// rejectedBy reads a worker's 4xx answer into a *rejected inside a
// bad-request job error.
func rejectedBy(resp *http.Response, t router.Target) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	r := &rejected{status: resp.StatusCode, msg: fmt.Sprintf("worker %s answered %d: %s", t.Registry.ID, resp.StatusCode, workerErrorMessage(b))}
	if d, ok := workerError(b); ok {
		r.body = d
	} else {
		r.body.Message = string(b)
	}
	return &jobs.Error{Code: jobs.CodeBadRequest, Err: r}
}

// relayInfer relays one worker's /v1/infer stream: token events go to
// onToken as they arrive (their ids into st); it returns the end event.
// A stream that breaks or ends with an error event other than a rejected
// request is the worker's failure (*retryable).
func relayInfer(resp *http.Response, t router.Target, st *streamState, onToken func(worker.TokenEvent) error) (worker.EndEvent, error) {
	var end worker.EndEvent
	if resp.StatusCode != http.StatusOK {
		return end, rejectedBy(resp, t)
	}
	started := false
	err := sse.Read(resp.Body, maxWorkerEvent, func(ev sse.Event) error {
		switch ev.Type {
		case "started":
			var se worker.StartedEvent
			if err := json.Unmarshal(ev.Data, &se); err != nil {
				return err
			}
			if se.Resumed != len(st.ids) {
				return notResumed(t)
			}
			started = true
		case "token":
			var te worker.TokenEvent
			if err := json.Unmarshal(ev.Data, &te); err != nil {
				return err
			}
			switch {
			case !started && len(st.ids) > 0:
				return notResumed(t)
			case !started:
				st.unresumable = true // an engine: its events carry no ids
			case te.ID >= 0:
				st.ids = append(st.ids, te.ID)
			}
			if te.ID < 0 {
				// The final flush of held-back text: a worker that went on
				// would flush it again.
				st.unresumable = true
			}
			st.delivered = true
			if err := onToken(te); err != nil {
				return fmt.Errorf("%w: %v", errClientGone, err)
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
			return &retryable{err}
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

// errClientGone: the client of a stream went away; nothing to go on with.
var errClientGone = errors.New("the client went away")

// workerFailed classifies the error that ended a relay: a *retryable, a
// *jobs.Error or errClientGone as they are, anything else (the stream
// broke) as the worker's failure.
func workerFailed(t router.Target, st *streamState, err error) error {
	var rt *retryable
	var je *jobs.Error
	if errors.As(err, &rt) || errors.As(err, &je) || errors.Is(err, errClientGone) {
		return err
	}
	return &retryable{fmt.Errorf("worker %s on %s failed mid-stream after %d tokens: %w", t.Registry.ID, t.NodeName, len(st.ids), err)}
}

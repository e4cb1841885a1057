package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/worker"
)

// maxAttempts bounds how many workers one request tries before its first
// token: enough to route around a crashed worker or two, never a loop.
const maxAttempts = 3

// maxWorkerEvent bounds one line and one event of a worker's token stream:
// events are a token or a summary, far below 4 MiB.
const maxWorkerEvent = 4 << 20

// inferFields are the job fields that steer routing; everything else in the
// job goes to the worker, which validates it.
var inferFields = []string{"operation", "hive", "model", "device", "worker_id", "name"}

// InferRequest is the routing part of an infer job.
type InferRequest struct {
	Model    string           `json:"model"`
	Hive     string           `json:"hive"`
	Device   string           `json:"device"`
	WorkerID string           `json:"worker_id"`
	Prompt   *string          `json:"prompt"`
	Messages []worker.Message `json:"messages"`
}

// InferResult is the result event of an infer job.
type InferResult struct {
	WorkerID   string  `json:"worker_id"`
	Node       string  `json:"node"`
	Model      string  `json:"model"`
	Text       string  `json:"text"`
	StopReason string  `json:"stop_reason"`
	TokensIn   int     `json:"tokens_in"`
	TokensOut  int     `json:"tokens_out"`
	TTFTMs     float64 `json:"ttft_ms"`
	TPS        float64 `json:"tokens_per_second"`
	Attempts   int     `json:"attempts"`
}

func validateInfer(req Request) error {
	var ir InferRequest
	if err := json.Unmarshal(req.Raw, &ir); err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "infer: %v", err)
	}
	if ir.Model == "" && ir.WorkerID == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "infer needs field \"model\" (or \"worker_id\")")
	}
	if (ir.Prompt == nil || *ir.Prompt == "") && len(ir.Messages) == 0 {
		return jobs.Errorf(jobs.CodeBadRequest, "infer needs a non-empty \"prompt\" or \"messages\"")
	}
	return nil
}

// workerBody strips the routing fields from a job body.
func workerBody(raw []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	for _, k := range inferFields {
		delete(m, k)
	}
	return json.Marshal(m)
}

// retryable marks a failure before the first token that another worker
// may not have.
type retryable struct{ err error }

func (r *retryable) Error() string { return r.err.Error() }
func (r *retryable) Unwrap() error { return r.err }

func (n *Node) opInfer(ctx context.Context, em jobs.Emitter, req Request) error {
	var ir InferRequest
	if err := json.Unmarshal(req.Raw, &ir); err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "infer: %v", err)
	}
	body, err := workerBody(req.Raw)
	if err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "infer: %v", err)
	}
	f := RouteFilter{Model: ir.Model, Device: ir.Device, WorkerID: ir.WorkerID, Hive: ir.Hive, Exclude: map[string]bool{}}
	var last error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		t, err := n.pick(f)
		if err != nil {
			if last != nil {
				return jobs.Errorf(jobs.CodeUnavailable, "every worker tried failed before the first token; last: %v", last)
			}
			return err
		}
		em.Narrate("scheduler", "route", "routing to worker %s on %s (load %d)", t.Registry.ID, t.NodeName, n.score(t))
		res, err := n.streamInfer(ctx, t, body, em)
		n.observeRequest("job", t.Registry.Model, t.NodeName, err, time.Duration(res.TTFTMs*float64(time.Millisecond)), res.TPS)
		if err == nil {
			res.Attempts = attempt
			return em.Result(res)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var rt *retryable
		if !errors.As(err, &rt) {
			return err
		}
		last = err
		f.Exclude[t.Registry.ID] = true
		em.Narrate("scheduler", "retry", "worker %s failed before the first token (%v); trying another", t.Registry.ID, err)
	}
	return jobs.Errorf(jobs.CodeUnavailable, "gave up after %d workers: %v", maxAttempts, last)
}

// streamInfer runs one attempt: tokens go to em as they arrive. An error
// before the first token is *retryable unless the worker rejected the
// request itself.
func (n *Node) streamInfer(ctx context.Context, t Target, body []byte, em jobs.Emitter) (InferResult, error) {
	res := InferResult{WorkerID: t.Registry.ID, Node: t.NodeName, Model: t.Registry.Model}
	done := n.track(t.Registry.ID)
	defer done()
	start := time.Now()
	resp, err := n.callWorker(ctx, t, http.MethodPost, "/v1/infer", body)
	if err != nil {
		return res, &retryable{err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var eb worker.ErrorBody
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
			msg = eb.Error.Message
			if eb.Error.Param != nil {
				msg += " (field " + *eb.Error.Param + ")"
			}
		}
		err := fmt.Errorf("worker %s answered %d: %s", t.Registry.ID, resp.StatusCode, msg)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return res, &retryable{err}
		}
		return res, &jobs.Error{Code: jobs.CodeBadRequest, Err: err}
	}
	var text strings.Builder
	tokens := 0
	err = sse.Read(resp.Body, maxWorkerEvent, func(ev sse.Event) error {
		switch ev.Type {
		case "token":
			var te worker.TokenEvent
			if err := json.Unmarshal(ev.Data, &te); err != nil {
				return err
			}
			if tokens == 0 {
				res.TTFTMs = float64(time.Since(start).Microseconds()) / 1000
			}
			tokens++
			text.WriteString(te.Text)
			em.Emit(jobs.Event{Type: jobs.TypeToken, Text: te.Text, Index: te.Index, ID: te.ID})
		case "end":
			var ee worker.EndEvent
			if err := json.Unmarshal(ev.Data, &ee); err != nil {
				return err
			}
			res.StopReason, res.TokensIn, res.TokensOut, res.TPS = ee.StopReason, ee.TokensIn, ee.TokensOut, ee.TokensPerSecond
			return io.EOF
		case "error":
			var ee worker.ErrorEvent
			_ = json.Unmarshal(ev.Data, &ee)
			return &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("worker %s: %s (%s)", t.Registry.ID, ee.Message, ee.Code)}
		}
		return nil
	})
	if errors.Is(err, io.EOF) {
		res.Text = text.String()
		return res, nil
	}
	if err == nil {
		err = errors.New("stream ended without an end event")
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if tokens == 0 {
		return res, &retryable{err}
	}
	return res, &jobs.Error{Code: jobs.CodeUnavailable, Err: fmt.Errorf("worker %s on %s failed mid-stream after %d tokens: %w", t.Registry.ID, t.NodeName, tokens, err)}
}

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
	"github.com/rbee-project/rbee/worker"
)

// The OpenAI-compatible API of every node: requests are scheduled like
// infer jobs and proxied to the chosen worker's own OpenAI endpoints, which
// speak the protocol; the node adds routing, retries before the first byte
// and cluster-wide /v1/models.

// openAIError writes an error in OpenAI's shape.
func openAIError(w http.ResponseWriter, status int, typ, code, param, msg string) {
	d := worker.ErrorDetail{Message: msg, Type: typ, Code: code}
	if param != "" {
		d.Param = &param
	}
	writeJSON(w, status, worker.ErrorBody{Error: d})
}

func (n *Node) handleModels(w http.ResponseWriter, r *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	data := []model{}
	now := time.Now().Unix()
	for _, m := range n.ServedModels() {
		data = append(data, model{ID: m, Object: "model", Created: now, OwnedBy: "rbee"})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// handleModel answers GET /v1/models/{id}: a served model by id or any
// name that routes to it, else an OpenAI 404.
func (n *Node) handleModel(w http.ResponseWriter, r *http.Request) {
	want := r.PathValue("id")
	for _, m := range n.ServedModels() {
		if m == want || modelMatches(m, want) {
			writeJSON(w, http.StatusOK, map[string]any{"id": m, "object": "model", "created": time.Now().Unix(), "owned_by": "rbee"})
			return
		}
	}
	openAIError(w, http.StatusNotFound, "invalid_request_error", "model_not_found", "model", fmt.Sprintf("no worker serves model %q (GET /v1/models lists the served ones)", want))
}

// readOpenAIBody reads and minimally parses an OpenAI request.
func readOpenAIBody(w http.ResponseWriter, r *http.Request) (body []byte, model string, stream bool, ok bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			openAIError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "", fmt.Sprintf("request body over %d bytes", maxRequestBytes))
			return nil, "", false, false
		}
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_body", "", err.Error())
		return nil, "", false, false
	}
	var head struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "", "malformed JSON: "+err.Error())
		return nil, "", false, false
	}
	if head.Model == "" {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "missing_model", "model", "you must provide a model parameter")
		return nil, "", false, false
	}
	return body, head.Model, head.Stream, true
}

// openRouted schedules a request for model and opens the chosen worker's
// response at path, trying other workers while nothing has been received
// (connection errors, 5xx, 429). The error wraps ErrNoWorker when no worker
// serves the model, ErrAllFailed when every one tried failed; done must be
// called when the response is finished with.
func (n *Node) openRouted(ctx context.Context, model, path string, body []byte) (resp *http.Response, t Target, done func(), err error) {
	f := RouteFilter{Model: model, Exclude: map[string]bool{}}
	var last error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		t, err := n.pick(f)
		if err != nil {
			if last == nil {
				return nil, Target{}, nil, err
			}
			break
		}
		done := n.track(t.Registry.ID)
		resp, err := n.callWorker(ctx, t, http.MethodPost, path, body)
		if err == nil && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			return resp, t, done, nil
		}
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			err = fmt.Errorf("worker %s answered %d: %s", t.Registry.ID, resp.StatusCode, strings.TrimSpace(string(b)))
		}
		done()
		if ctx.Err() != nil {
			return nil, Target{}, nil, ctx.Err()
		}
		last = err
		f.Exclude[t.Registry.ID] = true
		n.log.Warn("worker failed before the first byte; retrying", "worker", t.Registry.ID, "err", err)
	}
	return nil, Target{}, nil, fmt.Errorf("%w: %v", ErrAllFailed, last)
}

// ErrAllFailed: every worker tried failed before answering.
var ErrAllFailed = errors.New("no worker could take the request")

// proxyOpenAI serves /v1/chat/completions and /v1/completions.
func (n *Node) proxyOpenAI(w http.ResponseWriter, r *http.Request) {
	body, model, stream, ok := readOpenAIBody(w, r)
	if !ok {
		return
	}
	start := time.Now()
	resp, t, done, err := n.openRouted(r.Context(), model, r.URL.Path, body)
	if err != nil {
		n.observeRequest("openai", model, "", err, 0, 0)
		switch {
		case errors.Is(err, ErrNoWorker):
			openAIError(w, http.StatusNotFound, "invalid_request_error", "model_not_found", "model",
				fmt.Sprintf("the model %q is not served by any ready worker in this cluster (see GET /v1/models)", model))
		case r.Context().Err() == nil:
			openAIError(w, http.StatusServiceUnavailable, "server_error", "worker_unavailable", "", err.Error())
		}
		return
	}
	defer done()
	defer resp.Body.Close()
	var ttft time.Duration
	var streamErr error
	defer func() { n.observeRequest("openai", t.Registry.Model, t.NodeName, streamErr, ttft, 0) }()
	if !stream || resp.StatusCode != http.StatusOK {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		streamErr = err
		if err != nil {
			openAIError(w, http.StatusBadGateway, "server_error", "worker_failed", "", "the worker failed mid-answer: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(b)
		return
	}
	// The worker's events are relayed byte for byte as they arrive.
	sw := sse.Start(w)
	buf := make([]byte, 32<<10)
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			if ttft == 0 {
				ttft = time.Since(start)
			}
			if _, werr := w.Write(buf[:k]); werr != nil {
				return // the client went away; closing the body cancels the worker
			}
			_ = sw.Flush()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && r.Context().Err() == nil {
				streamErr = err
				_ = sw.JSON("", worker.ErrorBody{Error: worker.ErrorDetail{Message: "the worker failed mid-stream: " + err.Error(), Type: "server_error", Code: "worker_failed"}})
			}
			return
		}
	}
}

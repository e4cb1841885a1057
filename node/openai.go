package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
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
		if m == want || router.ModelMatches(m, want) {
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

// ErrAllFailed: every worker tried failed before answering.
var ErrAllFailed = errors.New("no worker could take the request")

// proxyOpenAI serves /v1/chat/completions, /v1/completions and
// /v1/embeddings through forwardStream: a stream goes on on another worker
// when its worker fails.
func (n *Node) proxyOpenAI(w http.ResponseWriter, r *http.Request) {
	raw, model, stream, ok := readOpenAIBody(w, r)
	if !ok {
		return
	}
	body, err := newStreamBody(raw, r.URL.Path != "/v1/embeddings")
	if err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "", err.Error())
		return
	}
	start := time.Now()
	var ttft time.Duration
	st := streamState{tokenIDs: stream}
	var sw *sse.Writer
	relay := func(resp *http.Response, t router.Target) error {
		if st.tokenIDs && resp.StatusCode == http.StatusBadRequest {
			if err := refusedExt(resp); err != nil {
				return err
			}
		}
		if stream && sw != nil && resp.StatusCode != http.StatusOK {
			// The client's stream has begun: an answer that is not a
			// stream (a resumed attempt refused) cannot be passed on; it
			// ends the stream with an error event below.
			return rejectedBy(resp, t)
		}
		if !stream || resp.StatusCode != http.StatusOK {
			return relayWhole(w, resp, t, &st)
		}
		if sw == nil {
			sw = sse.Start(w)
		}
		return relayOpenAIStream(sw, resp, t, &st, func() {
			if ttft == 0 {
				ttft = time.Since(start)
			}
		})
	}
	t, _, err := n.forwardStream(r.Context(), router.Filter{Model: model}, r.URL.Path, body, &st, relay)
	if errors.Is(err, errExtRefused) {
		// A worker of an older version: the stream goes without token
		// ids, and so cannot be resumed.
		st.tokenIDs = false
		t, _, err = n.forwardStream(r.Context(), router.Filter{Model: model}, r.URL.Path, body, &st, relay)
	}
	if t.Registry.ID != "" {
		n.observeRequest("openai", t.Registry.Model, t.NodeName, err, ttft, 0)
	} else {
		n.observeRequest("openai", model, "", err, 0, 0)
	}
	switch {
	case err == nil || r.Context().Err() != nil || errors.Is(err, errClientGone):
	case sw != nil:
		_ = sw.JSON("", worker.ErrorBody{Error: worker.ErrorDetail{Message: "the worker failed mid-stream: " + err.Error(), Type: "server_error", Code: "worker_failed"}})
	case errors.Is(err, ErrNoWorker):
		openAIError(w, http.StatusNotFound, "invalid_request_error", "model_not_found", "model",
			fmt.Sprintf("the model %q is not served by any ready worker in this cluster (see GET /v1/models)", model))
	default:
		openAIError(w, http.StatusServiceUnavailable, "server_error", "worker_unavailable", "", err.Error())
	}
}

// errExtRefused: a worker refused rbee's extension field (an older
// version, which knows no such parameter).
var errExtRefused = errors.New("the worker does not take rbee's extension field")

// refusedExt reads a 400 answer and returns errExtRefused when it refuses
// the extension field, else nil with the answer put back for the relay.
func refusedExt(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if d, ok := workerError(b); ok && d.Param != nil && *d.Param == worker.ExtField {
		return errExtRefused
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

// relayWhole passes a complete answer on (a non-streaming one, or an error
// answer): a worker that fails while it is read has sent the client
// nothing yet, so the request can start again elsewhere.
func relayWhole(w http.ResponseWriter, resp *http.Response, t router.Target, st *streamState) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &retryable{fmt.Errorf("worker %s on %s failed mid-answer: %w", t.Registry.ID, t.NodeName, err)}
	}
	st.delivered = true
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(b)
	return nil
}

// present reports whether a JSON field was sent with a value.
func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// relayOpenAIStream relays a worker's OpenAI stream event by event. The
// worker's TokenIDEvent before each token's chunk is consumed: its id is
// recorded once the chunk that follows has been passed on (or the next
// token began: its text is still held back), so st.ids are always the
// tokens whose text the client has. A chunk carrying an error, or a stream
// that ends before [DONE], is the worker's failure; first is called at the
// first chunk passed on.
func relayOpenAIStream(sw *sse.Writer, resp *http.Response, t router.Target, st *streamState, first func()) error {
	pending := int32(-1)
	commit := func() {
		if pending >= 0 {
			st.ids = append(st.ids, pending)
			pending = -1
		}
	}
	err := sse.Read(resp.Body, maxWorkerEvent, func(ev sse.Event) error {
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
						Content   string          `json:"content"`
						ToolCalls json.RawMessage `json:"tool_calls"`
					} `json:"delta"`
					Logprobs json.RawMessage `json:"logprobs"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(ev.Data, &c); err != nil {
				return fmt.Errorf("malformed chunk: %w", err)
			}
			if len(c.Error) > 0 && string(c.Error) != "null" {
				d, _ := workerError(ev.Data)
				err := fmt.Errorf("worker %s: %s (%s)", t.Registry.ID, d.Message, d.Code)
				if d.Code == "invalid_request" {
					return &jobs.Error{Code: jobs.CodeBadRequest, Err: err}
				}
				return &retryable{err}
			}
			if st.id == "" {
				st.id, st.created = c.ID, c.Created
			}
			for _, ch := range c.Choices {
				sent := ch.Text+ch.Delta.Content != "" || present(ch.Delta.ToolCalls) || present(ch.Logprobs)
				if sent && pending < 0 {
					// Text, a tool call or a token's logprobs without its
					// token id: an engine's stream, a tool stream (which
					// holds text back), or the final flush of held-back
					// text. Another worker could not go on without
					// sending the client some of it twice.
					st.unresumable = true
				}
				st.textLen += len(ch.Text)
			}
		}
		first()
		if err := sw.Data("", ev.Data); err != nil {
			return fmt.Errorf("%w: %v", errClientGone, err)
		}
		st.delivered = true
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

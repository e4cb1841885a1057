package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/rbee-project/rbee/internal/jsonx"
	"github.com/rbee-project/rbee/internal/reqbody"
	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/relay"
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
	openAIError(w, http.StatusNotFound, "invalid_request_error", "model_not_found", "model", fmt.Sprintf("no worker serves model %q (GET /v1/models lists the served ones)", shortName(want)))
}

// shortName cuts a client's model name for an error message: the body
// may hold one of a megabyte.
func shortName(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("… (%d bytes)", len(s))
}

// readOpenAIBody reads and minimally parses an OpenAI request.
func readOpenAIBody(w http.ResponseWriter, r *http.Request) (body []byte, model string, stream bool, ok bool) {
	body, err := io.ReadAll(reqbody.Reader(w, r, maxRequestBytes))
	if err != nil {
		if reqbody.TooLarge(err) {
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
		msg := "malformed JSON: " + err.Error()
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field == "":
			msg = "the body must be a JSON object, not " + jsonx.Got(te.Value)
		case errors.As(err, &te):
			openAIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_type", te.Field,
				fmt.Sprintf("%s must be %s, not %s", te.Field, jsonx.TypeWant(te.Type), jsonx.Got(te.Value)))
			return nil, "", false, false
		}
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "", msg)
		return nil, "", false, false
	}
	if head.Model == "" {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "missing_model", "model", "you must provide a model parameter")
		return nil, "", false, false
	}
	return body, head.Model, head.Stream, true
}

// proxyOpenAI serves /v1/chat/completions, /v1/completions and
// /v1/embeddings through forwardStream: a stream goes on on another worker
// when its worker fails.
func (n *Node) proxyOpenAI(w http.ResponseWriter, r *http.Request) {
	raw, model, stream, ok := readOpenAIBody(w, r)
	if !ok {
		return
	}
	body, err := relay.NewBody(raw, r.URL.Path != "/v1/embeddings")
	if err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "", err.Error())
		return
	}
	start := time.Now()
	var ttft time.Duration
	st := relay.State{TokenIDs: stream}
	var sw *sse.Writer
	answered := 0 // the status of the answer passed on
	pass := func(resp *http.Response, t router.Target) error {
		answered = resp.StatusCode
		if st.TokenIDs && resp.StatusCode == http.StatusBadRequest {
			if err := relay.RefusedExt(resp); err != nil {
				return err
			}
		}
		if stream && sw != nil && resp.StatusCode != http.StatusOK {
			// The client's stream has begun: an answer that is not a
			// stream (a resumed attempt refused) cannot be passed on; it
			// ends the stream with an error event below.
			return relay.RejectedBy(resp, t)
		}
		if !stream || resp.StatusCode != http.StatusOK {
			return relay.Whole(w, resp, t, &st)
		}
		if sw == nil {
			sw = sse.Start(w)
		}
		return relay.OpenAIStream(sw, resp, t, &st, func() {
			if ttft == 0 {
				ttft = time.Since(start)
			}
		})
	}
	t, _, err := n.relay.Forward(r.Context(), router.Filter{Model: model}, r.URL.Path, body, &st, pass)
	if errors.Is(err, relay.ErrExtRefused) {
		// A worker of an older version: the stream goes without token
		// ids, and so cannot be resumed.
		st.TokenIDs = false
		t, _, err = n.relay.Forward(r.Context(), router.Filter{Model: model}, r.URL.Path, body, &st, pass)
	}
	// As the Ollama API counts them: a refusal the worker answered is an
	// error, a client that left is not; a stream's speed is its tokens
	// after the first over the time since the first.
	outcome := err
	switch {
	case r.Context().Err() != nil || errors.Is(err, relay.ErrClientGone):
		outcome = nil
	case err == nil && answered >= 400:
		outcome = fmt.Errorf("the worker answered %d", answered)
	}
	var tps float64
	if k := len(st.IDs); ttft > 0 && k > 1 {
		if d := time.Since(start) - ttft; d > 0 {
			tps = float64(k-1) / d.Seconds()
		}
	}
	if t.Registry.ID != "" {
		n.observeRequest("openai", t.Registry.Model, t.NodeName, outcome, ttft, tps)
	} else {
		n.observeRequest("openai", model, "", outcome, 0, 0)
	}
	switch {
	case err == nil || r.Context().Err() != nil || errors.Is(err, relay.ErrClientGone):
	case sw != nil:
		_ = sw.JSON("", worker.ErrorBody{Error: worker.ErrorDetail{Message: "the worker failed mid-stream: " + err.Error(), Type: "server_error", Code: "worker_failed"}})
	case errors.Is(err, relay.ErrAnswerTooLarge):
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "answer_too_large", "", err.Error())
	case modelMissing(err):
		openAIError(w, http.StatusNotFound, "invalid_request_error", "model_not_found", "model",
			fmt.Sprintf("the model %q is not served by any ready worker in this cluster (see GET /v1/models)", shortName(model)))
	default:
		openAIError(w, http.StatusServiceUnavailable, "server_error", "worker_unavailable", "", err.Error())
	}
}

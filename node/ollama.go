package node

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rbee-project/rbee/node/ollama"
	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
)

// The Ollama-compatible API: /api/tags, /api/generate and /api/chat,
// streaming NDJSON by default as Ollama does. Requests are translated to the
// worker's /v1/infer and scheduled like any other.

func ollamaError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (n *Node) handleOllamaTags(w http.ResponseWriter, r *http.Request) {
	type model struct {
		Name       string         `json:"name"`
		Model      string         `json:"model"`
		ModifiedAt time.Time      `json:"modified_at"`
		Size       uint64         `json:"size"`
		Digest     string         `json:"digest"`
		Details    ollama.Details `json:"details"`
	}
	out := []model{}
	for _, id := range n.ServedModels() {
		f, _ := n.modelFactsOf(r.Context(), id, false)
		if f.Modified.IsZero() {
			f.Modified = time.Now().UTC()
		}
		out = append(out, model{Name: id, Model: id, ModifiedAt: f.Modified, Size: f.Size, Digest: f.SHA256, Details: f.details()})
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

// ollamaCompatVersion is the Ollama API version rbee answers /api/version
// with: clients such as Open WebUI check it before they use the API, and
// rbee implements the routes of that version it lists in the README.
const ollamaCompatVersion = "0.5.0"

func (n *Node) handleOllamaVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": ollamaCompatVersion})
}

// handleOllamaPS answers /api/ps: the models loaded in workers, cluster-wide.
func (n *Node) handleOllamaPS(w http.ResponseWriter, r *http.Request) {
	type running struct {
		Name      string         `json:"name"`
		Model     string         `json:"model"`
		Size      uint64         `json:"size"`
		Digest    string         `json:"digest"`
		Details   ollama.Details `json:"details"`
		ExpiresAt string         `json:"expires_at"`
		SizeVRAM  uint64         `json:"size_vram"`
	}
	out := []running{}
	for _, id := range n.ServedModels() {
		f, _ := n.modelFactsOf(r.Context(), id, false)
		// Workers stay until retired: no expiry, as Ollama's keep_alive -1.
		out = append(out, running{Name: id, Model: id, Size: f.Size, Digest: f.SHA256, Details: f.details(), ExpiresAt: "0001-01-01T00:00:00Z"})
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

func (n *Node) handleOllamaGenerate(w http.ResponseWriter, r *http.Request) { n.ollama(w, r, false) }
func (n *Node) handleOllamaChat(w http.ResponseWriter, r *http.Request)     { n.ollama(w, r, true) }

func (n *Node) ollama(w http.ResponseWriter, r *http.Request, chat bool) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		ollamaError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	var req ollama.Request
	if err := json.Unmarshal(raw, &req); err != nil {
		ollamaError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return
	}
	req.Model = ollama.Name(req.Model)
	if req.Model == "" {
		ollamaError(w, http.StatusBadRequest, "model is required")
		return
	}
	if chat && len(req.Messages) == 0 || !chat && req.Prompt == "" && req.System == "" {
		// Ollama loads the model and answers done: rbee's models are
		// loaded while a worker serves them, so this checks one does.
		if _, err := n.relay.Pick(r.Context(), router.Filter{Model: req.Model}); err != nil {
			ollamaError(w, http.StatusNotFound, fmt.Sprintf("model %q not found: no ready worker serves it", req.Model))
			return
		}
		c := map[string]any{"model": req.Model, "created_at": time.Now().UTC().Format(time.RFC3339Nano), "done": true, "done_reason": "load"}
		if chat {
			c["message"] = ollama.Message{Role: "assistant"}
		} else {
			c["response"] = ""
		}
		writeJSON(w, http.StatusOK, c)
		return
	}
	body, err := req.InferBody(chat)
	if err != nil {
		ollamaError(w, http.StatusBadRequest, err.Error())
		return
	}
	stream := req.Stream == nil || *req.Stream
	sb, err := relay.NewBody(body, true)
	if err != nil {
		ollamaError(w, http.StatusBadRequest, err.Error())
		return
	}
	routed := time.Now()
	// Recorded as the other APIs do: a stream that broke or carried an
	// error event is an error; TTFT counts from routing.
	var ttft time.Duration
	var full []byte
	flusher, _ := w.(http.Flusher)
	line := func(v any) bool {
		b, _ := json.Marshal(v)
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	chunk := func(text string, doneFlag bool) map[string]any {
		c := map[string]any{"model": req.Model, "created_at": time.Now().UTC().Format(time.RFC3339Nano), "done": doneFlag}
		if chat {
			c["message"] = ollama.Message{Role: "assistant", Content: text}
		} else {
			c["response"] = text
		}
		return c
	}
	// With tools, text that may begin a call is held back until the end.
	names := req.ToolNames()
	var tools *worker.ToolStream
	if chat && len(names) > 0 {
		tools = &worker.ToolStream{}
	}
	var end worker.EndEvent
	var st relay.State
	started := false
	t, _, err := n.relay.Forward(r.Context(), router.Filter{Model: req.Model}, "/v1/infer", sb, &st, func(resp *http.Response, t router.Target) error {
		if stream && !started && resp.StatusCode == http.StatusOK {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
		}
		var err error
		end, err = relay.Infer(resp, t, &st, func(te worker.TokenEvent) error {
			if ttft == 0 {
				ttft = time.Since(routed)
			}
			if !stream {
				full = append(full, te.Text...)
				return nil
			}
			text := te.Text
			if tools != nil {
				text = tools.Push(text)
			}
			if text != "" && !line(chunk(text, false)) {
				return errors.New("client went away")
			}
			return nil
		})
		return err
	})
	if r.Context().Err() != nil || errors.Is(err, relay.ErrClientGone) {
		err = nil // a client that went away is no failure
	}
	n.observeRequest("ollama", cmp.Or(t.Registry.Model, req.Model), t.NodeName, err, ttft, end.TokensPerSecond)
	var rj *relay.Rejected
	switch {
	case err == nil && r.Context().Err() != nil:
		return
	case err == nil:
	case started:
		line(map[string]string{"error": err.Error()})
		return
	case errors.Is(err, ErrNoWorker):
		ollamaError(w, http.StatusNotFound, fmt.Sprintf("model %q not found: no ready worker serves it", req.Model))
		return
	case errors.As(err, &rj):
		msg := rj.Detail.Message
		if rj.Detail.Code != "" {
			// Ollama's error has no code field; keep the worker's
			// (e.g. template_error) as the stream path does.
			msg = fmt.Sprintf("%s (%s)", msg, rj.Detail.Code)
		}
		ollamaError(w, rj.Status, msg)
		return
	case !stream && st.Delivered:
		ollamaError(w, http.StatusBadGateway, err.Error())
		return
	default:
		ollamaError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	start := routed
	final := chunk(string(full), true)
	if stream {
		final = chunk("", true)
	}
	if tools != nil {
		var rest string
		var calls []worker.ToolCall
		if stream {
			rest, calls = tools.Finish(names)
			if rest != "" {
				line(chunk(rest, false))
			}
		} else {
			rest, calls = worker.ParseToolCalls(string(full), names)
		}
		if len(calls) > 0 {
			msg := final["message"].(ollama.Message)
			msg.ToolCalls = ollama.Calls(calls)
			if !stream {
				msg.Content = rest
			}
			final["message"] = msg
		}
	}
	reason := "stop"
	if end.StopReason == "length" {
		reason = "length"
	}
	final["done_reason"] = reason
	final["total_duration"] = time.Since(start).Nanoseconds()
	final["prompt_eval_count"] = end.TokensIn
	final["prompt_eval_duration"] = int64(end.PromptMS * 1e6)
	final["eval_count"] = end.TokensOut
	final["eval_duration"] = int64(end.GenMS * 1e6)
	if stream {
		line(final)
		return
	}
	writeJSON(w, http.StatusOK, final)
}

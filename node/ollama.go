package node

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/rbee-project/rbee/internal/jsonx"
	"github.com/rbee-project/rbee/internal/reqbody"
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

// ollamaDecodeError says what is wrong with an Ollama request that did not
// decode into target's type, in JSON terms: the field and what it must be
// ("options.stop must be an array of strings, not a string"), never Go's
// struct and type names. An element of the wrong type is said of its
// field: what the element must be would mislead ("options.stop must be a
// string" for [1]).
func ollamaDecodeError(err error, target any) string {
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return "the body must be a JSON object, not " + jsonx.Got(te.Value)
	case errors.As(err, &te):
		want, got := jsonx.TypeWant(te.Type), jsonx.Got(te.Value)
		if d := fieldType(reflect.TypeOf(target), te.Field); d != nil && d.Kind() == reflect.Slice && d != te.Type {
			want, got = jsonx.TypeWant(d), "an array with "+got+" in it"
		}
		return fmt.Sprintf("%s must be %s, not %s", te.Field, want, got)
	}
	return "malformed JSON: " + err.Error()
}

// fieldType is the Go type of the field at path (JSON names joined by
// dots, as json.UnmarshalTypeError.Field gives it) in t, nil when the path
// does not lead to one. Slices on the way are stepped into: their elements
// hold the next name.
func fieldType(t reflect.Type, path string) reflect.Type {
	for name := range strings.SplitSeq(path, ".") {
		for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice) {
			t = t.Elem()
		}
		if t == nil || t.Kind() != reflect.Struct {
			return nil
		}
		var next reflect.Type
		for f := range t.Fields() {
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == name || tag == "" && f.Name == name {
				next = f.Type
				break
			}
		}
		t = next
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
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
		ExpiresAt time.Time      `json:"expires_at"`
		SizeVRAM  uint64         `json:"size_vram"`
		// ContextLength is the context the model is loaded with, as
		// Ollama's (0.12) reports it: the least of the serving workers'.
		ContextLength int `json:"context_length"`
	}
	out := []running{}
	// Workers stay until retired: no expiry, as a model Ollama loaded with
	// keep_alive -1, which it reports as expiring the longest duration
	// from now (about 292 years; `ollama ps` shows "Forever").
	expires := time.Now().UTC().Add(time.Duration(math.MaxInt64)).Truncate(time.Second)
	for _, id := range n.ServedModels() {
		f, _ := n.modelFactsOf(r.Context(), id, false)
		served, _ := n.servingContext(r.Context(), id, false)
		out = append(out, running{Name: id, Model: id, Size: f.Size, Digest: f.SHA256, Details: f.details(), ExpiresAt: expires, ContextLength: served})
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

func (n *Node) handleOllamaGenerate(w http.ResponseWriter, r *http.Request) { n.ollama(w, r, false) }
func (n *Node) handleOllamaChat(w http.ResponseWriter, r *http.Request)     { n.ollama(w, r, true) }

// readOllamaBody reads an Ollama request's body (at most maxRequestBytes)
// or answers why not: 413 for a body over the limit (announced or read),
// 400 for one that could not be read (the body deadline, say).
func readOllamaBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(reqbody.Reader(w, r, maxRequestBytes))
	switch {
	case reqbody.TooLarge(err):
		ollamaError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxRequestBytes))
	case err != nil:
		ollamaError(w, http.StatusBadRequest, "read body: "+err.Error())
	}
	return raw, err
}

func (n *Node) ollama(w http.ResponseWriter, r *http.Request, chat bool) {
	raw, err := readOllamaBody(w, r)
	if err != nil {
		return
	}
	var req ollama.Request
	if err := json.Unmarshal(raw, &req); err != nil {
		ollamaError(w, http.StatusBadRequest, ollamaDecodeError(err, req))
		return
	}
	req.Model = ollama.Name(req.Model)
	if req.Model == "" {
		ollamaError(w, http.StatusBadRequest, "model is required")
		return
	}
	extra, err := checkOllamaRequest(raw, chat)
	if err != nil {
		ollamaError(w, http.StatusBadRequest, err.Error())
		return
	}
	if chat && len(req.Messages) == 0 || !chat && req.Prompt == "" && req.System == "" {
		// Ollama loads the model and answers done: rbee's models are
		// loaded while a worker serves them, so this checks one does.
		if _, err := n.relay.Pick(r.Context(), router.Filter{Model: req.Model}); err != nil {
			if modelMissing(err) {
				ollamaError(w, http.StatusNotFound, fmt.Sprintf("model %q not found: no ready worker serves it", req.Model))
			} else {
				ollamaError(w, http.StatusServiceUnavailable, err.Error())
			}
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
	if status, err := n.ollamaLimits(r.Context(), req, extra, sb); err != nil {
		ollamaError(w, status, err.Error())
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
	// The log-probabilities of the tokens not yet sent go out with the
	// next chunk written (text held back below holds them back too).
	var logprobs []worker.LogprobContent
	chunk := func(text string, doneFlag bool) map[string]any {
		c := map[string]any{"model": req.Model, "created_at": time.Now().UTC().Format(time.RFC3339Nano), "done": doneFlag}
		if chat {
			c["message"] = ollama.Message{Role: "assistant", Content: text}
		} else {
			c["response"] = text
		}
		if len(logprobs) > 0 {
			c["logprobs"], logprobs = logprobs, nil
		}
		return c
	}
	// With tools, text that may begin a call is held back until the end.
	names := req.ToolNames()
	var tools *worker.ToolStream
	if chat && len(names) > 0 {
		tools = &worker.ToolStream{}
	}
	// A model that answers with reasoning (gpt-oss's harmony, a
	// think-tag model's <think> block; the worker's started event says
	// so): its reasoning is the thinking (the chat message's, the
	// generate answer's), as Ollama returns it, and its calls are parsed
	// after it; think false drops it, as Ollama strips it. A raw prompt
	// is the client's own: its answer is read as it is.
	var harmony worker.ReasoningStream
	strip := req.StripsThinking()
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
			if (chat || !req.Raw) && st.Format != "" && harmony == nil {
				harmony = worker.NewReasoningStream(st.Format, st.ThinkOpen, len(names) > 0)
				if harmony != nil {
					tools = nil
				}
			}
			if te.Logprob != nil {
				logprobs = append(logprobs, *te.Logprob)
			}
			if !stream {
				full = append(full, te.Text...)
				return nil
			}
			text, thinking := te.Text, ""
			if harmony != nil {
				text, thinking = harmony.Push(text)
				if strip {
					thinking = ""
				}
			} else if tools != nil {
				text = tools.Push(text)
			}
			if (text != "" || thinking != "") && !line(thinkingChunk(chunk(text, false), thinking)) {
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
	case modelMissing(err):
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
	text := string(full)
	if stream {
		text = ""
	}
	final := chunk(text, true)
	if harmony != nil {
		var content, thinking string
		if !stream {
			content, thinking = harmony.Push(string(full))
		}
		rest, restThinking, calls := harmony.Finish(names)
		if strip {
			thinking, restThinking = "", ""
		}
		if stream {
			if rest != "" || restThinking != "" {
				line(thinkingChunk(chunk(rest, false), restThinking))
			}
		} else {
			if msg, ok := final["message"].(ollama.Message); ok {
				msg.Content = content + rest
				final["message"] = msg
			} else {
				final["response"] = content + rest
			}
			final = thinkingChunk(final, thinking+restThinking)
		}
		if msg, ok := final["message"].(ollama.Message); ok {
			msg.ToolCalls = ollama.Calls(calls)
			final["message"] = msg
		}
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
	// Models are loaded while a worker serves them: none is loaded for a
	// request.
	final["load_duration"] = 0
	final["prompt_eval_count"] = end.TokensIn
	final["prompt_eval_duration"] = int64(end.PromptMS * 1e6)
	final["eval_count"] = end.TokensOut
	final["eval_duration"] = int64(end.GenMS * 1e6)
	// Stamped as it goes out: after the text held back above, so a
	// stream's times never go back.
	final["created_at"] = time.Now().UTC().Format(time.RFC3339Nano)
	if stream {
		line(final)
		return
	}
	writeJSON(w, http.StatusOK, final)
}

// thinkingChunk adds thinking to a chunk: a chat chunk's message's, a
// generate chunk's own (Ollama's GenerateResponse.thinking).
func thinkingChunk(c map[string]any, thinking string) map[string]any {
	if m, ok := c["message"].(ollama.Message); ok {
		m.Thinking = thinking
		c["message"] = m
	} else if thinking != "" {
		c["thinking"] = thinking
	}
	return c
}

// What rbee does with the fields of an /api/generate or /api/chat request.
// Like the OpenAI endpoints, the Ollama ones refuse with a 400 naming it
// what they would otherwise ignore: an answer that silently differs from
// what the client asked for is worse than an error.
var (
	// ollamaFields are the top-level fields rbee reads or checks (see
	// checkOllamaRequest for those taken only when empty).
	ollamaFields = map[string]bool{"model": true, "stream": true, "options": true, "format": true,
		// keep_alive: workers stay loaded until they are retired (as
		// Ollama's keep_alive -1), so any valid value is harmless.
		"keep_alive": true, "think": true,
		// logprobs and top_logprobs: each token's log-probability
		// (ollama.Request), checked by the worker.
		"logprobs": true, "top_logprobs": true}
	ollamaGenerateFields = map[string]bool{"prompt": true, "system": true, "raw": true,
		"suffix": true, "images": true, "template": true, "context": true}
	ollamaChatFields = map[string]bool{"messages": true, "tools": true}
	// ollamaOnlyBlank are the fields taken only when empty, and why.
	ollamaOnlyBlank = map[string]string{
		"suffix":   "fill-in-the-middle is not supported",
		"images":   "rbee's models read text only",
		"template": "a prompt template per request is not supported (the model's own chat template applies unless raw is true)",
		"context":  "not supported (rbee returns no context); send the conversation again, e.g. as /api/chat messages",
	}
	ollamaMessageFields = map[string]bool{"role": true, "content": true, "tool_calls": true, "tool_name": true, "tool_call_id": true,
		// thinking (an earlier answer's reasoning) goes to the chat
		// template, which keeps or drops it; images must be empty.
		"thinking": true, "images": true}

	// ollamaMapped are the options ollama.Options maps to the worker's
	// sampling parameters, and repeat_last_n, num_predict and num_ctx,
	// which ollamaLimits maps.
	ollamaMapped = map[string]bool{"temperature": true, "top_k": true, "top_p": true, "min_p": true, "seed": true,
		"stop": true, "repeat_penalty": true, "repeat_last_n": true, "num_predict": true, "num_ctx": true}
	// ollamaHarmless are the options that tune how Ollama loads and runs a
	// model, not what it answers: rbee's workers were started with their
	// own threads, devices and batch sizes, so these are ignored. num_keep
	// is what Ollama keeps when it shifts a full context; rbee never
	// shifts (a full context ends the answer). The mirostat tunings only
	// matter with mirostat on, which is refused.
	ollamaHarmless = map[string]bool{"num_thread": true, "num_gpu": true, "main_gpu": true, "num_batch": true,
		"low_vram": true, "use_mmap": true, "use_mlock": true, "numa": true, "f16_kv": true, "logits_all": true,
		"vocab_only": true, "num_keep": true, "mirostat_tau": true, "mirostat_eta": true}
	// ollamaOff are samplers rbee lacks, taken only at the value that
	// turns them off.
	ollamaOff = map[string]any{"mirostat": 0.0, "typical_p": 1.0, "tfs_z": 1.0,
		"presence_penalty": 0.0, "frequency_penalty": 0.0, "penalize_newline": false}
)

// ollamaExtra is what checkOllamaRequest read that ollama.Request does not.
type ollamaExtra struct {
	RepeatLastN json.RawMessage
	NumPredict  *int
	NumCtx      *int
}

// blank reports whether a JSON value is absent in effect: missing, null,
// "", [], {} or false.
func blank(raw json.RawMessage) bool {
	var v any
	if len(raw) == 0 {
		return true
	}
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case bool:
		return !x
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// checkOllamaRequest refuses the fields and options of a generate or chat
// request that rbee does not implement, naming each.
func checkOllamaRequest(raw []byte, chat bool) (ollamaExtra, error) {
	var ex ollamaExtra
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return ex, errors.New("malformed JSON: the request must be an object")
	}
	var bad []string
	own := ollamaGenerateFields
	if chat {
		own = ollamaChatFields
	}
	for _, k := range slices.Sorted(maps.Keys(top)) {
		v := top[k]
		if !ollamaFields[k] && !own[k] {
			bad = append(bad, fmt.Sprintf("unknown field %q", k))
			continue
		}
		if why, ok := ollamaOnlyBlank[k]; ok {
			if !blank(v) {
				bad = append(bad, k+": "+why)
			}
			continue
		}
		switch k {
		case "keep_alive":
			if err := ollama.CheckKeepAlive(v); err != nil {
				bad = append(bad, err.Error())
			}
		case "think":
			var th ollama.Think
			if !blank(v) && json.Unmarshal(v, &th) != nil {
				bad = append(bad, ollama.ErrThink.Error())
			}
		case "raw":
			var on bool
			if json.Unmarshal(v, &on) != nil {
				bad = append(bad, "raw must be a boolean")
			} else if on && !blank(top["system"]) {
				// A raw prompt goes as it is: no template to put
				// the system prompt in.
				bad = append(bad, "raw: a raw prompt cannot have a system prompt")
			}
		case "messages":
			var msgs []map[string]json.RawMessage
			if json.Unmarshal(v, &msgs) != nil {
				continue // ollama.Request's decoding said what is wrong
			}
			for i, m := range msgs {
				for _, mk := range slices.Sorted(maps.Keys(m)) {
					switch {
					case !ollamaMessageFields[mk]:
						bad = append(bad, fmt.Sprintf("messages[%d]: unknown field %q", i, mk))
					case mk == "images" && !blank(m[mk]):
						bad = append(bad, fmt.Sprintf("messages[%d].images: rbee's models read text only", i))
					}
				}
			}
		case "options":
			bad = append(bad, checkOllamaOptions(v, &ex)...)
		}
	}
	if len(bad) > 0 {
		return ex, errors.New(strings.Join(bad, "; "))
	}
	return ex, nil
}

func checkOllamaOptions(raw json.RawMessage, ex *ollamaExtra) (bad []string) {
	var opts map[string]json.RawMessage
	if json.Unmarshal(raw, &opts) != nil {
		return nil // ollama.Request's decoding said what is wrong
	}
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		v := opts[k]
		if string(bytes.TrimSpace(v)) == "null" {
			continue
		}
		switch {
		case k == "repeat_last_n":
			var n int
			if json.Unmarshal(v, &n) != nil {
				bad = append(bad, "options.repeat_last_n must be an integer")
			}
			ex.RepeatLastN = v
		case k == "num_predict":
			var n int
			if json.Unmarshal(v, &n) != nil || n < -2 {
				bad = append(bad, "options.num_predict must be an integer: the most tokens to generate, or -1 or -2 (until the context is full)")
			}
			ex.NumPredict = &n
		case k == "num_ctx":
			var n int
			if json.Unmarshal(v, &n) != nil || n < 1 {
				bad = append(bad, "options.num_ctx must be a positive integer")
			}
			ex.NumCtx = &n
		case ollamaMapped[k], ollamaHarmless[k]:
		default:
			off, known := ollamaOff[k]
			if !known {
				bad = append(bad, fmt.Sprintf("options.%s: unknown option", k))
				continue
			}
			var got any
			if json.Unmarshal(v, &got) != nil || got != off {
				bad = append(bad, fmt.Sprintf("options.%s = %s: not supported (rbee samples with temperature, top_k, top_p, min_p and repeat_penalty; only %v, which turns it off, is taken)",
					k, bytes.TrimSpace(v), off))
			}
		}
	}
	return bad
}

// ollamaLimits sets the body's max_tokens and repeat_last_n from the
// options ollama.Request does not map, and checks num_ctx; on an error it
// returns the status to answer.
//
// num_predict follows Ollama: a positive count is the most tokens to
// generate; -1 (generate without limit), -2 (fill the context) and 0
// (Ollama's Go client cannot tell 0 from absent: its default, -1) generate
// until a stop or until the context is full. rbee's workers never shift a
// full context, so all three end there, with done_reason "length". A count
// above the context is the context. Absent, the worker's default applies,
// which is the same: no limit but the context (worker.DefaultMaxTokens).
//
// num_ctx cannot change the context a worker was started with: one within
// it is taken (a smaller window only bounds what Ollama would keep), one
// above it is refused.
func (n *Node) ollamaLimits(ctx context.Context, req ollama.Request, ex ollamaExtra, sb relay.Body) (int, error) {
	if len(ex.RepeatLastN) > 0 {
		sb["repeat_last_n"] = ex.RepeatLastN
	}
	if ex.NumPredict == nil && ex.NumCtx == nil {
		return 0, nil
	}
	// Only a generation to the end of the context needs to know it: the
	// other checks take what the load reports say and skip the rest.
	served, err := n.servingContext(ctx, req.Model, ex.NumPredict != nil && *ex.NumPredict <= 0)
	if err != nil {
		if modelMissing(err) {
			return http.StatusNotFound, fmt.Errorf("model %q not found: no ready worker serves it", req.Model)
		}
		return http.StatusServiceUnavailable, err
	}
	if ex.NumCtx != nil && served > 0 && *ex.NumCtx > served {
		return http.StatusBadRequest, fmt.Errorf("options.num_ctx %d is above the context of %s's workers (%d tokens); rbee serves the context a worker was started with", *ex.NumCtx, req.Model, served)
	}
	if ex.NumPredict == nil {
		return 0, nil
	}
	np := *ex.NumPredict
	switch {
	case np > 0 && (served == 0 || np <= served):
		sb["max_tokens"], _ = json.Marshal(np)
	case served == 0:
		return http.StatusBadRequest, fmt.Errorf("options.num_predict %d: the workers serving %s do not report their context length; give a positive num_predict", np, req.Model)
	default:
		// The worker stops at the end of the context (done_reason
		// "length") when the prompt leaves less room than this.
		sb["max_tokens"], _ = json.Marshal(served)
	}
	return 0, nil
}

// servingContext is the least context length of the workers a request for
// model may go to, as their load reports say (0 when none says). With
// ask, a worker whose report lacks it (an external engine's) is asked
// (its /v1/info), and a model no worker serves waits for one to arrive,
// as a request does, then is ErrNoWorker.
func (n *Node) servingContext(ctx context.Context, model string, ask bool) (int, error) {
	f := router.Filter{Model: model}
	ts := n.router.Candidates(f)
	if len(ts) == 0 && ask {
		t, err := n.relay.Pick(ctx, f)
		if err != nil {
			return 0, err
		}
		ts = []router.Target{t}
	}
	least := 0
	for _, t := range ts {
		c := t.Load.ContextLength
		if c <= 0 && ask {
			if in, err := n.workerInfo(ctx, t); err == nil {
				c = in.ContextLength
			}
		}
		if c > 0 && (least == 0 || c < least) {
			least = c
		}
	}
	return least, nil
}

// ollamaErrorShape gives every error answer under /api/ Ollama's shape,
// {"error":"message"}: the routes of ollama.go and ollama_models.go write
// it themselves, but what answers before them (authentication's 401 and
// 403, the unknown-route 404 of Handler) writes the node API's
// {"error":{"code","message"}}, which Ollama clients cannot read. It is
// meant to wrap the handler those run in (Handler: around n.auth.Wrap).
// Answers of 400 and above with a JSON body are held (they are small) and
// rewritten when they have the node API's shape; the rest pass untouched,
// streams included.
func ollamaErrorShape(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			next.ServeHTTP(w, r)
			return
		}
		ew := &ollamaErrorWriter{ResponseWriter: w}
		next.ServeHTTP(ew, r)
		ew.finish()
	})
}

// maxHeldError bounds the error body ollamaErrorShape holds; a longer one
// passes as it is.
const maxHeldError = 64 << 10

type ollamaErrorWriter struct {
	http.ResponseWriter
	wrote  bool // the header went out
	status int  // an error held back, when not 0
	held   []byte
}

func (e *ollamaErrorWriter) WriteHeader(code int) {
	if e.wrote || e.status != 0 {
		return
	}
	if code >= 400 && strings.HasPrefix(e.Header().Get("Content-Type"), "application/json") {
		e.status = code
		return
	}
	e.wrote = true
	e.ResponseWriter.WriteHeader(code)
}

func (e *ollamaErrorWriter) Write(b []byte) (int, error) {
	if !e.wrote && e.status == 0 {
		e.WriteHeader(http.StatusOK)
	}
	if e.status == 0 {
		return e.ResponseWriter.Write(b)
	}
	if len(e.held)+len(b) <= maxHeldError {
		e.held = append(e.held, b...)
		return len(b), nil
	}
	e.release(e.held)
	return e.ResponseWriter.Write(b)
}

// release sends the held error as it is.
func (e *ollamaErrorWriter) release(body []byte) {
	status := e.status
	e.status, e.held, e.wrote = 0, nil, true
	e.ResponseWriter.WriteHeader(status)
	_, _ = e.ResponseWriter.Write(body)
}

func (e *ollamaErrorWriter) finish() {
	if e.status == 0 {
		return
	}
	var nested struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(e.held, &nested) != nil || nested.Error.Message == "" {
		e.release(e.held)
		return
	}
	b, _ := json.Marshal(map[string]string{"error": nested.Error.Message})
	e.Header().Del("Content-Length")
	e.release(append(b, '\n'))
}

func (e *ollamaErrorWriter) Flush() {
	if e.status != 0 {
		return // an error is sent whole, at the end
	}
	if f, ok := e.ResponseWriter.(http.Flusher); ok {
		if !e.wrote {
			e.WriteHeader(http.StatusOK)
		}
		f.Flush()
	}
}

func (e *ollamaErrorWriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }

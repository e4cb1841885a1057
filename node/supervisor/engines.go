package supervisor

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/worker"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// External engines (llama-server, vLLM, Ollama, any OpenAI-compatible
// server) send no heartbeats and do not speak rbee's /v1/infer. The node
// makes up for both: engineLoop polls each engine process it supervises
// (health, then /slots or /metrics) and feeds the result to the same local
// worker table the cpu workers' heartbeats feed; CallEngine turns a
// /v1/infer call into a streaming OpenAI request and the answer back into
// rbee's token/end events. Everything above (routing, retries, metrics,
// remote nodes) is unchanged.

const (
	// enginePollEvery is how often an engine is polled: its report is as
	// fresh as a cpu worker's heartbeat (every 2 s) and well inside
	// WorkerHeartbeatTimeout.
	enginePollEvery = time.Second
	// engineProbeTimeout bounds one poll request: a loaded engine answers
	// in milliseconds, a stuck one must not hold up the others.
	engineProbeTimeout = 2 * time.Second
	// maxEngineBody bounds what is read of a poll answer (/slots lists a
	// few hundred bytes per slot; /metrics a few KiB).
	maxEngineBody = 1 << 20
	// maxEngineCount caps a request count an engine reports: the router
	// adds them up, and a huge or infinite gauge (converted to int, NaN and
	// Inf give the most negative int) must neither wrap nor make the
	// engine look idle.
	maxEngineCount = 1 << 20
	// DefaultEngineFirstByte bounds the wait for the first byte of an
	// engine's streamed answer (the first token, or an error): what an
	// engine whose health check answers while its inference loop is stuck
	// (a wedged GPU, a deadlock) never sends. A GPU engine processes a
	// full context's prompt in seconds and a CPU one a long prompt in a
	// minute or so; a request the engine queues behind others counts too,
	// and the node does not send an engine more than it has slots for
	// while others are free.
	DefaultEngineFirstByte = 2 * time.Minute
	// engineHangLimit is how many streamed calls in a row an engine may
	// leave without a first byte before the node reports it failed, out
	// of the schedule: one can be a prompt too long for the bound, three
	// with nothing answered between are an engine that is stuck.
	engineHangLimit = 3
	// engineRecheckEvery is how often an engine reported failed for its
	// hangs is asked for one token again (a request of its own, bounded
	// like any); an answer puts it back in the schedule.
	engineRecheckEvery = 30 * time.Second
	// engineProbeBody is that request: one token, from a prompt of one.
	engineProbeBody = `{"prompt":"hi","max_tokens":1}`
)

// engineHang is an engine's run of streamed calls without a first byte.
type engineHang struct {
	streak    int       // calls in a row
	recheckAt time.Time // when a failed engine is asked again
	probing   bool      // a recheck is in flight
}

// EngineType returns the worker type of a local worker process when it is
// an external engine.
func (s *Supervisor) EngineType(st process.WorkerInfo) (workercat.WorkerType, bool) {
	if s.cfg.Types == nil || st.Type == "" {
		return workercat.WorkerType{}, false
	}
	t, err := s.cfg.Types.Type(st.Type)
	if err != nil || !t.External {
		return workercat.WorkerType{}, false
	}
	if st.HealthPath != "" {
		t.HealthPath = st.HealthPath
	}
	return t, true
}

// Engine returns the process and type of a local engine worker.
func (s *Supervisor) Engine(workerID string) (process.WorkerInfo, workercat.WorkerType, bool) {
	st, ok := s.cfg.Procs.Info(workerID)
	if !ok {
		return process.WorkerInfo{}, workercat.WorkerType{}, false
	}
	t, ok := s.EngineType(st)
	return st, t, ok
}

// engineLoop polls the engines this node supervises (spawned or adopted)
// and turns what they answer into heartbeats.
func (s *Supervisor) engineLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(enginePollEvery)
	defer tick.Stop()
	for first := true; ; first = false {
		// The first pass runs at once: engines adopted after a restart
		// are reported before this node's first load report, so the
		// leader never sees them missing.
		if !first {
			select {
			case <-s.ctx.Done():
				return
			case <-tick.C:
			}
		}
		var wg sync.WaitGroup
		for _, st := range s.cfg.Procs.Infos() {
			t, ok := s.EngineType(st)
			if !ok {
				if first {
					wg.Add(1)
					go func() {
						defer wg.Done()
						s.probeAdopted(st)
					}()
				}
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.PollEngine(st, t)
			}()
		}
		wg.Wait()
		if first {
			close(s.adopted)
		}
	}
}

// probeAdopted asks a re-adopted rbee worker for its health once at
// start: a ready one is routable from this node at once, not only after
// its next heartbeat (up to its heartbeat interval later). Its heartbeats
// then take over.
func (s *Supervisor) probeAdopted(st process.WorkerInfo) {
	secret, port, ok := s.cfg.Procs.Secret(st.WorkerID)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, engineProbeTimeout)
	defer cancel()
	status, _, err := s.engineGet(ctx, port, secret, "/health")
	if err != nil || status != http.StatusOK {
		return
	}
	if _, known := s.Local(st.WorkerID); known {
		return // a heartbeat came first
	}
	s.Heartbeat(worker.Heartbeat{ID: st.WorkerID, PID: st.PID, Port: port, Model: st.ModelID, ModelPath: st.ModelPath,
		Device: st.Device, State: worker.StateReady, Slots: 1})
}

// PollEngine reports one engine: loading while its health check answers
// 503, ready (or busy when every slot is taken) on 200, nothing when it
// does not answer (its exit is seen by the process manager; a hung engine
// expires like a silent worker).
func (s *Supervisor) PollEngine(st process.WorkerInfo, t workercat.WorkerType) {
	secret, port, ok := s.cfg.Procs.Secret(st.WorkerID)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, engineProbeTimeout)
	defer cancel()
	status, _, err := s.engineGet(ctx, port, secret, t.HealthPath)
	if err != nil {
		return
	}
	hb := worker.Heartbeat{ID: st.WorkerID, PID: st.PID, Port: st.Port, Model: st.ModelID, ModelPath: st.ModelPath,
		Device: st.Device, State: worker.StateLoading, Version: t.Name}
	if hb.Device == "" {
		hb.Device = "gpu"
	}
	if status != http.StatusOK {
		s.Heartbeat(hb)
		return
	}
	if IsOllama(t) && !s.ollamaModelReady(ctx, port, st.ModelID) {
		s.Heartbeat(hb) // the spawn is still importing the model
		return
	}
	if s.hungEngine(st, port, secret) {
		hb.State = worker.StateFailed
		s.Heartbeat(hb)
		return
	}
	hb.State = worker.StateReady
	hb.Slots, hb.InFlight, hb.Queued, hb.ContextLength = s.engineLoad(ctx, port, secret, t.LoadPath)
	// The engine may not know of requests this node has sent that it has
	// not started yet; the node's count is a floor.
	hb.InFlight = max(hb.InFlight, s.cfg.Cluster.Pending(st.WorkerID))
	if hb.Slots == 0 {
		hb.Slots = 1
	}
	if hb.InFlight >= hb.Slots {
		hb.State = worker.StateBusy
		hb.Queued = max(hb.Queued, hb.InFlight-hb.Slots)
	}
	s.Heartbeat(hb)
}

// engineLoad reads an engine's slots (llama-server /slots: one object per
// slot with is_processing and n_ctx) or its Prometheus gauges (requests
// running and waiting); zeroes when it has neither.
func (s *Supervisor) engineLoad(ctx context.Context, port int, secret, path string) (slots, inFlight, queued, ctxLen int) {
	if path == "" {
		return
	}
	status, body, err := s.engineGet(ctx, port, secret, path)
	if err != nil || status != http.StatusOK {
		return
	}
	switch path {
	case "/slots":
		var ss []struct {
			NCtx         int  `json:"n_ctx"`
			IsProcessing bool `json:"is_processing"`
		}
		if json.Unmarshal(body, &ss) != nil {
			return
		}
		for _, s := range ss {
			slots++
			if s.IsProcessing {
				inFlight++
			}
			ctxLen = max(ctxLen, s.NCtx)
		}
	case "/metrics":
		inFlight, queued = parseEngineMetrics(body)
	}
	return
}

// parseEngineMetrics reads the running and waiting request gauges of
// llama-server (llamacpp:requests_processing, llamacpp:requests_deferred)
// and vLLM (vllm:num_requests_running, vllm:num_requests_waiting) from
// Prometheus text, summing over label sets.
func parseEngineMetrics(b []byte) (running, waiting int) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < 0 {
				continue
			}
			name, rest, ok = line[:i], strings.TrimSpace(line[j+1:]), true
		}
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.Fields(rest + " 0")[0], 64)
		if err != nil || !(f >= 0) { // NaN and negative gauges count nothing
			continue
		}
		n := int(min(f, maxEngineCount))
		switch name {
		case "llamacpp:requests_processing", "vllm:num_requests_running":
			running = min(running+n, maxEngineCount)
		case "llamacpp:requests_deferred", "vllm:num_requests_waiting":
			waiting = min(waiting+n, maxEngineCount)
		}
	}
	return running, waiting
}

// engineGet is one bounded GET to a local engine with the worker's secret.
func (s *Supervisor) engineGet(ctx context.Context, port int, secret, path string) (int, []byte, error) {
	return s.engineDo(ctx, http.MethodGet, port, secret, path, nil, "", -1)
}

// Sentinel errors.
var (
	// ErrEngineResume: an external engine cannot continue a stream from
	// token ids; the node goes on on another worker or ends the stream.
	ErrEngineResume = errors.New("an external engine cannot resume a stream")
	// ErrEngineHung: an engine sent no first byte of a streamed answer
	// within Config.EngineFirstByte; the call fails like a worker that
	// died (the request goes on on another worker, the router passes
	// this one over for a while).
	ErrEngineHung = errors.New("the engine sent nothing of its answer in time")
	// ErrEngineField: a /v1/infer request asks for something the
	// translation to an engine's OpenAI API cannot carry; the call is
	// answered 400 naming it rather than sent without it.
	ErrEngineField = errors.New("not supported by an external engine")
)

// withoutExt strips rbee's extension field (worker.Ext) from a request
// body for an engine, which would ignore or refuse it, and reports whether
// it asked to resume a stream.
func withoutExt(body []byte) ([]byte, bool) {
	var in map[string]json.RawMessage
	if json.Unmarshal(body, &in) != nil || in[worker.ExtField] == nil {
		return body, false
	}
	var ext worker.Ext
	_ = json.Unmarshal(in[worker.ExtField], &ext)
	delete(in, worker.ExtField)
	out, err := json.Marshal(in)
	if err != nil {
		return body, false
	}
	return out, len(ext.Resume) > 0
}

// engineInferFields are the /v1/infer fields an OpenAI-compatible engine
// takes as they are (llama-server and vLLM also take top_k, min_p,
// repeat_penalty, chat_template_kwargs and reasoning_effort, llama-server
// repeat_last_n; the others ignore them). tools go to a chat request only
// (engineRequest), response_format in OpenAI's form (engineResponseFormat).
var engineInferFields = []string{"prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_k", "top_p",
	"min_p", "repeat_penalty", "repeat_last_n", "seed", "stop", "chat_template_kwargs", "reasoning_effort"}

// engineRequest turns a /v1/infer body into a streaming OpenAI request for
// an engine: chat completions when it has messages, or a prompt with
// apply_template (Ollama's /api/generate without raw: the prompt is the
// user's turn, rendered with the engine's template, as the cpu worker
// does), else completions. What the cpu worker reads and an engine cannot
// be asked through the translation is not dropped: tools with a raw
// prompt and logprobs are ErrEngineField.
func engineRequest(body []byte, model string) (path string, out []byte, err error) {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(body, &in); err != nil {
		return "", nil, err
	}
	req := map[string]any{"model": model, "stream": true, "stream_options": map[string]bool{"include_usage": true}}
	for _, k := range engineInferFields {
		if v, ok := in[k]; ok {
			req[k] = v
		}
	}
	var templated bool
	_ = json.Unmarshal(in["apply_template"], &templated)
	_, chat := in["messages"]
	switch {
	case chat:
		delete(req, "prompt")
	case templated && in["prompt"] != nil:
		var prompt string
		if err := json.Unmarshal(in["prompt"], &prompt); err != nil {
			return "", nil, &engineFieldError{"prompt", "prompt must be a string"}
		}
		chat = true
		delete(req, "prompt")
		req["messages"] = []worker.Message{{Role: "user", Content: prompt}}
	}
	path = "/v1/completions"
	if chat {
		path = "/v1/chat/completions"
	}
	if v, ok := in["tools"]; ok && string(bytes.TrimSpace(v)) != "null" {
		if !chat {
			return "", nil, &engineFieldError{"tools", "tools need a chat (messages, or a prompt the template renders)"}
		}
		req["tools"] = v
	}
	if v, ok := in["response_format"]; ok {
		req["response_format"] = engineResponseFormat(v)
	}
	var logprobs bool
	if json.Unmarshal(in["logprobs"], &logprobs) == nil && logprobs {
		// An engine's chunks carry them in OpenAI's shape, which the
		// token events do not take from an engine yet.
		return "", nil, &engineFieldError{"logprobs", "logprobs through the Ollama API"}
	}
	out, err = json.Marshal(req)
	return path, out, err
}

// engineFieldError is ErrEngineField naming the field at fault.
type engineFieldError struct{ param, msg string }

func (e *engineFieldError) Error() string { return e.msg + ": " + ErrEngineField.Error() }
func (e *engineFieldError) Unwrap() error { return ErrEngineField }

// engineRefusal is the 400 answer, in the worker's error shape, to a
// request engineRequest cannot translate.
func engineRefusal(err error) *http.Response {
	d := worker.ErrorDetail{Message: err.Error(), Type: "invalid_request_error", Code: "unsupported_parameter"}
	if fe, ok := errors.AsType[*engineFieldError](err); ok {
		d.Param = &fe.param
	}
	b, _ := json.Marshal(worker.ErrorBody{Error: d})
	return &http.Response{StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(b)), ContentLength: int64(len(b))}
}

// engineResponseFormat is a /v1/infer response_format in the form
// OpenAI-compatible engines take: llama.cpp's {"type": "json_object",
// "schema": S} (what the Ollama API's format becomes) is OpenAI's
// {"type": "json_schema", "json_schema": {"name", "schema": S}}, which
// llama-server, vLLM and Ollama's OpenAI API honour (vLLM ignores the
// schema of a json_object); anything else goes as it is.
func engineResponseFormat(raw json.RawMessage) json.RawMessage {
	var rf struct {
		Type   string          `json:"type"`
		Schema json.RawMessage `json:"schema"`
	}
	if json.Unmarshal(raw, &rf) != nil || rf.Type != "json_object" || len(rf.Schema) == 0 || string(rf.Schema) == "null" {
		return raw
	}
	out, err := json.Marshal(map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "response", "schema": rf.Schema}})
	if err != nil {
		return raw
	}
	return out
}

// setModel rewrites an OpenAI request's "model" to the name the engine
// serves (vLLM checks it; llama-server ignores it).
func setModel(body []byte, model string) []byte {
	var in map[string]json.RawMessage
	if json.Unmarshal(body, &in) != nil || model == "" {
		return body
	}
	in["model"], _ = json.Marshal(model)
	out, err := json.Marshal(in)
	if err != nil {
		return body
	}
	return out
}

// Call calls a worker process of this node on loopback, at the port its
// process manager gave it and with its secret: a worker answers nobody
// else. The node's requests from other nodes over libp2p come here too, so
// the secret never leaves this machine. An external engine's call is
// translated (callEngine).
func (s *Supervisor) Call(ctx context.Context, workerID, method, path string, body []byte) (*http.Response, error) {
	secret, port, ok := s.cfg.Procs.Secret(workerID)
	if !ok {
		return nil, fmt.Errorf("worker %s is not a worker process of %s", workerID, s.cfg.Name)
	}
	// The call ends when the worker expires (ErrWorkerSilent), as it
	// would if the worker died: a frozen one never answers.
	ctx, release := s.calls.track(ctx, workerID)
	var resp *http.Response
	var err error
	if st, _, isEngine := s.Engine(workerID); isEngine {
		resp, err = s.callEngine(ctx, st, port, secret, method, path, body)
	} else {
		resp, err = s.call(ctx, port, secret, method, path, body)
	}
	if err != nil {
		release()
		if errors.Is(context.Cause(ctx), ErrWorkerSilent) {
			err = fmt.Errorf("%w: %w", ErrWorkerSilent, err)
		}
		return nil, err
	}
	resp.Body = &releaseBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

// call is one request to a local worker with its secret; a body is JSON.
func (s *Supervisor) call(ctx context.Context, port int, secret, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1:"+strconv.Itoa(port)+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	return s.cfg.Client.Do(req)
}

// callEngine is Call for an external engine (st, on port, with its
// secret): a /v1/infer call becomes a streaming OpenAI request and the
// answer rbee's token/end events; the OpenAI routes pass through with
// "model" set to the catalog id. A request asking to resume a stream fails
// with ErrEngineResume.
func (s *Supervisor) callEngine(ctx context.Context, st process.WorkerInfo, port int, secret, method, path string, body []byte) (*http.Response, error) {
	body, resume := withoutExt(body)
	if resume {
		return nil, ErrEngineResume
	}
	infer := path == "/v1/infer"
	switch {
	case infer:
		p, b, err := engineRequest(body, st.ModelID)
		if errors.Is(err, ErrEngineField) {
			return engineRefusal(err), nil
		}
		if err != nil {
			return nil, err
		}
		path, body = p, b
	case path == "/v1/chat/completions" || path == "/v1/completions" || path == "/v1/embeddings":
		body = setModel(body, st.ModelID)
	}
	var resp *http.Response
	var err error
	if infer || wantsStream(body) {
		resp, err = s.callFirstByte(ctx, st.WorkerID, port, secret, method, path, body)
	} else {
		resp, err = s.call(ctx, port, secret, method, path, body)
	}
	if err != nil || !infer {
		return resp, err
	}
	if resp.StatusCode != http.StatusOK {
		// In rbee's error shape (an engine's "code" may be a number).
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		msg := strings.TrimSpace(string(b))
		if d, ok := relay.WorkerError(b); ok {
			msg = d.Message
		}
		code := "engine_error"
		if resp.StatusCode >= 500 {
			code = "engine_unavailable"
		}
		out, _ := json.Marshal(worker.ErrorBody{Error: worker.ErrorDetail{Message: msg, Type: "engine_error", Code: code}})
		resp.Body = io.NopCloser(bytes.NewReader(out))
		resp.Header.Set("Content-Type", "application/json")
		return resp, nil
	}
	pr, pw := io.Pipe()
	up := resp.Body
	go func() {
		err := translateEngineStream(up, pw)
		up.Close()
		pw.CloseWithError(err)
	}()
	resp.Body = pr
	resp.Header.Set("Content-Type", "text/event-stream")
	return resp, nil
}

// wantsStream reports whether an OpenAI request body asks for a stream.
func wantsStream(body []byte) bool {
	var head struct {
		Stream bool `json:"stream"`
	}
	return json.Unmarshal(body, &head) == nil && head.Stream
}

// callFirstByte is call for a streamed answer from engine workerID: the
// answer's head and its first byte must come within
// Config.EngineFirstByte, else the call fails with ErrEngineHung and
// counts in the engine's run of hangs; an answer ends the run. (A
// non-streamed answer is not bounded: its first byte comes only when the
// whole completion is done.)
func (s *Supervisor) callFirstByte(ctx context.Context, workerID string, port int, secret, method, path string, body []byte) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	bound := s.cfg.EngineFirstByte
	hung := fmt.Errorf("%w: engine %s sent no first byte within %s", ErrEngineHung, workerID, bound)
	// decided: the first byte came, or the bound passed; whichever sets it
	// first counts (a byte that came as the timer fired is not cut).
	var decided atomic.Bool
	timer := time.AfterFunc(bound, func() {
		if decided.CompareAndSwap(false, true) {
			cancel(hung)
		}
	})
	defer timer.Stop()
	resp, err := s.call(ctx, port, secret, method, path, body)
	var br *bufio.Reader
	if err == nil {
		br = bufio.NewReader(resp.Body)
		_, err = br.Peek(1)
		if err == io.EOF {
			err = nil // an empty answer: the caller sees it
		}
		if err == nil && !decided.CompareAndSwap(false, true) {
			err = hung // the bound passed first: the context is cancelled
		}
		if err != nil {
			resp.Body.Close()
		}
	}
	if err != nil {
		cause := context.Cause(ctx)
		cancel(nil)
		if errors.Is(cause, ErrEngineHung) || errors.Is(err, ErrEngineHung) {
			s.engineHung(workerID)
			return nil, hung
		}
		return nil, err
	}
	s.engineAnswered(workerID)
	resp.Body = &cancelBody{Reader: br, body: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody reads an answer through r and ends its call's context when
// closed.
type cancelBody struct {
	io.Reader
	body   io.Closer
	cancel context.CancelCauseFunc
}

func (b *cancelBody) Close() error {
	err := b.body.Close()
	b.cancel(nil)
	return err
}

// engineHung counts a streamed call of engine id that got no first byte;
// at engineHangLimit in a row the engine is reported failed (PollEngine).
func (s *Supervisor) engineHung(id string) {
	s.mu.Lock()
	h := s.hangs[id]
	if h == nil {
		h = &engineHang{}
		s.hangs[id] = h
	}
	h.streak++
	streak := h.streak
	if streak == engineHangLimit {
		h.recheckAt = time.Now().Add(engineRecheckEvery)
	}
	s.mu.Unlock()
	if streak == engineHangLimit {
		s.log.Error("engine answers its health check but not requests: reported failed, out of the schedule, until it answers again; restart it if it does not (rbee worker process delete, then spawn)",
			"worker", id, "calls_without_answer", streak, "first_byte_bound", s.cfg.EngineFirstByte)
	} else {
		s.log.Warn("engine sent nothing of its answer in time", "worker", id, "calls_in_a_row", streak, "first_byte_bound", s.cfg.EngineFirstByte)
	}
}

// engineAnswered ends engine id's run of hangs.
func (s *Supervisor) engineAnswered(id string) {
	s.mu.Lock()
	h := s.hangs[id]
	delete(s.hangs, id)
	s.mu.Unlock()
	if h != nil && h.streak >= engineHangLimit {
		s.log.Info("engine answers again: back in the schedule", "worker", id)
	}
}

// hungEngine reports whether engine st is reported failed for its hangs,
// and asks it for one token again (in the background, one at a time)
// every engineRecheckEvery.
func (s *Supervisor) hungEngine(st process.WorkerInfo, port int, secret string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hangs[st.WorkerID]
	if h == nil || h.streak < engineHangLimit {
		return false
	}
	if !h.probing && !time.Now().Before(h.recheckAt) {
		h.probing = true
		h.recheckAt = time.Now().Add(engineRecheckEvery)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			resp, err := s.callEngine(s.ctx, st, port, secret, http.MethodPost, "/v1/infer", []byte(engineProbeBody))
			if err == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxEngineBody))
				resp.Body.Close()
			}
			s.mu.Lock()
			if h := s.hangs[st.WorkerID]; h != nil {
				h.probing = false
			}
			s.mu.Unlock()
		}()
	}
	return true
}

// translateEngineStream reads an OpenAI SSE stream (completion or chat
// chunks, an optional usage chunk, [DONE]) and writes rbee's /v1/infer
// events: token per non-empty piece, then end; or error when the engine
// stops without finishing. Tool calls the engine parsed itself
// (delta.tool_calls) come last, as one piece in the <tool_call> markup
// the node parses from a cpu worker's answer (engineCalls), so a tool
// call reaches an Ollama client whichever worker made it; the engine's
// finish_reason tool_calls is the end's "stop". Reasoning the engine
// parsed itself (delta.reasoning_content, llama-server's and vLLM's;
// delta.reasoning, newer vLLM's) before the answer makes the stream a
// think-tag one: a started event says format think with the block open,
// the reasoning goes as text, and "</think>" before the answer (or the
// calls), so the node's parser (worker.NewReasoningStream) gives the
// Ollama client its thinking; reasoning after the answer began has no
// place in the text and is dropped.
func translateEngineStream(r io.Reader, w io.Writer) error {
	start := time.Now()
	var first time.Time
	index, finish := 0, ""
	var calls engineCalls
	phase := engineBegin
	var usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	}
	write := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		return err
	}
	err := sse.Read(r, relay.MaxEvent, func(ev sse.Event) error {
		data := ev.Data
		if string(data) == "[DONE]" {
			return io.EOF
		}
		var c struct {
			Choices []struct {
				Text  string `json:"text"`
				Delta struct {
					Content          string            `json:"content"`
					ReasoningContent string            `json:"reasoning_content"`
					Reasoning        string            `json:"reasoning"`
					ToolCalls        []engineCallDelta `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *json.RawMessage `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &c); err != nil {
			return fmt.Errorf("engine sent a malformed chunk: %w", err)
		}
		if c.Error != nil {
			return errors.New(c.Error.Message)
		}
		if c.Usage != nil {
			_ = json.Unmarshal(*c.Usage, &usage)
		}
		token := func(text string) error {
			if index == 0 {
				first = time.Now()
			}
			te := worker.TokenEvent{Text: text, Index: index}
			if phase != engineBegin && phase != engineAnswer {
				te.ID = -1 // after a started event: no token ids
			}
			index++
			return write("token", te)
		}
		for _, ch := range c.Choices {
			if reasoning := cmp.Or(ch.Delta.ReasoningContent, ch.Delta.Reasoning); reasoning != "" {
				if phase == engineBegin {
					if err := write("started", worker.StartedEvent{Format: worker.FormatThink, ThinkOpen: true}); err != nil {
						return err
					}
					phase = engineReasoning
				}
				if phase == engineReasoning {
					if err := token(reasoning); err != nil {
						return err
					}
				}
			}
			text := ch.Text + ch.Delta.Content
			if text != "" {
				switch phase {
				case engineBegin:
					phase = engineAnswer
				case engineReasoning:
					text, phase = worker.ThinkClose+text, engineAnswered
				}
				if err := token(text); err != nil {
					return err
				}
			}
			calls.add(ch.Delta.ToolCalls)
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				finish = *ch.FinishReason
			}
		}
		return nil
	})
	if (err == nil || errors.Is(err, io.EOF)) && finish != "" {
		if text := calls.markup(); text != "" {
			if index == 0 {
				first = time.Now()
			}
			te := worker.TokenEvent{Text: text, Index: index}
			if phase == engineReasoning || phase == engineAnswered {
				te.ID = -1
			}
			if phase == engineReasoning {
				te.Text = worker.ThinkClose + text
			}
			if err := write("token", te); err != nil {
				return err
			}
			index++
		}
		if finish == "tool_calls" {
			finish = "stop"
		}
		// A usage chunk with no count or a negative one (a broken engine)
		// is not believed: the pieces received are counted instead.
		out := usage.CompletionTokens
		if out <= 0 {
			out = index
		}
		end := worker.EndEvent{StopReason: finish, TokensIn: max(usage.PromptTokens, 0), TokensOut: out}
		if !first.IsZero() {
			end.PromptMS = float64(first.Sub(start).Microseconds()) / 1000
			gen := time.Since(first)
			end.GenMS = float64(gen.Microseconds()) / 1000
			if gen > 0 {
				end.TokensPerSecond = float64(int(float64(out)/gen.Seconds()*100)) / 100
			}
		}
		return write("end", end)
	}
	msg := "the engine ended the stream without finishing"
	if err != nil && !errors.Is(err, io.EOF) {
		msg = err.Error()
	}
	return write("error", worker.ErrorEvent{Code: "engine_failed", Message: msg})
}

// Where translateEngineStream is in an engine's answer.
const (
	engineBegin     = iota // nothing yet
	engineAnswer           // the answer, with no reasoning before it
	engineReasoning        // the reasoning (a started event said so)
	engineAnswered         // the answer after the reasoning
)

// engineCallDelta is one entry of a streamed chunk's delta.tool_calls: the
// call's index, its name in the first entry, its arguments in pieces.
type engineCallDelta struct {
	Index    *int `json:"index"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// engineCall is one streamed tool call, gathered.
type engineCall struct {
	name string
	args strings.Builder
}

// engineCalls gathers an engine's streamed tool calls by index.
type engineCalls []*engineCall

// maxEngineCalls bounds the calls one answer may hold: an index is the
// engine's word, and a slot per index up to it is allocated (OpenAI caps
// parallel calls at 128).
const maxEngineCalls = 128

func (c *engineCalls) add(deltas []engineCallDelta) {
	for _, d := range deltas {
		i := len(*c) - 1 // an entry without an index continues the last call
		if d.Index != nil {
			i = *d.Index
		}
		if i < 0 || i >= maxEngineCalls {
			continue
		}
		for len(*c) <= i {
			*c = append(*c, &engineCall{})
		}
		if d.Function.Name != "" {
			(*c)[i].name = d.Function.Name
		}
		(*c)[i].args.WriteString(d.Function.Arguments)
	}
}

// markup writes the calls as a cpu worker's answer holds them, each
// <tool_call>\n{"name": NAME, "arguments": ARGS}\n</tool_call> (arguments
// that are no JSON object go as a string, which the node's parser does not
// take for a call: they stay text, as a cpu worker's would).
func (c engineCalls) markup() string {
	var b strings.Builder
	for _, call := range c {
		if call.name == "" {
			continue
		}
		args := json.RawMessage(strings.TrimSpace(call.args.String()))
		if len(args) == 0 {
			args = json.RawMessage("{}")
		}
		if !json.Valid(args) {
			args, _ = json.Marshal(call.args.String())
		}
		one, err := json.Marshal(struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}{call.name, args})
		if err != nil {
			continue
		}
		b.WriteString("<tool_call>\n")
		b.Write(one)
		b.WriteString("\n</tool_call>")
	}
	return b.String()
}

// Command llama-server is a stand-in for llama.cpp's llama-server in
// rbee's tests. It takes llama-server's documented flags (-m, --host,
// --port, -c, -ngl, -t, -np, --alias, --metrics, --api-key, and the key
// from LLAMA_API_KEY), answers /health like it (503 "Loading model" while
// loading, then 200 {"status":"ok"}), serves /slots and /metrics, and
// streams OpenAI completions and chat completions. The text is
// deterministic (words of a fixed story, one per token), not a model's.
//
// Built (or linked) under the name "ollama" it is a stand-in for `ollama
// serve` instead (see ollama.go).
//
// Test knobs: FAKE_LLAMA_GPUS (default 2) is how many GPUs the machine
// "has": a CUDA_VISIBLE_DEVICES naming a higher index fails like a missing
// device; FAKE_LLAMA_LOAD_MS (default 300) is the loading time;
// FAKE_LLAMA_TOKEN_MS (default 0) is a pause per token; FAKE_LLAMA_ANY_HOST
// set makes it ignore --host and listen on every interface (and on the
// socket a --host ending in ".sock" names, as llama-server does, too).
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// story is what every completion says, a word per token.
var story = strings.Fields("Once upon a time there was a little bee. She flew over the hills to find a flower, " +
	"and when she found it she told the whole hive. Everyone was happy and they made honey together all summer long.")

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

type server struct {
	key        string
	alias      string
	ctx, slots int
	tokenDelay time.Duration
	loaded     atomic.Bool
	processing atomic.Int64
	mu         sync.Mutex
	busy       []bool
}

func main() {
	if filepath.Base(os.Args[0]) == "ollama" {
		ollamaMain()
		return
	}
	model := flag.String("m", "", "model path")
	host := flag.String("host", "127.0.0.1", "listen address")
	port := flag.Int("port", 8080, "listen port")
	ctx := flag.Int("c", 4096, "context size")
	ngl := flag.Int("ngl", -1, "GPU layers")
	threads := flag.Int("t", 0, "threads")
	np := flag.Int("np", 1, "parallel slots")
	alias := flag.String("alias", "", "model alias")
	_ = flag.Bool("metrics", false, "enable /metrics")
	key := flag.String("api-key", "", "API key")
	flag.Parse()
	if *key == "" {
		*key = os.Getenv("LLAMA_API_KEY")
	}
	fmt.Printf("fake llama-server: model=%s host=%s port=%d ctx=%d ngl=%d threads=%d np=%d alias=%s api_key=%t cuda=%q hip=%q vk=%q\n",
		*model, *host, *port, *ctx, *ngl, *threads, *np, *alias, *key != "",
		os.Getenv("CUDA_VISIBLE_DEVICES"), os.Getenv("HIP_VISIBLE_DEVICES"), os.Getenv("GGML_VK_VISIBLE_DEVICES"))
	gpus := envInt("FAKE_LLAMA_GPUS", 2)
	if v := os.Getenv("CUDA_VISIBLE_DEVICES"); v != "" {
		for _, s := range strings.Split(v, ",") {
			if i, err := strconv.Atoi(s); err != nil || i >= gpus {
				fmt.Println("ggml_cuda_init: failed to initialize CUDA: invalid device ordinal")
				fmt.Println("main: error: no usable GPU found for CUDA_VISIBLE_DEVICES=" + v)
				os.Exit(1)
			}
		}
	}
	f, err := os.Open(*model)
	magic := make([]byte, 4)
	if err == nil {
		_, err = f.Read(magic)
		f.Close()
	}
	if err != nil || string(magic) != "GGUF" {
		fmt.Printf("gguf_init_from_file: failed to load model from %q\nmain: error: unable to load model\n", *model)
		os.Exit(1)
	}
	if *np < 1 {
		*np = 1
	}
	s := &server{key: *key, alias: *alias, ctx: *ctx, slots: *np, busy: make([]bool, *np),
		tokenDelay: time.Duration(envInt("FAKE_LLAMA_TOKEN_MS", 0)) * time.Millisecond}
	var ln, also net.Listener
	switch {
	case os.Getenv("FAKE_LLAMA_ANY_HOST") != "":
		// An engine that ignores --host: every interface.
		ln, err = net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(*port)))
		if err == nil && strings.HasSuffix(*host, ".sock") {
			// Its socket too, so it is found ready (and then exposed).
			also, err = net.Listen("unix", *host)
		}
	case strings.HasSuffix(*host, ".sock"):
		// As llama-server: a --host ending in .sock is a Unix socket.
		ln, err = net.Listen("unix", *host)
	default:
		ln, err = net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	}
	if err != nil {
		fmt.Println("main: error: couldn't bind HTTP server socket:", err)
		os.Exit(1)
	}
	fmt.Println("main: HTTP server is listening, loading model")
	go func() {
		time.Sleep(time.Duration(envInt("FAKE_LLAMA_LOAD_MS", 300)) * time.Millisecond)
		s.loaded.Store(true)
		fmt.Println("main: model loaded, server is listening")
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /slots", s.auth(s.slotsInfo))
	mux.HandleFunc("GET /metrics", s.auth(s.metrics))
	mux.HandleFunc("POST /v1/completions", s.auth(s.complete(false)))
	mux.HandleFunc("POST /v1/chat/completions", s.auth(s.complete(true)))
	srv := &http.Server{Handler: mux}
	if also != nil {
		go func() { _ = srv.Serve(also) }()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		fmt.Println("main: shutting down")
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	_ = srv.Serve(ln)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func errBody(code int, typ, msg string) map[string]any {
	return map[string]any{"error": map[string]any{"code": code, "message": msg, "type": typ}}
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if !s.loaded.Load() {
		writeJSON(w, http.StatusServiceUnavailable, errBody(503, "unavailable_error", "Loading model"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.key != "" {
			tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(tok), []byte(s.key)) != 1 {
				writeJSON(w, http.StatusUnauthorized, errBody(401, "authentication_error", "Invalid API Key"))
				return
			}
		}
		if !s.loaded.Load() {
			writeJSON(w, http.StatusServiceUnavailable, errBody(503, "unavailable_error", "Loading model"))
			return
		}
		h(w, r)
	}
}

func (s *server) slotsInfo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := make([]map[string]any, len(s.busy))
	for i, b := range s.busy {
		out[i] = map[string]any{"id": i, "n_ctx": s.ctx, "is_processing": b}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing %d\n", s.processing.Load())
	fmt.Fprintf(w, "# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 0\n")
}

// takeSlot marks a free slot busy; -1 when all are.
func (s *server) takeSlot() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range s.busy {
		if !b {
			s.busy[i] = true
			return i
		}
	}
	return -1
}

func (s *server) freeSlot(i int) {
	s.mu.Lock()
	s.busy[i] = false
	s.mu.Unlock()
}

type request struct {
	Model     string `json:"model"`
	Prompt    any    `json:"prompt"`
	Messages  []any  `json:"messages"`
	MaxTokens *int   `json:"max_tokens"`
	Stream    bool   `json:"stream"`
	Options   struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (s *server) complete(chat bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errBody(400, "invalid_request_error", "malformed JSON"))
			return
		}
		if chat && len(req.Messages) == 0 || !chat && req.Prompt == nil {
			writeJSON(w, http.StatusBadRequest, errBody(400, "invalid_request_error", "missing prompt or messages"))
			return
		}
		n := 16
		if req.MaxTokens != nil && *req.MaxTokens > 0 {
			n = *req.MaxTokens
		}
		finish := "length"
		if n >= len(story) {
			n, finish = len(story), "stop"
		}
		slot := s.takeSlot()
		if slot < 0 {
			writeJSON(w, http.StatusServiceUnavailable, errBody(503, "unavailable_error", "no free slot"))
			return
		}
		defer s.freeSlot(slot)
		s.processing.Add(1)
		defer s.processing.Add(-1)
		id, model := fmt.Sprintf("cmpl-%d", time.Now().UnixNano()), s.alias
		object := "text_completion"
		if chat {
			object = "chat.completion"
		}
		usage := map[string]int{"prompt_tokens": 4, "completion_tokens": n, "total_tokens": 4 + n}
		piece := func(i int) string {
			if i == 0 {
				return story[0]
			}
			return " " + story[i]
		}
		if !req.Stream {
			var sb strings.Builder
			for i := range n {
				sb.WriteString(piece(i))
				time.Sleep(s.tokenDelay)
			}
			choice := map[string]any{"index": 0, "finish_reason": finish, "text": sb.String()}
			if chat {
				choice = map[string]any{"index": 0, "finish_reason": finish, "message": map[string]string{"role": "assistant", "content": sb.String()}}
			}
			writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": object, "created": time.Now().Unix(), "model": model,
				"choices": []any{choice}, "usage": usage})
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fl, _ := w.(http.Flusher)
		send := func(v any) bool {
			b, _ := json.Marshal(v)
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return false
			}
			if fl != nil {
				fl.Flush()
			}
			return true
		}
		chunk := func(text string, fin any) map[string]any {
			c := map[string]any{"index": 0, "finish_reason": fin, "text": text}
			if chat {
				c = map[string]any{"index": 0, "finish_reason": fin, "delta": map[string]string{"content": text}}
			}
			return map[string]any{"id": id, "object": object + ".chunk", "created": time.Now().Unix(), "model": model, "choices": []any{c}}
		}
		for i := range n {
			if r.Context().Err() != nil {
				return
			}
			time.Sleep(s.tokenDelay)
			if !send(chunk(piece(i), nil)) {
				return
			}
		}
		send(chunk("", finish))
		if req.Options.IncludeUsage {
			send(map[string]any{"id": id, "object": object + ".chunk", "model": model, "choices": []any{}, "usage": usage})
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}
}

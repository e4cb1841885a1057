package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ollama is the `ollama serve` stand-in: it listens on OLLAMA_HOST, answers
// "/" like Ollama, keeps blobs pushed with POST /api/blobs/sha256:<hex>
// (checked against their digest), creates models from GGUF blobs with
// POST /api/create {"model", "files": {name: digest}}, answers /api/show
// for the models it has, and serves the OpenAI endpoints (the fixed story)
// only for a model it has: anything else is Ollama's 404 "model not
// found".
type ollama struct {
	*server
	mu     sync.Mutex
	blobs  map[string][]byte // digest -> content
	models map[string]string // name -> digest of its GGUF
}

func ollamaMain() {
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		fmt.Println("usage: ollama serve")
		os.Exit(2)
	}
	addr := os.Getenv("OLLAMA_HOST")
	if addr == "" {
		addr = "127.0.0.1:11434"
	}
	o := &ollama{server: &server{slots: 4, busy: make([]bool, 4), ctx: 4096}, blobs: map[string][]byte{}, models: map[string]string{}}
	o.loaded.Store(true)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("Error: listen tcp", addr+":", err)
		os.Exit(1)
	}
	fmt.Printf("fake ollama: listening on %s context=%s cuda=%q\n", addr, os.Getenv("OLLAMA_CONTEXT_LENGTH"), os.Getenv("CUDA_VISIBLE_DEVICES"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "Ollama is running") })
	mux.HandleFunc("HEAD /api/blobs/{digest}", o.hasBlob)
	mux.HandleFunc("POST /api/blobs/{digest}", o.pushBlob)
	mux.HandleFunc("POST /api/create", o.create)
	mux.HandleFunc("POST /api/show", o.show)
	mux.HandleFunc("POST /v1/completions", o.known(o.complete(false)))
	mux.HandleFunc("POST /v1/chat/completions", o.known(o.complete(true)))
	srv := &http.Server{Handler: mux}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	_ = srv.Serve(ln)
}

func ollamaErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func (o *ollama) hasBlob(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	_, ok := o.blobs[r.PathValue("digest")]
	o.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (o *ollama) pushBlob(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	b, err := io.ReadAll(r.Body)
	if err != nil {
		ollamaErr(w, http.StatusBadRequest, err.Error())
		return
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != digest {
		ollamaErr(w, http.StatusBadRequest, "digest mismatch")
		return
	}
	o.mu.Lock()
	o.blobs[digest] = b
	o.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
}

func (o *ollama) create(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model  string            `json:"model"`
		Files  map[string]string `json:"files"`
		Stream *bool             `json:"stream"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model == "" || len(req.Files) != 1 {
		ollamaErr(w, http.StatusBadRequest, "invalid create request")
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for name, digest := range req.Files {
		b, ok := o.blobs[digest]
		if !ok {
			ollamaErr(w, http.StatusBadRequest, "file "+name+" not found: push its blob first")
			return
		}
		if !bytes.HasPrefix(b, []byte("GGUF")) {
			ollamaErr(w, http.StatusBadRequest, "invalid file magic")
			return
		}
		o.models[modelName(req.Model)] = digest
	}
	if req.Stream != nil && !*req.Stream {
		writeJSON(w, http.StatusOK, map[string]string{"status": "success"})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	for _, st := range []string{"parsing GGUF", "writing manifest", "success"} {
		b, _ := json.Marshal(map[string]string{"status": st})
		fmt.Fprintf(w, "%s\n", b)
	}
}

// modelName is a name with Ollama's default tag.
func modelName(m string) string {
	if !strings.Contains(m, ":") {
		return m + ":latest"
	}
	return m
}

func (o *ollama) has(m string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.models[modelName(m)]
	return ok
}

func (o *ollama) show(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string `json:"model"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	if !o.has(req.Model) {
		ollamaErr(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"details": map[string]string{"format": "gguf"}})
}

// known serves only models this Ollama has.
func (o *ollama) known(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req request
		_ = json.Unmarshal(body, &req)
		if !o.has(req.Model) {
			writeJSON(w, http.StatusNotFound, errBody(404, "api_error", fmt.Sprintf("model %q not found, try pulling it first", req.Model)))
			return
		}
		o.alias = req.Model
		r.Body = io.NopCloser(bytes.NewReader(body))
		h(w, r)
	}
}

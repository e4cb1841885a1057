package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const testModelPath = "../testdata/model/stories260K.gguf"

// testLoad is the engine the tests run on.
var testLoad LoadFunc = LoadEngine

// reqTimeout bounds every HTTP exchange of a test so a bug fails fast
// instead of hanging the package.
const reqTimeout = 30 * time.Second

// testLogger logs through t.Log at debug level.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testSecret is the secret of every test worker; authed sends it.
const testSecret = "test-secret-0123456789abcdef"

// bearer adds "Authorization: Bearer <secret>" to every request that has
// none, as the node does for its workers.
type bearer struct {
	secret string
	next   http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.secret)
	}
	return b.next.RoundTrip(r)
}

// authed is the client of the tests: it holds the test worker's secret.
var authed = &http.Client{Transport: bearer{secret: testSecret, next: http.DefaultTransport}}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Secret = testSecret
	cfg.ID = "w-test"
	cfg.ModelPath = testModelPath
	cfg.Threads = 1
	cfg.Load = testLoad
	cfg.Logger = testLogger(t)
	return cfg
}

// startServer starts a worker with cfg and waits until it is ready.
func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { _ = s.Close() })
	require.NoError(t, s.WaitReady(ctx))
	return s, "http://" + s.Addr().String()
}

// post sends a JSON body and returns the response; the body is closed at cleanup.
func post(t *testing.T, ctx context.Context, url string, body any) *http.Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, rd)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := authed.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := authed.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	return resp.StatusCode
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	t.Cleanup(cancel)
	return ctx
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	Event string
	Data  string
}

// sseReader parses "event:"/"data:" blocks from a stream.
type sseReader struct{ sc *bufio.Scanner }

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &sseReader{sc: sc}
}

// next returns the next event, or ok=false at the end of the stream.
func (r *sseReader) next() (ev sseEvent, ok bool) {
	var have bool
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case line == "":
			if have {
				return ev, true
			}
		case strings.HasPrefix(line, "event: "):
			ev.Event, have = strings.TrimPrefix(line, "event: "), true
		case strings.HasPrefix(line, "data: "):
			if ev.Data != "" {
				ev.Data += "\n"
			}
			ev.Data, have = ev.Data+strings.TrimPrefix(line, "data: "), true
		}
	}
	return ev, false
}

func readAllSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var evs []sseEvent
	rd := newSSEReader(r)
	for {
		ev, ok := rd.next()
		if !ok {
			require.NoError(t, rd.sc.Err())
			return evs
		}
		evs = append(evs, ev)
	}
}

// inferStream is a parsed /v1/infer stream.
type inferStream struct {
	Started StartedEvent
	Tokens  []TokenEvent
	End     *EndEvent
	Err     *ErrorEvent
	Order   []string
}

func (s inferStream) text() string {
	var b strings.Builder
	for _, tk := range s.Tokens {
		b.WriteString(tk.Text)
	}
	return b.String()
}

// ids returns the generated token ids (without text-only chunks, id -1).
func (s inferStream) ids() []int32 {
	ids := make([]int32, 0, len(s.Tokens))
	for _, tk := range s.Tokens {
		if tk.ID >= 0 {
			ids = append(ids, tk.ID)
		}
	}
	return ids
}

func parseInfer(t *testing.T, evs []sseEvent) inferStream {
	t.Helper()
	var out inferStream
	for _, ev := range evs {
		out.Order = append(out.Order, ev.Event)
		switch ev.Event {
		case "started":
			require.NoError(t, json.Unmarshal([]byte(ev.Data), &out.Started))
		case "token":
			var tk TokenEvent
			require.NoError(t, json.Unmarshal([]byte(ev.Data), &tk))
			out.Tokens = append(out.Tokens, tk)
		case "end":
			out.End = new(EndEvent)
			require.NoError(t, json.Unmarshal([]byte(ev.Data), out.End))
		case "error":
			out.Err = new(ErrorEvent)
			require.NoError(t, json.Unmarshal([]byte(ev.Data), out.Err))
		default:
			t.Fatalf("unexpected event %q", ev.Event)
		}
	}
	return out
}

// infer runs one /v1/infer request to the end.
func infer(t *testing.T, base string, body any) inferStream {
	t.Helper()
	resp := post(t, testCtx(t), base+"/v1/infer", body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	return parseInfer(t, readAllSSE(t, resp.Body))
}

// gate holds generations at their first token until released, so tests can
// fill slots deterministically. It wraps the real model; it does not replace
// any of its behaviour.
type gate struct {
	entered chan int // receives the slot-less sequence number of each held generation
	release chan struct{}
	once    sync.Once
}

func newGate() *gate {
	return &gate{entered: make(chan int, 64), release: make(chan struct{})}
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) load(inner LoadFunc) LoadFunc {
	return func(path string, opts LoadOptions) (Model, error) {
		m, err := inner(path, opts)
		if err != nil {
			return nil, err
		}
		return gatedModel{Model: m, g: g}, nil
	}
}

type gatedModel struct {
	Model
	g *gate
}

func (m gatedModel) NewSession() Session { return gatedSession{inner: m.Model.NewSession(), g: m.g} }

type gatedSession struct {
	inner Session
	g     *gate
}

func (s gatedSession) Embed(ctx context.Context, prompt []int32) ([]float32, error) {
	return s.inner.Embed(ctx, prompt)
}

func (s gatedSession) CachedPrefix(prompt []int32) int { return s.inner.CachedPrefix(prompt) }

func (s gatedSession) Generate(ctx context.Context, req GenerateRequest, emit func(Token) error) (Result, error) {
	first := true
	return s.inner.Generate(ctx, req, func(tk Token) error {
		if first {
			first = false
			s.g.entered <- tk.Index
			select {
			case <-s.g.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return emit(tk)
	})
}

// waitEntered waits until n generations are held at the gate.
func (g *gate) waitEntered(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-g.entered:
		case <-time.After(reqTimeout):
			t.Fatalf("generation %d never reached the gate", i+1)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// workerBin builds cmd/rbee-worker once for the package's process tests.
var workerBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "rbee-worker-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "rbee-worker")
	build := exec.Command("go", "build", "-o", bin, "../cmd/rbee-worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return bin, nil
})

// buildWorker is the rbee-worker binary (built once per test run).
func buildWorker(t *testing.T) string {
	t.Helper()
	bin, err := workerBin()
	require.NoError(t, err)
	return bin
}

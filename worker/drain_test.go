package worker

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// nodeRecorder is the node side of the heartbeat protocol: an HTTP server
// that checks the worker's secret, decodes worker.Heartbeat and records
// each one. A beat without the test secret is answered 401 and not recorded.
type nodeRecorder struct {
	srv     *httptest.Server
	mu      sync.Mutex
	beats   []Heartbeat
	status  int // answer; 0 = 204
	refused int // beats without the secret
}

func newNodeRecorder(t *testing.T) *nodeRecorder {
	n := &nodeRecorder{}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/workers/heartbeat" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "unexpected request", http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+testSecret {
			n.mu.Lock()
			n.refused++
			n.mu.Unlock()
			http.Error(w, "no worker secret", http.StatusUnauthorized)
			return
		}
		var hb Heartbeat
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields() // the node and the worker share the type
		if err := dec.Decode(&hb); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n.mu.Lock()
		n.beats = append(n.beats, hb)
		st := n.status
		n.mu.Unlock()
		if st == 0 {
			st = http.StatusNoContent
		}
		w.WriteHeader(st)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *nodeRecorder) all() []Heartbeat {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Heartbeat(nil), n.beats...)
}

func (n *nodeRecorder) setStatus(st int) {
	n.mu.Lock()
	n.status = st
	n.mu.Unlock()
}

// has reports whether some beat satisfies f.
func (n *nodeRecorder) has(f func(Heartbeat) bool) bool {
	for _, hb := range n.all() {
		if f(hb) {
			return true
		}
	}
	return false
}

func TestHeartbeats(t *testing.T) {
	node := newNodeRecorder(t)
	cfg := testConfig(t)
	cfg.NodeURL = node.srv.URL + "/" // a trailing slash is tolerated
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.Slots = 2
	s, base := startServer(t, cfg)

	require.Eventually(t, func() bool { return node.has(func(h Heartbeat) bool { return h.State == StateReady }) }, reqTimeout, 5*time.Millisecond)
	var ready Heartbeat
	for _, hb := range node.all() {
		if hb.State == StateReady {
			ready = hb
			break
		}
	}
	require.Positive(t, ready.Seq, "beats are numbered")
	require.Equal(t, Heartbeat{
		ID: "w-test", PID: os.Getpid(), Port: s.Addr().(*net.TCPAddr).Port, Model: "stories260K", ModelPath: testModelPath,
		Device: "cpu", State: StateReady, Slots: 2, ContextLength: 2048, Version: Version, Seq: ready.Seq,
	}, ready)

	// After a generation the beats carry its speed.
	infer(t, base, map[string]any{"prompt": "Once upon a time", "max_tokens": 16})
	require.Eventually(t, func() bool { return node.has(func(h Heartbeat) bool { return h.TokensPerSecond > 0 }) }, reqTimeout, 5*time.Millisecond)

	// A failing node is logged, never fatal: the worker keeps serving and beating.
	node.setStatus(http.StatusInternalServerError)
	n0 := len(node.all())
	require.Eventually(t, func() bool { return len(node.all()) > n0+2 }, reqTimeout, 5*time.Millisecond)
	got := infer(t, base, map[string]any{"prompt": "Once upon a time", "max_tokens": 2})
	require.NotNil(t, got.End)
	node.setStatus(0)

	// Shutdown: the last beat is "stopped".
	require.NoError(t, s.Close())
	beats := node.all()
	require.Equal(t, StateStopped, beats[len(beats)-1].State)
}

func TestHeartbeatNodeDown(t *testing.T) {
	node := newNodeRecorder(t)
	cfg := testConfig(t)
	cfg.NodeURL = node.srv.URL
	cfg.HeartbeatInterval = 20 * time.Millisecond
	node.srv.Close() // nobody listens
	_, base := startServer(t, cfg)
	got := infer(t, base, map[string]any{"prompt": "Once upon a time", "max_tokens": 2})
	require.NotNil(t, got.End)
}

// TestDrain: draining answers 503 to new requests and health, lets the
// in-flight generation finish with its full output, then stops; the node
// sees "draining" and finally "stopped".
func TestDrain(t *testing.T) {
	node := newNodeRecorder(t)
	g := newGate()
	cfg := testConfig(t)
	cfg.NodeURL = node.srv.URL
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.Load = g.load(testLoad)
	s, base := startServer(t, cfg)
	defer g.open()

	ctx := testCtx(t)
	resp := recvResp(t, asyncPost(t, ctx, base+"/v1/infer", map[string]any{"prompt": "Joe loves writing stories", "max_tokens": 8, "temperature": 0}))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	g.waitEntered(t, 1)
	// The only slot generating: the node hears "busy".
	require.Eventually(t, func() bool {
		return node.has(func(h Heartbeat) bool { return h.State == StateBusy && h.InFlight == 1 })
	}, reqTimeout, 5*time.Millisecond)

	drained := make(chan error, 1)
	go func() { drained <- s.Drain(ctx) }()
	require.Eventually(t, func() bool { return s.State() == StateDraining }, reqTimeout, 5*time.Millisecond)

	var h Health
	require.Equal(t, http.StatusServiceUnavailable, getJSON(t, base+"/health", &h))
	require.Equal(t, StateDraining, h.State)
	for _, path := range []string{"/v1/infer", "/v1/chat/completions", "/v1/completions"} {
		r := post(t, ctx, base+path, `{"prompt":"hi","messages":[{"role":"user","content":"hi"}]}`)
		require.Equal(t, http.StatusServiceUnavailable, r.StatusCode, path)
		var eb ErrorBody
		require.NoError(t, json.NewDecoder(r.Body).Decode(&eb))
		require.Equal(t, "draining", eb.Error.Code)
	}
	require.Eventually(t, func() bool { return node.has(func(h Heartbeat) bool { return h.State == StateDraining }) }, reqTimeout, 5*time.Millisecond)
	select {
	case err := <-drained:
		t.Fatalf("drain returned %v with a request in flight", err)
	default:
	}

	g.open()
	st := parseInfer(t, readAllSSE(t, resp.Body))
	require.NotNil(t, st.End, "events %v", st.Order)
	require.Equal(t, 8, st.End.TokensOut)
	require.NoError(t, <-drained)
	require.Equal(t, StateStopped, s.State())

	beats := node.all()
	require.Equal(t, StateStopped, beats[len(beats)-1].State)
	require.Equal(t, StateDraining, beats[len(beats)-2].State)
	_, err := authed.Get(base + "/health")
	require.Error(t, err, "listener closed after drain")
}

// TestDrainTimeout: a generation that outlives the drain timeout is
// cancelled, its stream ends with an error event, and Drain reports the
// timeout.
func TestDrainTimeout(t *testing.T) {
	g := newGate()
	cfg := testConfig(t)
	cfg.DrainTimeout = 100 * time.Millisecond
	cfg.Load = g.load(testLoad)
	s, base := startServer(t, cfg)
	defer g.open()

	resp := recvResp(t, asyncPost(t, testCtx(t), base+"/v1/infer", map[string]any{"prompt": "Joe loves writing stories", "max_tokens": 8}))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	g.waitEntered(t, 1)
	err := s.Drain(context.Background())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	st := parseInfer(t, readAllSSE(t, resp.Body))
	require.Nil(t, st.End)
	require.NotNil(t, st.Err, "events %v", st.Order)
	require.Equal(t, "draining", st.Err.Code)
	require.Equal(t, StateStopped, s.State())
}

// TestLoading: while the model loads, health and inference answer 503
// "loading" and the node hears "loading"; then the worker turns ready.
func TestLoading(t *testing.T) {
	node := newNodeRecorder(t)
	release := make(chan struct{})
	cfg := testConfig(t)
	cfg.NodeURL = node.srv.URL
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.Load = func(path string, opts LoadOptions) (Model, error) {
		<-release // a slow disk
		return LoadEngine(path, opts)
	}
	s, err := New(cfg)
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, s.Start(ctx))
	defer s.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	base := "http://" + s.Addr().String()

	var h Health
	require.Equal(t, http.StatusServiceUnavailable, getJSON(t, base+"/health", &h))
	require.Equal(t, StateLoading, h.State)
	resp := post(t, ctx, base+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	var eb ErrorBody
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
	require.Equal(t, "loading", eb.Error.Code)
	require.Eventually(t, func() bool { return node.has(func(h Heartbeat) bool { return h.State == StateLoading }) }, reqTimeout, 5*time.Millisecond)

	close(release)
	require.NoError(t, s.WaitReady(ctx))
	require.Equal(t, http.StatusOK, getJSON(t, base+"/health", &h))
	require.Eventually(t, func() bool {
		return node.has(func(h Heartbeat) bool { return h.State == StateReady && h.ContextLength == 2048 })
	}, reqTimeout, 5*time.Millisecond)
}

package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startInfer starts a streaming /v1/infer request and returns once the
// response headers arrived (that is, once it holds a slot) or, for a
// queued request, returns a channel with the response.
func asyncPost(t *testing.T, ctx context.Context, url string, body any) <-chan *http.Response {
	ch := make(chan *http.Response, 1)
	go func() {
		data, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytesReader(data))
		if err != nil {
			ch <- nil
			return
		}
		resp, err := authed.Do(req)
		if err != nil {
			ch <- nil
			return
		}
		ch <- resp
	}()
	return ch
}

func recvResp(t *testing.T, ch <-chan *http.Response) *http.Response {
	t.Helper()
	select {
	case resp := <-ch:
		require.NotNil(t, resp, "request failed")
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	case <-time.After(reqTimeout):
		t.Fatal("no response")
		return nil
	}
}

func serverInfo(t *testing.T, s *Server) Info { return s.Info() }

// TestQueueFullAndFIFO: with 2 slots and a queue of 2, two requests hold
// the slots, two wait, the fifth gets 429 at once; once the gate opens all
// four accepted requests finish with their full output.
func TestQueueFullAndFIFO(t *testing.T) {
	g := newGate()
	cfg := testConfig(t)
	cfg.Slots, cfg.Queue = 2, 2
	cfg.Load = g.load(testLoad)
	s, base := startServer(t, cfg)
	defer g.open()
	body := map[string]any{"prompt": "Joe loves writing stories", "max_tokens": 8, "temperature": 0}

	ctx := testCtx(t)
	var running []*http.Response
	for i := 0; i < 2; i++ {
		running = append(running, recvResp(t, asyncPost(t, ctx, base+"/v1/infer", body)))
		require.Equal(t, http.StatusOK, running[i].StatusCode)
	}
	g.waitEntered(t, 2)
	require.Equal(t, StateBusy, s.State())

	queued := []<-chan *http.Response{asyncPost(t, ctx, base+"/v1/infer", body), asyncPost(t, ctx, base+"/v1/chat/completions", map[string]any{
		"messages": []Message{{Role: "user", Content: "hi"}}, "max_tokens": 4,
	})}
	require.Eventually(t, func() bool { return serverInfo(t, s).Queued == 2 }, reqTimeout, 5*time.Millisecond)

	in := s.Info()
	require.Equal(t, 2, in.InFlight)
	require.Equal(t, StateBusy, in.State)

	// The queue is full: 429 with an OpenAI error, on every endpoint.
	for _, path := range []string{"/v1/infer", "/v1/completions"} {
		resp := post(t, ctx, base+path, body)
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		var eb ErrorBody
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
		require.Equal(t, "queue_full", eb.Error.Code)
		require.Equal(t, "rate_limit_error", eb.Error.Type)
		require.Contains(t, eb.Error.Message, "queued")
	}
	// Health stays 200 while busy: the worker is alive, just full.
	var h Health
	require.Equal(t, http.StatusOK, getJSON(t, base+"/health", &h))
	require.Equal(t, StateBusy, h.State)

	g.open()
	for _, resp := range running {
		st := parseInfer(t, readAllSSE(t, resp.Body))
		require.NotNil(t, st.End, "events %v", st.Order)
		require.Equal(t, 8, st.End.TokensOut)
	}
	r3 := recvResp(t, queued[0])
	require.Equal(t, http.StatusOK, r3.StatusCode)
	require.NotNil(t, parseInfer(t, readAllSSE(t, r3.Body)).End)
	r4 := recvResp(t, queued[1])
	require.Equal(t, http.StatusOK, r4.StatusCode)
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(r4.Body).Decode(&cc))
	require.Equal(t, 4, cc.Usage.CompletionTokens)

	require.Eventually(t, func() bool { in := s.Info(); return in.InFlight == 0 && in.Queued == 0 }, reqTimeout, 5*time.Millisecond)
	require.Equal(t, StateReady, s.State())
}

// TestCancellationFreesSlot: a client that goes away mid-generation, or
// while queued, gives its slot (or queue place) back; the next request runs
// and produces the same text as on an idle worker.
func TestCancellationFreesSlot(t *testing.T) {
	g := newGate()
	cfg := testConfig(t)
	cfg.Slots, cfg.Queue = 1, 1
	cfg.Load = g.load(testLoad)
	s, base := startServer(t, cfg)
	body := map[string]any{"prompt": "Joe loves writing stories", "max_tokens": 8, "temperature": 0}

	// Request A holds the only slot, B waits in the queue.
	ctxA, cancelA := context.WithCancel(testCtx(t))
	respA := recvResp(t, asyncPost(t, ctxA, base+"/v1/infer", body))
	require.Equal(t, http.StatusOK, respA.StatusCode)
	g.waitEntered(t, 1)
	ctxB, cancelB := context.WithCancel(testCtx(t))
	chB := asyncPost(t, ctxB, base+"/v1/chat/completions", map[string]any{"messages": []Message{{Role: "user", Content: "hi"}}})
	require.Eventually(t, func() bool { return s.Info().Queued == 1 }, reqTimeout, 5*time.Millisecond)

	// B gives up while queued: its place is freed.
	cancelB()
	require.Nil(t, <-chB)
	require.Eventually(t, func() bool { return s.Info().Queued == 0 }, reqTimeout, 5*time.Millisecond)
	require.Equal(t, 1, s.Info().InFlight)

	// A goes away mid-generation: the slot is freed.
	cancelA()
	require.Eventually(t, func() bool { return s.Info().InFlight == 0 }, reqTimeout, 5*time.Millisecond)
	require.Equal(t, StateReady, s.State())

	// The slot (and its reused session) serves the next request correctly.
	g.open()
	got := infer(t, base, body)
	require.NotNil(t, got.End)
	require.Equal(t, 8, got.End.TokensOut)
	fresh := startFresh(t)
	want := infer(t, fresh, body)
	require.Equal(t, want.ids(), got.ids())
}

// startFresh starts an ungated worker for comparisons.
func startFresh(t *testing.T) string {
	_, base := startServer(t, testConfig(t))
	return base
}

func TestSlotPoolFIFO(t *testing.T) {
	p := newSlotPool([]*slot{{id: 0}}, 3)
	ctx := testCtx(t)
	first, err := p.acquire(ctx)
	require.NoError(t, err)

	order := make(chan int, 3)
	for i := 0; i < 3; i++ {
		go func() {
			sl, err := p.acquire(ctx)
			if err != nil {
				order <- -1
				return
			}
			order <- i
			p.release(sl)
		}()
		// Enqueue in a known order.
		require.Eventually(t, func() bool { _, q := p.stats(); return q == i+1 }, reqTimeout, time.Millisecond)
	}
	_, err = p.acquire(ctx)
	require.ErrorIs(t, err, ErrQueueFull)

	p.release(first)
	for i := 0; i < 3; i++ {
		require.Equal(t, i, <-order)
	}
	busy, queued := p.stats()
	require.Zero(t, busy)
	require.Zero(t, queued)
}

func TestSlotPoolCancelWhileQueued(t *testing.T) {
	p := newSlotPool([]*slot{{id: 0}}, 1)
	held, err := p.acquire(testCtx(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() { _, err := p.acquire(ctx); errc <- err }()
	require.Eventually(t, func() bool { _, q := p.stats(); return q == 1 }, reqTimeout, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	_, q := p.stats()
	require.Zero(t, q)
	p.release(held)
	busy, _ := p.stats()
	require.Zero(t, busy)
}

package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
)

// The generation every test worker knows: token i is word i.
var words = []string{"Once", " upon", " a", " time", " there", " was"}

// testWorker is a real HTTP server speaking a worker's /v1/infer stream.
// With failAfter > 0 it breaks the connection after that many tokens; with
// status it answers that status instead.
type testWorker struct {
	id        string
	failAfter int
	status    int
	mu        sync.Mutex
	resumes   [][]int32 // the Ext.Resume of each request
	format    string    // the started event's (worker.FormatHarmony)
	srv       *httptest.Server
}

func newWorker(t *testing.T, id string, failAfter, status int) *testWorker {
	w := &testWorker{id: id, failAfter: failAfter, status: status}
	w.srv = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *testWorker) serve(rw http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	_ = json.NewDecoder(r.Body).Decode(&body)
	var ext worker.Ext
	if raw, ok := body[worker.ExtField]; ok {
		_ = json.Unmarshal(raw, &ext)
	}
	w.mu.Lock()
	w.resumes = append(w.resumes, ext.Resume)
	w.mu.Unlock()
	if w.status != 0 {
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(w.status)
		_ = json.NewEncoder(rw).Encode(worker.ErrorBody{Error: worker.ErrorDetail{Message: "no", Code: "invalid_request"}})
		return
	}
	out := sse.Start(rw)
	_ = out.JSON("started", worker.StartedEvent{ID: "r", Resumed: len(ext.Resume), Format: w.format})
	for i := len(ext.Resume); i < len(words); i++ {
		if w.failAfter > 0 && i == w.failAfter {
			panic(http.ErrAbortHandler) // the worker dies mid-stream
		}
		_ = out.JSON("token", worker.TokenEvent{Text: words[i], Index: i, ID: int32(100 + i)})
	}
	_ = out.JSON("end", worker.EndEvent{StopReason: "length", TokensOut: len(words)})
}

// cluster is what the router sees, and the relay's way to the workers.
type cluster struct{ workers map[string]*testWorker }

func (c *cluster) AliveNodes() map[string]string { return map[string]string{"n1": "one"} }
func (c *cluster) Loads() []router.WorkerLoad {
	var out []router.WorkerLoad
	for id := range c.workers {
		out = append(out, router.WorkerLoad{ID: id, NodeID: "n1", Model: "m", State: "ready"})
	}
	return out
}
func (c *cluster) Workers() []fsm.Worker {
	var out []fsm.Worker
	for id := range c.workers {
		out = append(out, fsm.Worker{ID: id, NodeID: "n1", Model: "m", State: fsm.WorkerReady})
	}
	return out
}

func (c *cluster) CallWorker(ctx context.Context, t router.Target, method, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.workers[t.Registry.ID].srv.URL+path, strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

// newRelay routes to the workers in id order (a before b).
func newRelay(ws ...*testWorker) *relay.Relay {
	c := &cluster{workers: map[string]*testWorker{}}
	for _, w := range ws {
		c.workers[w.id] = w
	}
	r := router.New(router.Config{LocalID: "n1", LocalName: "one", LiveFor: time.Minute, View: c, Intn: func(int) int { return 0 }})
	return relay.New(relay.Config{Router: r, Caller: c, QueueFullWait: 300 * time.Millisecond})
}

func forward(t *testing.T, rl *relay.Relay) (string, relay.State, int, error) {
	body, err := relay.NewBody([]byte(`{"prompt":"x","max_tokens":6}`), true)
	require.NoError(t, err)
	var st relay.State
	var text strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, tried, err := rl.Forward(ctx, router.Filter{Model: "m"}, "/v1/infer", body, &st, func(resp *http.Response, tg router.Target) error {
		_, err := relay.Infer(resp, tg, &st, func(te worker.TokenEvent) error {
			text.WriteString(te.Text)
			return nil
		})
		return err
	})
	return text.String(), st, tried, err
}

// TestForwardHarmony: the started event's format reaches the relay's
// state (the node's Ollama chat parses a harmony answer by it), also
// when the stream resumes on another worker.
func TestForwardHarmony(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failAfter int
		format    string
		want      bool
	}{
		{"plain", 0, "", false},
		{"harmony", 0, worker.FormatHarmony, true},
		{"harmony, resumed", 2, worker.FormatHarmony, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newWorker(t, "a", tc.failAfter, 0), newWorker(t, "b", 0, 0)
			a.format, b.format = tc.format, tc.format
			text, st, _, err := forward(t, newRelay(a, b))
			require.NoError(t, err)
			require.Equal(t, strings.Join(words, ""), text)
			require.Equal(t, tc.want, st.Format == worker.FormatHarmony)
		})
	}
}

// TestForwardResumesOnAnotherWorker: a worker that dies after two tokens
// is replaced mid-stream; the next one gets the ids already relayed and
// the client sees one stream, each word once.
func TestForwardResumesOnAnotherWorker(t *testing.T) {
	a, b := newWorker(t, "a", 2, 0), newWorker(t, "b", 0, 0)
	text, st, tried, err := forward(t, newRelay(a, b))
	require.NoError(t, err)
	require.Equal(t, strings.Join(words, ""), text)
	require.Equal(t, 2, tried)
	require.Equal(t, [][]int32{{100, 101}}, b.resumes, "b resumes from the ids the client has")
	require.Len(t, st.IDs, len(words))
}

// TestForwardRetriesBeforeTheFirstToken: a worker that fails before
// answering (5xx) costs nothing; the request starts again elsewhere.
func TestForwardRetriesBeforeTheFirstToken(t *testing.T) {
	a, b := newWorker(t, "a", 0, http.StatusInternalServerError), newWorker(t, "b", 0, 0)
	text, _, tried, err := forward(t, newRelay(a, b))
	require.NoError(t, err)
	require.Equal(t, strings.Join(words, ""), text)
	require.Equal(t, 2, tried)
	require.Equal(t, [][]int32{nil}, b.resumes, "nothing to resume")
}

// TestForwardEnds: a request the worker rejects is not retried; full
// queues everywhere end after the wait; every worker failing ends after
// the attempts bound.
func TestForwardEnds(t *testing.T) {
	a, b := newWorker(t, "a", 0, http.StatusBadRequest), newWorker(t, "b", 0, 0)
	_, _, tried, err := forward(t, newRelay(a, b))
	var rj *relay.Rejected
	require.True(t, errors.As(err, &rj), "%v", err)
	require.Equal(t, http.StatusBadRequest, rj.Status)
	require.Equal(t, 1, tried)
	require.Empty(t, b.resumes)

	full1, full2 := newWorker(t, "a", 0, http.StatusTooManyRequests), newWorker(t, "b", 0, http.StatusTooManyRequests)
	_, _, _, err = forward(t, newRelay(full1, full2)) // ends after QueueFullWait, within forward's 20 s
	require.ErrorIs(t, err, relay.ErrAllFailed)
	require.Equal(t, jobs.CodeUnavailable, jobs.CodeOf(err))
	require.ErrorContains(t, err, "stayed full")

	dead := []*testWorker{newWorker(t, "a", 1, 0), newWorker(t, "b", 1, 0), newWorker(t, "c", 1, 0), newWorker(t, "d", 1, 0)}
	_, _, tried, err = forward(t, newRelay(dead...))
	require.Error(t, err)
	require.Equal(t, 3, tried, "at most three workers per request")

	_, _, _, err = forward(t, newRelay())
	require.ErrorIs(t, err, router.ErrNoWorker)
}

// TestForwardPassesOverFailingWorkers: three workers that fail every
// request at once (500) beside one that serves: each broken one is asked
// once, then sits out the picks, so at most one request fails (the one
// that happens to try all three first: three workers a request at most).
// Before, a worker failing at once had nothing in flight and won the
// picks by load: a quarter of the requests tried the three broken ones
// and failed.
func TestForwardPassesOverFailingWorkers(t *testing.T) {
	c := &cluster{workers: map[string]*testWorker{}}
	for _, id := range []string{"a", "b", "c"} {
		c.workers[id] = newWorker(t, id, 0, http.StatusInternalServerError)
	}
	good := newWorker(t, "d", 0, 0)
	c.workers["d"] = good
	now := time.Now() // the clock stands still: a failed worker stays out
	r := router.New(router.Config{LocalID: "n1", LocalName: "one", LiveFor: time.Minute, View: c, Now: func() time.Time { return now }})
	rl := relay.New(relay.Config{Router: r, Caller: c})
	failed := 0
	for i := 0; i < 40; i++ {
		text, _, _, err := forward(t, rl)
		if err != nil {
			require.ErrorIs(t, err, relay.ErrAllFailed)
			failed++
			continue
		}
		require.Equal(t, strings.Join(words, ""), text)
	}
	require.LessOrEqual(t, failed, 1, "requests that failed")
	for _, id := range []string{"a", "b", "c"} {
		require.LessOrEqual(t, len(c.workers[id].resumes), 1, "worker %s asked again while it sits out", id)
	}
	require.GreaterOrEqual(t, len(good.resumes), 39)
}

// arriving is a cluster whose one worker is ready in the registry (just
// written) while its node's report of it has not arrived, until report
// is called.
type arriving struct {
	*cluster
	mu       sync.Mutex
	reported bool
	written  time.Time
}

func (c *arriving) report() { c.mu.Lock(); c.reported = true; c.mu.Unlock() }

func (c *arriving) Loads() []router.WorkerLoad {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.reported {
		return nil
	}
	return c.cluster.Loads()
}

func (c *arriving) Workers() []fsm.Worker {
	out := c.cluster.Workers()
	for i := range out {
		out[i].UpdatedAt = c.written
	}
	return out
}

// TestForwardWaitsForAnArrivingWorker: right after a worker is written
// ready (a spawn returned, a group was placed again), the request waits
// for its node's report instead of failing with no_worker; a worker
// whose report never comes fails the request with no_worker once
// ArriveWait is over, and a request whose context ends stops waiting.
func TestForwardWaitsForAnArrivingWorker(t *testing.T) {
	setup := func(t *testing.T, wait time.Duration) (*testWorker, *arriving, *router.Router, *relay.Relay) {
		w := newWorker(t, "a", 0, 0)
		c := &arriving{cluster: &cluster{workers: map[string]*testWorker{"a": w}}, written: time.Now()}
		r := router.New(router.Config{LocalID: "n1", LocalName: "one", LiveFor: time.Minute, View: c, Intn: func(int) int { return 0 }})
		return w, c, r, relay.New(relay.Config{Router: r, Caller: c, ArriveWait: wait})
	}
	t.Run("report comes", func(t *testing.T) {
		// The report comes after 100 ms; the bound leaves a loaded
		// machine room.
		_, c, r, rl := setup(t, 5*time.Second)
		require.True(t, r.Arriving(router.Filter{Model: "m"}))
		time.AfterFunc(100*time.Millisecond, c.report)
		text, _, _, err := forward(t, rl)
		require.NoError(t, err)
		require.Equal(t, strings.Join(words, ""), text)
	})
	t.Run("report never comes", func(t *testing.T) {
		const wait = 300 * time.Millisecond
		w, _, _, rl := setup(t, wait)
		t0 := time.Now()
		_, _, _, err := forward(t, rl)
		require.ErrorIs(t, err, router.ErrNoWorker)
		require.GreaterOrEqual(t, time.Since(t0), wait, "it waited for the worker")
		require.Empty(t, w.resumes, "the worker was never asked")
	})
	t.Run("context ends", func(t *testing.T) {
		_, _, _, rl := setup(t, 5*time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := rl.Pick(ctx, router.Filter{Model: "m"})
		require.ErrorIs(t, err, context.Canceled)
	})
}

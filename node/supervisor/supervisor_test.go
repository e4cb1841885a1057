package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// procs is the process manager's view as plain data: worker id → secret
// and record.
type procs struct {
	mu sync.Mutex
	m  map[string]proc
}

type proc struct {
	secret string
	info   process.WorkerInfo
}

func (p *procs) add(secret string, info process.WorkerInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]proc{}
	}
	p.m[info.WorkerID] = proc{secret, info}
}

func (p *procs) remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, id)
}

func (p *procs) Secret(id string) (string, int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.m[id]
	return e.secret, e.info.Port, ok
}

func (p *procs) Info(id string) (process.WorkerInfo, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.m[id]
	return e.info, ok
}

func (p *procs) Infos() []process.WorkerInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []process.WorkerInfo
	for _, e := range p.m {
		out = append(out, e.info)
	}
	return out
}

// types resolves the catalog's built-in types.
type types struct{}

func (types) Type(name string) (workercat.WorkerType, error) {
	for _, t := range append(workercat.DefaultTypes(), workercat.RbeeType()) {
		if t.Name == name {
			return t, nil
		}
	}
	return workercat.WorkerType{}, workercat.ErrUnknownType
}

// cluster is the node as plain data; it records what the supervisor
// publishes and applies.
type cluster struct {
	mu        sync.Mutex
	published [][]router.WorkerLoad
	members   map[string]gossip.State
	reports   map[string][]router.WorkerLoad
	workers   []fsm.Worker // the registry's
	nodes     []fsm.Node   // the registry's
	versions  Versions
	leader    bool
	applied   []fsm.Command
	pending   map[string]int
	passes    int
	failApply int             // Apply fails this many more times
	blind     bool            // ViewHasQuorum says false
	reached   map[string]bool // RaftReaches says true
}

func (c *cluster) Publish(ws []router.WorkerLoad) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.published = append(c.published, ws)
}

func (c *cluster) lastPublished() ([]router.WorkerLoad, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.published) == 0 {
		return nil, 0
	}
	return c.published[len(c.published)-1], len(c.published)
}

func (c *cluster) Members() map[string]gossip.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]gossip.State{}
	for k, v := range c.members {
		out[k] = v
	}
	return out
}

func (c *cluster) Report(id string) ([]router.WorkerLoad, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.reports[id]
	return r, ok
}

// Registry is a real registry (at version 3) holding c.workers.
func (c *cluster) Registry() *fsm.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := fsm.New(nil)
	cmds := []fsm.Command{fsm.SetRegistryVersion{Version: 3}}
	for _, n := range c.nodes {
		cmds = append(cmds, fsm.UpsertNode{Node: n})
	}
	for _, w := range c.workers {
		cmds = append(cmds, fsm.UpsertWorker{Worker: w})
	}
	for i, cmd := range cmds {
		b, err := fsm.Encode(cmd)
		if err == nil {
			_, err = f.ApplyCommand(uint64(i+1), b)
		}
		if err != nil {
			panic(err)
		}
	}
	return f.State()
}

func (c *cluster) Versions() Versions {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versions
}

func (c *cluster) IsLeader() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *cluster) ViewHasQuorum() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.blind
}

func (c *cluster) RaftReaches(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reached[id]
}

func (c *cluster) Apply(_ context.Context, b []byte) error {
	cmd, err := fsm.Decode(b)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failApply > 0 {
		c.failApply--
		return errors.New("no quorum")
	}
	c.applied = append(c.applied, cmd)
	return nil
}

func (c *cluster) Pending(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[id]
}

func (c *cluster) Pass(bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.passes++
}

type fixture struct {
	s     *Supervisor
	procs *procs
	c     *cluster
}

func newFixture(t *testing.T, timeout time.Duration) *fixture {
	t.Helper()
	f := &fixture{procs: &procs{}, c: &cluster{pending: map[string]int{}}}
	f.s = New(Config{HeartbeatTimeout: timeout, Procs: f.procs, Types: types{}, Cluster: f.c})
	t.Cleanup(f.s.Close)
	return f
}

// started starts the loops and waits for the first engine pass.
func (f *fixture) started(t *testing.T) {
	t.Helper()
	f.s.Start(context.Background())
	select {
	case <-f.s.Adopted():
	case <-time.After(10 * time.Second):
		t.Fatal("the first engine pass did not end")
	}
}

func postHeartbeat(s *Supervisor, remote string, hb worker.Heartbeat, authz string) *httptest.ResponseRecorder {
	b, _ := json.Marshal(hb)
	r := httptest.NewRequest(http.MethodPost, "/v1/workers/heartbeat", strings.NewReader(string(b)))
	r.RemoteAddr = remote
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	w := httptest.NewRecorder()
	s.HandleHeartbeat(w, r)
	return w
}

const local = "127.0.0.1:50000"

// TestHeartbeatAuthentication: a heartbeat is accepted only from this
// machine, with the secret of a worker the process manager supervises, on
// the port it was given; anything else changes nothing.
func TestHeartbeatAuthentication(t *testing.T) {
	f := newFixture(t, time.Minute)
	secret := strings.Repeat("ab", 32)
	f.procs.add(secret, process.WorkerInfo{WorkerID: "w-1", PID: 11, Port: 9001, Type: workercat.TypeCPU})
	good := worker.Heartbeat{ID: "w-1", PID: 11, Port: 9001, Model: "m", State: worker.StateReady, Slots: 1}
	cases := []struct {
		name   string
		remote string
		hb     worker.Heartbeat
		authz  string
		status int
	}{
		{"off loopback", "192.0.2.7:1", good, "Bearer " + secret, http.StatusForbidden},
		{"no id", local, worker.Heartbeat{Port: 9001}, "Bearer " + secret, http.StatusBadRequest},
		{"no port", local, worker.Heartbeat{ID: "w-1"}, "Bearer " + secret, http.StatusBadRequest},
		{"port out of range", local, worker.Heartbeat{ID: "w-1", Port: 70000}, "Bearer " + secret, http.StatusBadRequest},
		{"megabyte model", local, with(good, func(hb *worker.Heartbeat) { hb.Model = strings.Repeat("m", 60<<10) }), "Bearer " + secret, http.StatusBadRequest},
		{"path past PATH_MAX", local, with(good, func(hb *worker.Heartbeat) { hb.ModelPath = "/" + strings.Repeat("p", 4096) }), "Bearer " + secret, http.StatusBadRequest},
		{"long device", local, with(good, func(hb *worker.Heartbeat) { hb.Device = strings.Repeat("d", 1025) }), "Bearer " + secret, http.StatusBadRequest},
		{"negative in flight", local, with(good, func(hb *worker.Heartbeat) { hb.InFlight = -1000 }), "Bearer " + secret, http.StatusBadRequest},
		{"negative slots", local, with(good, func(hb *worker.Heartbeat) { hb.Slots = -1 }), "Bearer " + secret, http.StatusBadRequest},
		{"negative pid", local, with(good, func(hb *worker.Heartbeat) { hb.PID = -1 }), "Bearer " + secret, http.StatusBadRequest},
		{"negative rate", local, with(good, func(hb *worker.Heartbeat) { hb.TokensPerSecond = -3 }), "Bearer " + secret, http.StatusBadRequest},
		{"no credential", local, good, "", http.StatusUnauthorized},
		{"empty bearer", local, good, "Bearer ", http.StatusUnauthorized},
		{"basic", local, good, "Basic " + secret, http.StatusUnauthorized},
		{"bare secret", local, good, secret, http.StatusUnauthorized},
		{"wrong secret", local, good, "Bearer " + strings.Repeat("cd", 32), http.StatusUnauthorized},
		{"secret prefix", local, good, "Bearer " + secret[:10], http.StatusUnauthorized},
		{"right secret, wrong port", local, worker.Heartbeat{ID: "w-1", Port: 9002, State: worker.StateReady}, "Bearer " + secret, http.StatusUnauthorized},
		{"unknown worker", local, worker.Heartbeat{ID: "w-2", Port: 9001, State: worker.StateReady}, "Bearer " + secret, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := postHeartbeat(f.s, tc.remote, tc.hb, tc.authz)
			require.Equal(t, tc.status, w.Code, w.Body.String())
			if tc.status == http.StatusUnauthorized {
				require.NotEmpty(t, w.Header().Get("WWW-Authenticate"))
			}
			require.Empty(t, f.s.Ports(), "a refused heartbeat entered the view")
		})
	}
	long := good
	long.ModelPath = "/" + strings.Repeat("p", 2000) // longer than the other fields may be, within PATH_MAX
	w := postHeartbeat(f.s, local, long, "Bearer "+secret)
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	w = postHeartbeat(f.s, local, good, "Bearer "+secret)
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	require.Equal(t, map[string]int{"w-1": 9001}, f.s.Ports())
	hb, ok := f.s.Local("w-1")
	require.True(t, ok)
	require.Equal(t, worker.StateReady, hb.State)
	// A body over the bound is refused (413).
	r := httptest.NewRequest(http.MethodPost, "/v1/workers/heartbeat", strings.NewReader(`{"id":"`+strings.Repeat("x", 70<<10)+`"}`))
	r.RemoteAddr = local
	rec := httptest.NewRecorder()
	f.s.HandleHeartbeat(rec, r)
	require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
}

// TestHeartbeatTable: what the view keeps of each state, and when it
// publishes: never before adoption, then at once on a new worker, a state
// change and a worker gone, not on a repeated state.
func TestHeartbeatTable(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.procs.add("s1", process.WorkerInfo{WorkerID: "w-1", Port: 9001, Type: workercat.TypeCPU})
	f.s.Heartbeat(worker.Heartbeat{ID: "w-1", Port: 9001, State: worker.StateLoading})
	_, n := f.c.lastPublished()
	require.Zero(t, n, "published before the first engine pass")

	f.started(t)
	require.Eventually(t, func() bool { ws, _ := f.c.lastPublished(); return len(ws) == 1 }, 10*time.Second, 10*time.Millisecond)
	count := func() int { _, n := f.c.lastPublished(); return n }
	steps := []struct {
		name    string
		hb      worker.Heartbeat
		gone    bool // the process exited before the heartbeat
		listed  bool
		publish bool
	}{
		{"ready", worker.Heartbeat{ID: "w-1", Port: 9001, State: worker.StateReady}, false, true, true},
		{"ready again", worker.Heartbeat{ID: "w-1", Port: 9001, State: worker.StateReady, InFlight: 1}, false, true, false},
		{"busy", worker.Heartbeat{ID: "w-1", Port: 9001, State: worker.StateBusy}, false, true, true},
		{"stopped, process exiting", worker.Heartbeat{ID: "w-1", Port: 9001, State: worker.StateStopped}, false, true, true},
		{"stopped, process gone", worker.Heartbeat{ID: "w-1", Port: 9001, State: worker.StateStopped}, true, false, true},
		{"failed, never listed", worker.Heartbeat{ID: "w-2", Port: 9002, State: worker.StateFailed}, false, false, false},
	}
	for _, st := range steps {
		if st.gone {
			f.procs.remove(st.hb.ID)
		}
		before := count()
		f.s.Heartbeat(st.hb)
		_, listed := f.s.Local(st.hb.ID)
		require.Equal(t, st.listed, listed, st.name)
		if st.publish {
			require.Greater(t, count(), before, st.name)
		}
	}
	// A process exit drops a worker at once and publishes.
	f.s.Heartbeat(worker.Heartbeat{ID: "w-3", Port: 9003, State: worker.StateReady})
	before := count()
	f.s.Gone("w-3")
	_, listed := f.s.Local("w-3")
	require.False(t, listed)
	require.Greater(t, count(), before)
	ws, _ := f.c.lastPublished()
	require.Empty(t, ws)
}

// TestStaleHeartbeatIgnored: a beat a worker sent before its last one
// (its loop's beat, cut short when it stopped, can reach the node after
// the final "stopped") does not take the worker back; a new process of
// the same id (another PID) and unnumbered beats are taken as they come.
func TestStaleHeartbeatIgnored(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.procs.add("s1", process.WorkerInfo{WorkerID: "w-1", Port: 9001, Type: workercat.TypeCPU})
	f.started(t)
	state := func() worker.State {
		hb, ok := f.s.Local("w-1")
		require.True(t, ok)
		return hb.State
	}
	beat := func(pid int, seq uint64, st worker.State) {
		f.s.Heartbeat(worker.Heartbeat{ID: "w-1", PID: pid, Port: 9001, State: st, Seq: seq})
	}
	steps := []struct {
		name string
		pid  int
		seq  uint64
		st   worker.State
		want worker.State
	}{
		{"ready", 10, 1, worker.StateReady, worker.StateReady},
		{"draining", 10, 2, worker.StateDraining, worker.StateDraining},
		{"stopped, process exiting", 10, 4, worker.StateStopped, worker.StateStopped},
		{"the loop's beat, late", 10, 3, worker.StateDraining, worker.StateStopped},
		{"the final beat again", 10, 4, worker.StateReady, worker.StateStopped},
		{"a new process", 11, 1, worker.StateLoading, worker.StateLoading},
		{"unnumbered", 11, 0, worker.StateReady, worker.StateReady},
		{"numbered after unnumbered", 11, 2, worker.StateBusy, worker.StateBusy},
	}
	for _, st := range steps {
		beat(st.pid, st.seq, st.st)
		require.Equal(t, st.want, state(), st.name)
	}
}

// TestSilentWorkerExpires: a worker that stops reporting leaves the view
// after the heartbeat timeout, and the next report does not list it.
func TestSilentWorkerExpires(t *testing.T) {
	f := newFixture(t, 300*time.Millisecond)
	f.started(t)
	f.s.Heartbeat(worker.Heartbeat{ID: "w-1", Port: 9001, State: worker.StateReady})
	require.Eventually(t, func() bool {
		_, listed := f.s.Local("w-1")
		ws, _ := f.c.lastPublished()
		return !listed && len(ws) == 0
	}, 10*time.Second, 20*time.Millisecond)
}

// engine is an httptest server that answers like an engine: health (503
// until ready), /slots, /metrics, and a streaming chat completion. It
// records the Authorization it was sent.
type engine struct {
	srv   *httptest.Server
	mu    sync.Mutex
	ready bool
	auth  []string
	slots string
}

func newEngine(t *testing.T) *engine {
	e := &engine{slots: `[{"n_ctx":4096,"is_processing":true},{"n_ctx":4096,"is_processing":false}]`}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.auth = append(e.auth, r.Header.Get("Authorization"))
		ready, slots := e.ready, e.slots
		e.mu.Unlock()
		switch r.URL.Path {
		case "/health":
			if !ready {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, `{"status":"ok"}`)
		case "/slots":
			fmt.Fprint(w, slots)
		case "/metrics":
			fmt.Fprint(w, "# HELP x\nvllm:num_requests_running{model=\"m\"} 3\nvllm:num_requests_waiting{model=\"m\"} 2\n")
		case "/v1/chat/completions":
			b, _ := io.ReadAll(r.Body)
			var req map[string]any
			_ = json.Unmarshal(b, &req)
			if req["model"] != "m1" || req["stream"] != true {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"error":{"message":"bad request body","code":400}}`)
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			for _, c := range []string{`{"choices":[{"delta":{"content":"Hel"}}]}`, `{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}`,
				`{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}`, `[DONE]`} {
				fmt.Fprintf(w, "data: %s\n\n", c)
			}
		case "/v1/completions":
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"error":{"message":"out of memory","code":500}}`)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *engine) port(t *testing.T) int {
	_, p, err := net.SplitHostPort(e.srv.Listener.Addr().String())
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

func (e *engine) setReady() {
	e.mu.Lock()
	e.ready = true
	e.mu.Unlock()
}

func (e *engine) sawOnly(secret string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, a := range e.auth {
		if a != "Bearer "+secret {
			return false
		}
	}
	return len(e.auth) > 0
}

// TestEnginePolling: an engine is loading while its health check answers
// 503, then ready with its slots, busy when the node's own count of
// requests fills them; a vLLM's gauges are read from /metrics. Every poll
// carries the worker's secret.
func TestEnginePolling(t *testing.T) {
	f := newFixture(t, time.Minute)
	e := newEngine(t)
	info := process.WorkerInfo{WorkerID: "e-1", PID: 21, Port: e.port(t), Type: workercat.TypeLlamaServer, ModelID: "m1"}
	f.procs.add("engine-secret", info)
	_, typ, ok := f.s.Engine("e-1")
	require.True(t, ok)
	_, isEngine := f.s.EngineType(process.WorkerInfo{Type: workercat.TypeCPU})
	require.False(t, isEngine, "a cpu worker is no engine")

	f.s.PollEngine(info, typ)
	hb, ok := f.s.Local("e-1")
	require.True(t, ok)
	require.Equal(t, worker.StateLoading, hb.State)
	require.Equal(t, "gpu", hb.Device)

	e.setReady()
	f.s.PollEngine(info, typ)
	hb, _ = f.s.Local("e-1")
	require.Equal(t, worker.StateReady, hb.State)
	require.Equal(t, 2, hb.Slots)
	require.Equal(t, 1, hb.InFlight)
	require.Equal(t, 4096, hb.ContextLength)

	f.c.mu.Lock()
	f.c.pending["e-1"] = 3
	f.c.mu.Unlock()
	f.s.PollEngine(info, typ)
	hb, _ = f.s.Local("e-1")
	require.Equal(t, worker.StateBusy, hb.State)
	require.Equal(t, 3, hb.InFlight)
	require.Equal(t, 1, hb.Queued)
	require.True(t, e.sawOnly("engine-secret"))

	vinfo := process.WorkerInfo{WorkerID: "v-1", PID: 22, Port: e.port(t), Type: workercat.TypeVLLM, ModelID: "m1", HealthPath: "/health"}
	f.procs.add("engine-secret", vinfo)
	_, vtyp, ok := f.s.Engine("v-1")
	require.True(t, ok)
	f.s.PollEngine(vinfo, vtyp)
	hb, _ = f.s.Local("v-1")
	require.Equal(t, worker.StateBusy, hb.State, "3 running on 1 slot")
	require.Equal(t, 3, hb.InFlight)
	require.Equal(t, 2, hb.Queued)
}

// TestAdoptedWorkerProbed: the first engine pass asks each re-adopted rbee
// worker's health (with its secret), so a ready one is listed before its
// first heartbeat and in the first load report.
func TestAdoptedWorkerProbed(t *testing.T) {
	f := newFixture(t, time.Minute)
	e := newEngine(t)
	e.setReady()
	f.procs.add("worker-secret", process.WorkerInfo{WorkerID: "w-1", PID: 31, Port: e.port(t), Type: workercat.TypeCPU, ModelID: "m1", Adopted: true})
	f.started(t)
	hb, ok := f.s.Local("w-1")
	require.True(t, ok)
	require.Equal(t, worker.StateReady, hb.State)
	require.True(t, e.sawOnly("worker-secret"))
	require.Eventually(t, func() bool {
		ws, _ := f.c.lastPublished()
		return len(ws) == 1 && ws[0].ID == "w-1"
	}, 10*time.Second, 10*time.Millisecond)
}

// TestCallEngine: Call hands an engine's calls to the translation:
// /v1/infer becomes a streaming chat completion for the
// catalog id, and the chunks rbee's token and end events; an engine's
// error answer comes back in rbee's shape; a resume is refused.
func TestCallEngine(t *testing.T) {
	f := newFixture(t, time.Minute)
	e := newEngine(t)
	info := process.WorkerInfo{WorkerID: "e-1", Port: e.port(t), Type: workercat.TypeLlamaServer, ModelID: "m1"}
	f.procs.add("s", info)
	ctx := context.Background()
	_, err := f.s.Call(ctx, "e-9", http.MethodPost, "/v1/infer", []byte(`{}`))
	require.Error(t, err, "not a worker of this node")
	resp, err := f.s.Call(ctx, "e-1", http.MethodPost, "/v1/infer", []byte(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	text, end := readInferStream(t, resp.Body)
	require.Equal(t, "Hello", text)
	require.Equal(t, "stop", end.StopReason)
	require.Equal(t, 4, end.TokensIn)
	require.Equal(t, 2, end.TokensOut)

	resp, err = f.s.Call(ctx, "e-1", http.MethodPost, "/v1/infer", []byte(`{"prompt":"hi"}`))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	var eb worker.ErrorBody
	require.NoError(t, json.Unmarshal(b, &eb), string(b))
	require.Equal(t, "engine_unavailable", eb.Error.Code)
	require.Equal(t, "out of memory", eb.Error.Message)

	_, err = f.s.Call(ctx, "e-1", http.MethodPost, "/v1/infer", []byte(`{"prompt":"hi","rbee":{"resume":[1,2]}}`))
	require.ErrorIs(t, err, ErrEngineResume)

	// What the translation cannot carry is refused, naming it, not dropped.
	resp, err = f.s.Call(ctx, "e-1", http.MethodPost, "/v1/infer", []byte(`{"prompt":"hi","tools":[{"type":"function","function":{"name":"f"}}]}`))
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.NoError(t, json.Unmarshal(b, &eb), string(b))
	require.Equal(t, "unsupported_parameter", eb.Error.Code)
	require.NotNil(t, eb.Error.Param)
	require.Equal(t, "tools", *eb.Error.Param)
}

// TestReconcileCommands: the leader's registry writes for what the nodes
// report.
func TestReconcileCommands(t *testing.T) {
	alive, dead := gossip.StateAlive, gossip.StateDead
	cases := []struct {
		name     string
		members  map[string]gossip.State
		reports  map[string][]router.WorkerLoad
		registry []fsm.Worker
		want     []string // "upsert:id:state", "state:id:state", "delete:id"
	}{
		{"new worker", map[string]gossip.State{"n1": alive},
			map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "loading"}, {ID: "w2", State: "ready"}}}, nil,
			[]string{"upsert:w1:registered", "upsert:w2:ready"}},
		{"state change", map[string]gossip.State{"n1": alive},
			map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "busy"}}}, []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerRegistered}},
			[]string{"state:w1:ready"}},
		{"no change", map[string]gossip.State{"n1": alive},
			map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "busy"}}}, []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerReady}},
			nil},
		{"retiring is the registry's", map[string]gossip.State{"n1": alive},
			map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "ready"}}}, []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerRetiring}},
			nil},
		{"gone from its node's report", map[string]gossip.State{"n1": alive},
			map[string][]router.WorkerLoad{"n1": {}}, []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerReady}},
			[]string{"delete:w1"}},
		{"node without a report yet", map[string]gossip.State{"n1": alive},
			nil, []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerReady}},
			nil},
		{"node dead", map[string]gossip.State{"n1": dead},
			map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "ready"}}}, []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerReady}},
			[]string{"delete:w1"}},
		{"node unknown", map[string]gossip.State{},
			nil, []fsm.Worker{{ID: "w2", NodeID: "n9", State: fsm.WorkerReady}, {ID: "w1", NodeID: "n9", State: fsm.WorkerReady}},
			[]string{"delete:w1", "delete:w2"}},
		{"suspect node still reports", map[string]gossip.State{"n1": gossip.StateSuspect},
			map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "ready"}}}, []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerReady}},
			nil},
		// A shard (re-adopted after a restart, its group re-planned
		// meanwhile) is registered with its group, never as a plain worker.
		{"new shard carries its group", map[string]gossip.State{"n1": alive},
			map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "ready", Group: "g-1"}}}, nil,
			[]string{"upsert:w1:ready:g-1"}},
		// Worker ids are unique; should two nodes report one, the first
		// by node id counts, and neither deletes it.
		{"two nodes report one worker", map[string]gossip.State{"n1": alive, "n2": alive},
			map[string][]router.WorkerLoad{"n2": {{ID: "w1", State: "loading"}}, "n1": {{ID: "w1", State: "ready"}}},
			[]fsm.Worker{{ID: "w1", NodeID: "n2", State: fsm.WorkerRegistered}},
			[]string{"state:w1:ready"}},
		{"writes in node then worker order, deletions last", map[string]gossip.State{"n1": alive, "n2": alive},
			map[string][]router.WorkerLoad{"n2": {{ID: "a", State: "ready"}}, "n1": {{ID: "c", State: "ready"}, {ID: "d", State: "ready"}}},
			[]fsm.Worker{{ID: "b", NodeID: "n2", State: fsm.WorkerReady}, {ID: "0", NodeID: "n1", State: fsm.WorkerReady}},
			[]string{"upsert:c:ready", "upsert:d:ready", "upsert:a:ready", "delete:0", "delete:b"}},
		{"registered shard without its group", map[string]gossip.State{"n1": alive},
			map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "ready", Group: "g-1"}}}, []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerRetiring}},
			[]string{"upsert:w1:retiring:g-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			f.c.members, f.c.reports, f.c.workers = tc.members, tc.reports, tc.registry
			var got []string
			for _, c := range f.s.reconcileCommands() {
				if u, ok := c.(fsm.UpsertWorker); ok {
					require.Equal(t, tc.members[u.Worker.NodeID], alive, "the reporting node")
				}
				got = append(got, cmdString(t, c))
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// cmdString names a worker command as the tests list them:
// "upsert:id:state[:group]", "state:id:state", "delete:id".
func cmdString(t *testing.T, c fsm.Command) string {
	t.Helper()
	switch c := c.(type) {
	case fsm.UpsertWorker:
		u := fmt.Sprintf("upsert:%s:%s", c.Worker.ID, c.Worker.State)
		if c.Worker.Group != "" {
			u += ":" + c.Worker.Group
		}
		return u
	case fsm.SetWorkerState:
		return fmt.Sprintf("state:%s:%s", c.ID, c.State)
	case fsm.DeleteWorker:
		return "delete:" + c.ID
	}
	t.Fatalf("command %T", c)
	return ""
}

// TestReconcileKeepsRetire: a worker retired while its node was cut off
// stays retiring in the registry while that node is down (dead or
// forgotten by gossip) and still registered, so that the node stops it
// when it returns instead of registering it anew as ready; once the node
// left or was reaped from the registry, the entry goes.
func TestReconcileKeepsRetire(t *testing.T) {
	retiring := []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerRetiring}}
	tests := []struct {
		name    string
		members map[string]gossip.State
		nodes   []fsm.Node
		workers []fsm.Worker
		report  []router.WorkerLoad // n1's; nil: none
		want    []string
	}{
		{"node dead", map[string]gossip.State{"n1": gossip.StateDead}, []fsm.Node{{ID: "n1", State: fsm.NodeFailed}}, retiring, nil, nil},
		{"node forgotten by gossip, not yet reaped", map[string]gossip.State{}, []fsm.Node{{ID: "n1", State: fsm.NodeFailed}}, retiring, nil, nil},
		{"node reaped", map[string]gossip.State{}, nil, retiring, nil, []string{"delete:w1"}},
		{"node left", map[string]gossip.State{"n1": gossip.StateLeft}, []fsm.Node{{ID: "n1", State: fsm.NodeLeft}}, retiring, nil, []string{"delete:w1"}},
		{"node alive, worker gone from its report", map[string]gossip.State{"n1": gossip.StateAlive}, []fsm.Node{{ID: "n1", State: fsm.NodeAlive}}, retiring,
			[]router.WorkerLoad{}, []string{"delete:w1"}},
		{"node back, worker still reported", map[string]gossip.State{"n1": gossip.StateAlive}, []fsm.Node{{ID: "n1", State: fsm.NodeAlive}}, retiring,
			[]router.WorkerLoad{{ID: "w1", State: "ready"}}, nil},
		{"a ready worker of a dead node goes", map[string]gossip.State{"n1": gossip.StateDead}, []fsm.Node{{ID: "n1", State: fsm.NodeFailed}},
			[]fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerReady}}, nil, []string{"delete:w1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			f.c.members, f.c.nodes, f.c.workers = tc.members, tc.nodes, tc.workers
			f.c.reports = map[string][]router.WorkerLoad{}
			if tc.report != nil {
				f.c.reports["n1"] = tc.report
			}
			var got []string
			for _, c := range f.s.reconcileCommands() {
				switch c := c.(type) {
				case fsm.DeleteWorker:
					got = append(got, "delete:"+c.ID)
				default:
					got = append(got, fmt.Sprintf("%T", c))
				}
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// TestReconcileBlindView: a leader whose gossip view lacks a majority of
// the voters (its own gossip cut off, raft fine) deletes no worker of a
// node it sees dead or does not know, while it still deletes one that an
// alive node stopped reporting and registers new ones; the pass stays
// unclean, so the withheld deletions are looked at again next pass.
func TestReconcileBlindView(t *testing.T) {
	alive, dead := gossip.StateAlive, gossip.StateDead
	members := map[string]gossip.State{"n1": alive, "n2": dead, "n3": gossip.StateLeft}
	reports := map[string][]router.WorkerLoad{"n1": {{ID: "w-new", State: "ready"}}}
	registry := []fsm.Worker{{ID: "w-gone", NodeID: "n1", State: fsm.WorkerReady}, {ID: "w-dead", NodeID: "n2", State: fsm.WorkerReady},
		{ID: "w-left", NodeID: "n3", State: fsm.WorkerReady}, {ID: "w-unknown", NodeID: "n9", State: fsm.WorkerReady}}
	tests := []struct {
		blind   bool
		reached map[string]bool // nodes raft still reaches
		want    []string
	}{
		{false, nil, []string{"upsert:w-new", "delete:w-dead", "delete:w-gone", "delete:w-left", "delete:w-unknown"}},
		{true, nil, []string{"upsert:w-new", "delete:w-gone"}},
		// The view sees a majority, but raft still reaches the node
		// gossip calls dead: the first node a gossip-cut leader sees
		// fail, before its view goes blind.
		{false, map[string]bool{"n2": true}, []string{"upsert:w-new", "delete:w-gone", "delete:w-left", "delete:w-unknown"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("blind=%v,reached=%v", tc.blind, tc.reached), func(t *testing.T) {
			f := newFixture(t, time.Minute)
			f.c.members, f.c.reports, f.c.workers, f.c.blind, f.c.reached = members, reports, registry, tc.blind, tc.reached
			f.c.leader = true
			f.s.reconcile()
			var got []string
			for _, c := range f.c.applied {
				switch c := c.(type) {
				case *fsm.UpsertWorker:
					got = append(got, "upsert:"+c.Worker.ID)
				case *fsm.DeleteWorker:
					got = append(got, "delete:"+c.ID)
				default:
					t.Fatalf("command %T", c)
				}
			}
			require.Equal(t, tc.want, got)
			require.Equal(t, !tc.blind && tc.reached == nil, f.s.clean, "a pass that withheld deletions is not clean")
		})
	}
}

// TestLeaderReconciles: the worker loop writes through Apply on the
// leader only, and runs the node's pass either way.
func TestLeaderReconciles(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.c.members = map[string]gossip.State{"n1": gossip.StateAlive}
	f.c.reports = map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "ready"}}}
	f.started(t)
	require.Eventually(t, func() bool { f.c.mu.Lock(); defer f.c.mu.Unlock(); return f.c.passes > 0 }, 10*time.Second, 10*time.Millisecond)
	f.c.mu.Lock()
	require.Empty(t, f.c.applied, "a follower wrote")
	f.c.leader = true
	f.c.mu.Unlock()
	f.s.Kick()
	require.Eventually(t, func() bool {
		f.c.mu.Lock()
		defer f.c.mu.Unlock()
		return len(f.c.applied) > 0
	}, 10*time.Second, 10*time.Millisecond)
	f.c.mu.Lock()
	up, ok := f.c.applied[0].(*fsm.UpsertWorker)
	f.c.mu.Unlock()
	require.True(t, ok)
	require.Equal(t, "w1", up.Worker.ID)
	require.Equal(t, fsm.WorkerReady, up.Worker.State)
}

// TestReconcileSkipsUnchanged: the leader skips a reconcile pass when its
// inputs' versions are those of its last pass that wrote everything; a
// moved version, a failed write or a new leadership brings a full pass.
// (The registry here does not take the writes, so every full pass writes
// the upsert again: the count of writes is the count of full passes.)
func TestReconcileSkipsUnchanged(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.c.members = map[string]gossip.State{"n1": gossip.StateAlive}
	f.c.reports = map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "ready"}}}
	f.c.versions = Versions{Members: 1, Reports: 1, Registry: 1}
	f.c.leader = true
	writes := func() int { f.c.mu.Lock(); defer f.c.mu.Unlock(); return len(f.c.applied) }
	f.started(t)
	require.Eventually(t, func() bool { return writes() == 1 }, 10*time.Second, 10*time.Millisecond)
	skipped := f.s.skipped.Load()
	require.Eventually(t, func() bool { return f.s.skipped.Load() >= skipped+2 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, writes(), "an unchanged cluster was scanned again")

	step := func(name string, change func(c *cluster), want int) {
		t.Helper()
		f.c.mu.Lock()
		change(f.c)
		f.c.mu.Unlock()
		f.s.Kick()
		require.Eventually(t, func() bool { return writes() == want }, 10*time.Second, 10*time.Millisecond, name)
		skipped := f.s.skipped.Load()
		require.Eventually(t, func() bool { return f.s.skipped.Load() > skipped }, 10*time.Second, 10*time.Millisecond, name)
		require.Equal(t, want, writes(), name+": passes after it were not skipped")
	}
	step("reports moved", func(c *cluster) { c.versions.Reports++ }, 2)
	step("members moved", func(c *cluster) { c.versions.Members++ }, 3)
	step("registry moved", func(c *cluster) { c.versions.Registry++ }, 4)
	// A failed write leaves the pass unclean: the next one runs although
	// nothing moved.
	step("a write failed", func(c *cluster) { c.failApply = 1; c.versions.Registry++ }, 5)

	// A follower's pass forgets the last clean one: leading again scans.
	f.c.mu.Lock()
	f.c.leader = false
	passes := f.c.passes
	f.c.mu.Unlock()
	require.Eventually(t, func() bool { f.c.mu.Lock(); defer f.c.mu.Unlock(); return f.c.passes > passes+1 }, 10*time.Second, 10*time.Millisecond)
	step("leading again", func(c *cluster) { c.leader = true }, 6)
}

// with returns hb changed by mod.
func with(hb worker.Heartbeat, mod func(*worker.Heartbeat)) worker.Heartbeat {
	mod(&hb)
	return hb
}

// TestHungEngine: an engine (a real HTTP server on llama-server's paths)
// whose health check answers while its completions hang. A streamed call
// (/v1/infer, or an OpenAI stream passed through) fails with
// ErrEngineHung once no first byte came within EngineFirstByte, so the
// request goes on on another worker; after engineHangLimit such calls in
// a row the engine is reported failed (out of the schedule) though its
// health check answers, and once it answers the recheck's token again it
// is ready. Before, every call waited for as long as its client did.
func TestHungEngine(t *testing.T) {
	f := &fixture{procs: &procs{}, c: &cluster{pending: map[string]int{}}}
	f.s = New(Config{HeartbeatTimeout: time.Minute, Procs: f.procs, Types: types{}, Cluster: f.c, EngineFirstByte: 200 * time.Millisecond})
	t.Cleanup(f.s.Close)
	var hang atomic.Bool
	hang.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			fmt.Fprint(w, `{"status":"ok"}`)
		case "/slots":
			fmt.Fprint(w, `[{"n_ctx":4096,"is_processing":false}]`)
		case "/v1/chat/completions", "/v1/completions":
			_, _ = io.Copy(io.Discard, r.Body)
			if hang.Load() {
				w.Header().Set("Content-Type", "text/event-stream")
				w.(http.Flusher).Flush() // llama-server sends its head at once
				<-r.Context().Done()
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"x\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n")
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(p)
	info := process.WorkerInfo{WorkerID: "e-1", PID: 21, Port: port, Type: workercat.TypeLlamaServer, ModelID: "m1"}
	f.procs.add("s", info)
	_, typ, ok := f.s.Engine("e-1")
	require.True(t, ok)
	state := func() worker.State {
		f.s.PollEngine(info, typ)
		hb, ok := f.s.Local("e-1")
		if !ok {
			return "(not listed)"
		}
		return hb.State
	}
	require.Equal(t, worker.StateReady, state())

	calls := []struct{ path, body string }{
		{"/v1/infer", `{"prompt":"hi","max_tokens":2}`},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"stream":true}`},
		{"/v1/infer", `{"messages":[{"role":"user","content":"hi"}]}`},
	}
	require.Len(t, calls, engineHangLimit)
	for i, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // the client's patience
		_, err := f.s.Call(ctx, "e-1", http.MethodPost, c.path, []byte(c.body))
		cancel()
		require.ErrorIs(t, err, ErrEngineHung, "call %d (%s)", i, c.path)
		require.NotErrorIs(t, err, context.DeadlineExceeded)
		require.Zero(t, f.s.calls.inFlight("e-1"))
		if i < engineHangLimit-1 {
			require.Equal(t, worker.StateReady, state(), "after %d hung calls", i+1)
		}
	}
	require.Equal(t, worker.State("(not listed)"), state(), "failed: its health check answers, its completions do not")

	hang.Store(false)
	f.s.mu.Lock()
	f.s.hangs["e-1"].recheckAt = time.Time{} // the recheck is due
	f.s.mu.Unlock()
	require.Eventually(t, func() bool { return state() == worker.StateReady }, 10*time.Second, 20*time.Millisecond,
		"the recheck's answer puts the engine back")
	resp, err := f.s.Call(context.Background(), "e-1", http.MethodPost, "/v1/infer", []byte(`{"prompt":"hi"}`))
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Contains(t, string(b), "event: end")
}

// TestOwnCommands: what a node writes itself for its own workers, from
// its own report: new ones registered in their state, a state change, a
// worker gone from the report deleted; not a retiring one, nor a worker id
// the registry holds for another node; without a report, nothing.
func TestOwnCommands(t *testing.T) {
	f := newFixture(t, time.Minute)
	require.Empty(t, f.s.OwnCommands("n1"), "no report")
	f.c.reports = map[string][]router.WorkerLoad{"n1": {{ID: "w1", State: "busy"}, {ID: "w2", State: "loading"}, {ID: "w3", State: "ready"},
		{ID: "w7", State: "ready"}}}
	f.c.workers = []fsm.Worker{{ID: "w1", NodeID: "n1", State: fsm.WorkerRegistered}, {ID: "w4", NodeID: "n1", State: fsm.WorkerReady},
		{ID: "w5", NodeID: "n1", State: fsm.WorkerRetiring}, {ID: "w6", NodeID: "n2", State: fsm.WorkerReady},
		{ID: "w7", NodeID: "n2", State: fsm.WorkerReady}}
	var got []string
	for _, c := range f.s.OwnCommands("n1") {
		if u, ok := c.(fsm.UpsertWorker); ok {
			require.Equal(t, "n1", u.Worker.NodeID)
		}
		got = append(got, cmdString(t, c))
	}
	require.Equal(t, []string{"state:w1:ready", "upsert:w2:registered", "upsert:w3:ready", "delete:w4"}, got)
}

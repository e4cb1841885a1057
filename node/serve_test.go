package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
)

// built holds the binaries goBuild compiled, once per test binary.
var built struct {
	mu   sync.Mutex
	bins map[string]*builtBin
}

type builtBin struct {
	once sync.Once
	path string
	err  error
}

// goBuild compiles the package at pkg (relative to the repository root)
// into a binary called name, once per test binary, and returns its path.
func goBuild(t *testing.T, pkg, name string) string {
	t.Helper()
	built.mu.Lock()
	if built.bins == nil {
		built.bins = map[string]*builtBin{}
	}
	key := pkg + " as " + name // one package may be built under several names
	b := built.bins[key]
	if b == nil {
		b = &builtBin{}
		built.bins[key] = b
	}
	built.mu.Unlock()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "rbee-test-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = filepath.Dir(filepath.Dir(file))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
	})
	require.NoError(t, b.err)
	return b.path
}

// buildWorker compiles the real rbee-worker once per test binary.
func buildWorker(t *testing.T) string { return goBuild(t, "./cmd/rbee-worker", "rbee-worker") }

// servingCluster is an in-process cluster whose nodes can spawn the real
// worker on the bundled model.
func servingCluster(t *testing.T, n int) *nodetest.Cluster {
	bin := buildWorker(t)
	return nodetest.New(t, n, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
	})
}

func run(t *testing.T, n *node.Node, req map[string]any, out any) []jobs.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var evs []jobs.Event
	err := client.New(n.URL(), n.AdminKey()).Result(ctx, req, out, func(ev jobs.Event) { evs = append(evs, ev) })
	require.NoError(t, err, "events: %+v", evs)
	return evs
}

func spawn(t *testing.T, via *node.Node, hive string, slots int) api.SpawnResult {
	return spawnModel(t, via, hive, "builtin:stories260k", slots)
}

func spawnModel(t *testing.T, via *node.Node, hive, model string, slots int) api.SpawnResult {
	t.Helper()
	var res api.SpawnResult
	run(t, via, map[string]any{"operation": "worker_spawn", "hive": hive, "model": model, "threads": 1, "slots": slots}, &res)
	require.Equal(t, "ready", res.State)
	return res
}

// greedy is what the engine itself generates for prompt: the reference the
// cluster's answers must equal.
func greedy(t *testing.T, prompt string, n int) string {
	t.Helper()
	m, err := engine.Load("../testdata/model/stories260K.gguf", engine.Options{Threads: 1})
	require.NoError(t, err)
	defer m.Close()
	ids := m.Tokenizer().Encode(prompt, m.Tokenizer().AddBOS(), false)
	var sb strings.Builder
	_, err = m.NewSession().Generate(context.Background(), engine.GenerateRequest{Prompt: ids, MaxTokens: n}, func(tok engine.Token) error {
		sb.WriteString(tok.Text)
		return nil
	})
	require.NoError(t, err)
	return sb.String()
}

// waitSchedulable waits until every node can route to want workers.
func waitSchedulable(t *testing.T, c *nodetest.Cluster, want int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, n := range c.Running() {
			var res struct {
				Workers []api.WorkerView `json:"workers"`
			}
			run(t, n, map[string]any{"operation": "active_worker_list"}, &res)
			k := 0
			for _, w := range res.Workers {
				if w.Schedulable {
					k++
				}
			}
			if k != want {
				return false
			}
		}
		return true
	}, nodetest.WaitTimeout, 100*time.Millisecond)
}

func infer(t *testing.T, n *node.Node, req map[string]any) (api.InferResult, string) {
	t.Helper()
	base := map[string]any{"operation": "infer", "model": "stories260k", "temperature": 0, "max_tokens": 24}
	for k, v := range req {
		base[k] = v
	}
	var res api.InferResult
	evs := run(t, n, base, &res)
	var sb strings.Builder
	for _, ev := range evs {
		if ev.Type == jobs.TypeToken {
			sb.WriteString(ev.Text)
		}
	}
	require.Equal(t, res.Text, sb.String(), "streamed tokens and the result disagree")
	return res, sb.String()
}

func TestServeAcrossTheCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 3)
	w1 := spawn(t, c.Nodes[0], "node1", 1)
	// w2 keeps an f32 KV cache: the node passes kv_cache to the worker,
	// and the answers are the same.
	var w2 api.SpawnResult
	run(t, c.Nodes[1], map[string]any{"operation": "worker_spawn", "hive": "node2", "model": "builtin:stories260k", "threads": 1, "slots": 1, "kv_cache": "f32"}, &w2)
	require.Equal(t, "ready", w2.State)
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", w2.PID)); err == nil { // Linux
		require.Contains(t, strings.Split(string(cmdline), "\x00"), "--kv-cache")
		require.Contains(t, string(cmdline), "--kv-cache\x00f32\x00")
	}
	for _, bad := range []map[string]any{
		{"kv_cache": "q4_0"},
		{"kv_cache": "f32", "type": "llama-server"},
	} {
		req := map[string]any{"operation": "worker_spawn", "hive": "node2", "model": "builtin:stories260k"}
		maps.Copy(req, bad)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := client.New(c.Nodes[1].URL(), c.Nodes[1].AdminKey()).Run(ctx, req, func(jobs.Event) error { return nil })
		cancel()
		var ae *client.APIError
		require.ErrorAs(t, err, &ae, "%v", bad)
		require.Equal(t, http.StatusBadRequest, ae.Status, "%v: %v", bad, err)
		require.Equal(t, jobs.CodeBadRequest, ae.Code, "%v: %v", bad, err)
	}
	waitSchedulable(t, c, 2)
	want := greedy(t, "Once upon a time", 24)

	// Through every node, to a worker on another node (and the local one).
	for _, n := range c.Nodes {
		for _, w := range []api.SpawnResult{w1, w2} {
			res, text := infer(t, n, map[string]any{"prompt": "Once upon a time", "worker_id": w.WorkerID})
			require.Equal(t, want, text)
			require.Equal(t, w.WorkerID, res.WorkerID)
			require.Equal(t, w.Node, res.Node)
		}
	}
	// node0 hosts no worker: plain routing from it lands on another node.
	res, text := infer(t, c.Nodes[0], map[string]any{"prompt": "Once upon a time"})
	require.Equal(t, want, text)
	require.NotEqual(t, "node0", res.Node)

	// A model nobody serves is a clear error.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Run(ctx, map[string]any{"operation": "infer", "model": "nope", "prompt": "x"}, func(jobs.Event) error { return nil })
	var je *client.JobError
	require.ErrorAs(t, err, &je)
	require.Equal(t, node.CodeNoWorker, je.Code)

	// OpenAI API with the official client, through a node with no worker.
	oc := openai.NewClient(option.WithBaseURL(c.Nodes[0].URL()+"/v1/"), option.WithAPIKey("unused-on-loopback"))
	models, err := oc.Models.List(ctx)
	require.NoError(t, err)
	require.Len(t, models.Data, 1)
	require.Equal(t, "builtin--stories260k", models.Data[0].ID)
	comp, err := oc.Completions.New(ctx, openai.CompletionNewParams{
		Model:       openai.CompletionNewParamsModel("stories260k"),
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens:   openai.Int(24),
		Temperature: openai.Float(0),
	})
	require.NoError(t, err)
	require.Equal(t, want, comp.Choices[0].Text)
	stream := oc.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:       "stories260k",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")},
		MaxTokens:   openai.Int(16),
		Temperature: openai.Float(0),
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	require.NoError(t, stream.Err())
	require.Greater(t, chunks, 2)
	require.NotEmpty(t, acc.Choices[0].Message.Content)
	// A body near the API's cap reaches a worker on another node whole
	// (the frame carries it base64): the worker's own 400, not a 503
	// that counts healthy workers as failed.
	big, err := json.Marshal(map[string]any{"model": "stories260k", "max_tokens": 5,
		"messages": []map[string]string{{"role": "user", "content": strings.Repeat("a", 900_000)}}})
	require.NoError(t, err)
	resp, err := http.Post(c.Nodes[0].URL()+"/v1/chat/completions", "application/json", bytes.NewReader(big))
	require.NoError(t, err)
	bigBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(bigBody))
	require.Contains(t, string(bigBody), "context_length_exceeded")

	_, err = oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "nope", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)

	// Ollama API.
	before := scrape(t, c.Nodes[2])
	resp, err = http.Post(c.Nodes[2].URL()+"/api/generate", "application/json",
		bytes.NewBufferString(`{"model":"stories260k","prompt":"Once upon a time","stream":false,"options":{"temperature":0,"num_predict":24}}`))
	require.NoError(t, err)
	var og struct {
		Response string `json:"response"`
		Done     bool   `json:"done"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&og))
	resp.Body.Close()
	require.True(t, og.Done)
	require.Equal(t, want, og.Response)

	// Prometheus metrics, scraped and parsed.
	mf := scrape(t, c.Nodes[0])
	require.Equal(t, 3.0, gauge(mf, "rbee_gossip_members", "state", "alive"))
	require.Equal(t, 2.0, gauge(mf, "rbee_workers", "state", "ready"))
	var reqs float64
	for _, m := range mf["rbee_requests_total"].GetMetric() {
		reqs += m.GetCounter().GetValue()
	}
	require.GreaterOrEqual(t, reqs, 3.0)
	// Request series are labelled by model and the worker's node, never by
	// worker id (which would grow without bound).
	var ttftCount uint64
	for _, m := range mf["rbee_time_to_first_token_seconds"].GetMetric() {
		ttftCount += m.GetHistogram().GetSampleCount()
		require.Equal(t, []string{"model", "node"}, labelNames(m))
		require.Contains(t, []string{"node1", "node2"}, labelValue(m, "node"))
	}
	require.Positive(t, ttftCount)
	for _, name := range []string{"rbee_requests_total", "rbee_tokens_per_second"} {
		require.Contains(t, mf, name)
		for _, m := range mf[name].GetMetric() {
			require.NotContains(t, labelNames(m), "worker", name)
			require.Contains(t, labelNames(m), "node", name)
		}
	}
	// The Ollama request went through node 2, which recorded it like the
	// others: a request, its time to first token and its speed.
	mf2 := scrape(t, c.Nodes[2])
	ollama := 0.0
	for _, m := range mf2["rbee_requests_total"].GetMetric() {
		if labelValue(m, "api") == "ollama" && labelValue(m, "outcome") == "ok" {
			ollama += m.GetCounter().GetValue()
		}
	}
	require.Equal(t, 1.0, ollama)
	for _, name := range []string{"rbee_time_to_first_token_seconds", "rbee_tokens_per_second"} {
		require.Equal(t, samples(before, name)+1, samples(mf2, name), "%s on node2", name)
	}
	// A model name a client made up is "other", never a series of its
	// own: names are the client's to choose, series are the node's memory.
	known := map[string]bool{"other": true}
	for _, h := range c.Nodes[0].Registry().Models() {
		known[h.ModelID] = true
	}
	others := 0.0
	for _, n := range c.Nodes {
		for _, m := range scrape(t, n)["rbee_requests_total"].GetMetric() {
			require.True(t, known[labelValue(m, "model")], "series for model %q", labelValue(m, "model"))
			if labelValue(m, "model") == "other" {
				others += m.GetCounter().GetValue()
			}
		}
	}
	require.Positive(t, others, "the request for model nope")
	// The worker's own 400 (the body over the context) is an error of
	// the model's series, as the Ollama API counts one.
	refused := 0.0
	for _, m := range mf["rbee_requests_total"].GetMetric() {
		if labelValue(m, "api") == "openai" && labelValue(m, "model") == "builtin--stories260k" && labelValue(m, "outcome") == "error" {
			refused += m.GetCounter().GetValue()
		}
	}
	require.Equal(t, 1.0, refused)
	require.Contains(t, mf, "rbee_raft_apply_seconds")
	leaders := 0.0
	for _, n := range c.Nodes {
		leaders += gauge(scrape(t, n), "rbee_raft_is_leader", "", "")
	}
	require.Equal(t, 1.0, leaders)
}

func scrape(t *testing.T, n *node.Node) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(n.URL() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mf
}

// samples counts the observations of histogram name, all series together.
func samples(mf map[string]*dto.MetricFamily, name string) uint64 {
	var n uint64
	for _, m := range mf[name].GetMetric() {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// labelNames returns the names of m's labels, sorted.
func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	sort.Strings(out)
	return out
}

// labelValue returns the value of m's label name ("" without it).
func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func gauge(mf map[string]*dto.MetricFamily, name, label, value string) float64 {
	f, ok := mf[name]
	if !ok {
		return -1
	}
	for _, m := range f.GetMetric() {
		if label == "" {
			return m.GetGauge().GetValue()
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func TestWorkerExitAndRetire(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 3)
	w1 := spawn(t, c.Nodes[1], "node1", 1)
	w2 := spawn(t, c.Nodes[2], "node2", 1)
	waitSchedulable(t, c, 2)

	// Kill w1's process from outside: it leaves the schedule, requests go to w2.
	p, err := os.FindProcess(w1.PID)
	require.NoError(t, err)
	require.NoError(t, p.Kill())
	waitSchedulable(t, c, 1)
	for i := 0; i < 3; i++ {
		res, _ := infer(t, c.Nodes[0], map[string]any{"prompt": "Lily"})
		require.Equal(t, w2.WorkerID, res.WorkerID)
	}
	require.Eventually(t, func() bool {
		_, ok := c.Nodes[0].Registry().Worker(w1.WorkerID)
		return !ok
	}, nodetest.WaitTimeout, 50*time.Millisecond, "the leader removes the dead worker")

	// Retire a worker while a long request runs on it: the request
	// finishes, then the worker stops and leaves the registry.
	w3 := spawnModel(t, c.Nodes[0], "node1", slowModel(t), 1)
	waitSchedulable(t, c, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	firstTok := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	var res api.InferResult
	go func() {
		done <- client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Result(ctx, map[string]any{"operation": "infer", "model": "slow",
			"prompt": "Once upon a time", "temperature": 0, "max_tokens": 300}, &res, func(ev jobs.Event) {
			if ev.Type == jobs.TypeToken {
				once.Do(func() { close(firstTok) })
			}
		})
	}()
	<-firstTok
	run(t, c.Nodes[2], map[string]any{"operation": "active_worker_retire", "worker_id": w3.WorkerID}, nil)
	// Retiring: no new request goes to it.
	err = client.New(c.Nodes[2].URL(), c.Nodes[2].AdminKey()).Run(ctx, map[string]any{"operation": "infer", "model": "slow", "prompt": "x", "max_tokens": 2}, func(jobs.Event) error { return nil })
	var je *client.JobError
	require.ErrorAs(t, err, &je)
	require.Equal(t, node.CodeNoWorker, je.Code)
	require.NoError(t, <-done, "the in-flight request finishes")
	require.Equal(t, w3.WorkerID, res.WorkerID)
	require.Equal(t, 300, res.TokensOut)
	require.Eventually(t, func() bool {
		_, ok := c.Nodes[0].Registry().Worker(w3.WorkerID)
		return !ok
	}, nodetest.WaitTimeout, 100*time.Millisecond, "the retired worker leaves the registry")
	require.Eventually(t, func() bool { return processGone(w3.PID) }, nodetest.WaitTimeout, 100*time.Millisecond)
	// The other worker keeps serving.
	res2, _ := infer(t, c.Nodes[1], map[string]any{"prompt": "Lily"})
	require.Equal(t, w2.WorkerID, res2.WorkerID)

	// A worker id spawned again after its retirement is a new process,
	// and retiring it stops that one too.
	for round := range 2 {
		var again api.SpawnResult
		run(t, c.Nodes[0], map[string]any{"operation": "worker_spawn", "hive": "node1", "model": "builtin:stories260k",
			"threads": 1, "slots": 1, "worker_id": "w-again"}, &again)
		require.Equal(t, "ready", again.State, "round %d", round)
		if round == 0 {
			// The id is the cluster's: another hive refuses it, and a
			// malformed id is a bad request before anything starts.
			for _, c2 := range []struct{ hive, id, code string }{
				{"node2", "w-again", jobs.CodeConflict},
				{"node2", "a b", jobs.CodeBadRequest},
				{"node1", "../x", jobs.CodeBadRequest},
			} {
				err := client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Run(ctx, map[string]any{"operation": "worker_spawn", "hive": c2.hive,
					"model": "builtin:stories260k", "threads": 1, "slots": 1, "worker_id": c2.id}, func(jobs.Event) error { return nil })
				require.ErrorAs(t, err, &je, "%+v", c2)
				require.Equal(t, c2.code, je.Code, "%+v: %v", c2, err)
			}
		}
		run(t, c.Nodes[0], map[string]any{"operation": "active_worker_retire", "worker_id": "w-again"}, nil)
		require.Eventually(t, func() bool { return processGone(again.PID) }, nodetest.WaitTimeout, 100*time.Millisecond,
			"round %d: the retired process stops", round)
		require.Eventually(t, func() bool {
			_, ok := c.Nodes[0].Registry().Worker("w-again")
			return !ok
		}, nodetest.WaitTimeout, 100*time.Millisecond, "round %d: it leaves the registry", round)
	}

	// An id no replica will learn: not_found, once the retire has given
	// the replica its moment to catch up.
	err = client.New(c.Nodes[2].URL(), c.Nodes[2].AdminKey()).Run(ctx, map[string]any{"operation": "active_worker_retire", "worker_id": "w-never"}, func(jobs.Event) error { return nil })
	require.ErrorAs(t, err, &je)
	require.Equal(t, jobs.CodeNotFound, je.Code)
}

func processGone(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return true
	}
	return p.Signal(syscall.Signal(0)) != nil
}

// slowModel writes a random-weight model whose large f32 output layer
// makes each token cost a few milliseconds: streams then last seconds, long
// enough to kill a node in the middle of one.
func slowModel(t *testing.T) string {
	t.Helper()
	cfg := synth.DefaultConfig()
	cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Vocab, cfg.Ctx = 384, 1, 4, 4, 512, 98304, 2048
	path := filepath.Join(t.TempDir(), "slow.gguf")
	require.NoError(t, synth.Write(path, cfg))
	return path
}

func TestNodeLossDuringStream(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 3)
	leader := c.WaitLeader()
	li := c.Index(leader)
	// Put one worker on a non-leader (survivor) and one on another.
	var others []int
	for i := range c.Nodes {
		if i != li {
			others = append(others, i)
		}
	}
	entry := c.Nodes[others[0]]
	host := c.Nodes[others[1]]
	w := spawnModel(t, entry, host.Name(), slowModel(t), 1)
	waitSchedulable(t, c, 1)

	// Killing the leader while a stream runs on a surviving worker: the
	// stream finishes.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done, res := slowStream(ctx, entry, 300)
	c.Kill(li)
	require.NoError(t, <-done)
	require.Equal(t, w.WorkerID, res.WorkerID)
	require.Equal(t, 300, res.TokensOut, "the stream ran to its end")

	// Killing the node that hosts a busy worker: the client gets an
	// error (or a retry elsewhere), never a hang.
	done, _ = slowStream(ctx, entry, 2000)
	c.Kill(c.Index(host))
	select {
	case err := <-done:
		var je *client.JobError
		require.ErrorAs(t, err, &je)
		require.Equal(t, jobs.CodeUnavailable, je.Code)
	case <-time.After(60 * time.Second):
		t.Fatal("the client hangs after the worker's node died")
	}
	// The orphaned worker process is still ours to clean up.
	if p, err := os.FindProcess(w.PID); err == nil {
		_ = p.Kill()
	}
}

// TestFrozenWorkerStreamGoesOn: a worker that freezes mid-stream (SIGSTOP:
// its connections stay open, nothing comes) is expired by its node once
// its heartbeats stop, which ends the calls in flight to it; the stream,
// relayed through another node, goes on on another worker to its end.
func TestFrozenWorkerStreamGoesOn(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 2)
	entry, host := c.Nodes[0], c.Nodes[1]
	model := slowModel(t)
	w1 := spawnModel(t, entry, host.Name(), model, 1)
	waitSchedulable(t, c, 1)
	p1, err := os.FindProcess(w1.PID)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p1.Signal(syscall.SIGCONT) })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done, res := slowStream(ctx, entry, 1500)
	w2 := spawnModel(t, entry, entry.Name(), model, 1)
	require.NoError(t, p1.Signal(syscall.SIGSTOP))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("the stream hangs on the frozen worker")
	}
	require.Equal(t, w2.WorkerID, res.WorkerID, "it went on on the other worker")
	require.Equal(t, 1500, res.TokensOut)
}

// slowStream starts an infer of max tokens of the "slow" model through n
// and returns once its first token has come: done gets its error, res its
// result.
func slowStream(ctx context.Context, n *node.Node, max int) (<-chan error, *api.InferResult) {
	firstTok := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	res := &api.InferResult{}
	go func() {
		err := client.New(n.URL(), n.AdminKey()).Result(ctx, map[string]any{"operation": "infer", "model": "slow",
			"prompt": "Once upon a time", "temperature": 0, "max_tokens": max}, res, func(ev jobs.Event) {
			if ev.Type == jobs.TypeToken {
				once.Do(func() { close(firstTok) })
			}
		})
		once.Do(func() { close(firstTok) }) // an early failure: done says it
		done <- err
	}()
	<-firstTok
	return done, res
}

// A worker binary that is there but cannot be catalogued (the data dir's
// disk full, here a file where its directory goes) fails the spawn with
// the cause, not as not_found with advice to build or download a binary,
// which would fail the same way.
func TestSpawnWhenTheWorkerBinaryCannotBeCatalogued(t *testing.T) {
	c := servingCluster(t, 1)
	n := c.Nodes[0]
	require.NoError(t, os.WriteFile(filepath.Join(n.DataDir(), "workers", "cpu"), []byte("in the way"), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := client.New(n.URL(), n.AdminKey()).Run(ctx, map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "threads": 1},
		func(jobs.Event) error { return nil })
	var je *client.JobError
	require.ErrorAs(t, err, &je)
	require.NotEqual(t, jobs.CodeNotFound, je.Code, "%v", err)
	require.ErrorContains(t, err, "catalog")
	require.NotContains(t, err.Error(), "rbee worker build")
}

// TestRetiringEntryOfAnotherProcess: a replica's retiring entry of a
// worker id stops only the process it names. A worker id spawned again
// right after its retirement was stopped before it was ready by the
// retiring entry of the process before it, which a replica holds until
// the leader's removal reaches it (TestWorkerExitAndRetire failed so in
// CI: the new process drained at once and the spawn said it exited).
func TestRetiringEntryOfAnotherProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 2)
	w := spawn(t, c.Nodes[0], "node1", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	entry := func(pid int) fsm.Worker {
		rw, ok := c.Nodes[0].Registry().Worker(w.WorkerID)
		require.True(t, ok)
		rw.PID, rw.State = pid, fsm.WorkerRetiring
		return rw
	}
	// The entry of another process under the same id, retiring.
	cmd, err := fsm.Encode(fsm.UpsertWorker{Worker: entry(w.PID + 1_000_000)})
	require.NoError(t, err)
	_, err = c.Nodes[0].Apply(ctx, cmd)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		rw, ok := c.Nodes[1].Registry().Worker(w.WorkerID)
		return ok && rw.State == fsm.WorkerRetiring
	}, nodetest.WaitTimeout, 20*time.Millisecond, "the hive's replica holds the retiring entry")
	require.Never(t, func() bool { return processGone(w.PID) }, 2*time.Second, 100*time.Millisecond,
		"the running process is another one: it is not stopped")
	// Its own entry retiring: it stops.
	cmd, err = fsm.Encode(fsm.UpsertWorker{Worker: entry(w.PID)})
	require.NoError(t, err)
	_, err = c.Nodes[0].Apply(ctx, cmd)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return processGone(w.PID) }, nodetest.WaitTimeout, 100*time.Millisecond, "its own retiring entry stops it")
}

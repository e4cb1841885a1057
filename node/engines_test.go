package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// buildFakeLlamaServer builds testdata/engines/llama-server: llama-server's
// CLI flags, /health, /slots and /metrics, with deterministic text.
func buildFakeLlamaServer(t *testing.T) string {
	return goBuild(t, "./testdata/engines/llama-server", "llama-server")
}

// postJob submits a job over HTTP as the admin and returns the status code
// and the error code of a refusal.
func postJob(t *testing.T, n *node.Node, req map[string]any) (int, string) {
	t.Helper()
	b, err := json.Marshal(req)
	require.NoError(t, err)
	hr, err := http.NewRequest(http.MethodPost, n.URL()+"/v1/jobs", bytes.NewReader(b))
	require.NoError(t, err)
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+n.AdminKey())
	resp, err := http.DefaultClient.Do(hr)
	require.NoError(t, err)
	defer resp.Body.Close()
	var eb struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
		Code string `json:"code"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error.Code + eb.Code
}

// liveWorker returns a worker's view on n.
func liveWorker(t *testing.T, n *node.Node, id string) (api.WorkerView, bool) {
	var res struct {
		Workers []api.WorkerView `json:"workers"`
	}
	run(t, n, map[string]any{"operation": "active_worker_list"}, &res)
	for _, w := range res.Workers {
		if w.ID == id {
			return w, true
		}
	}
	return api.WorkerView{}, false
}

// A llama-server is registered where the user installed it, spawned on a
// GPU, polled for its state (it sends no heartbeats), reached through the
// jobs, OpenAI and Ollama APIs from another node, re-adopted after its
// node restarts, and stopped on retire. A spawn on a GPU the machine does
// not have fails with the engine's own log lines.
func TestLlamaServerEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns engine processes")
	}
	bin := buildFakeLlamaServer(t)
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) { cfg.WorkerHeartbeatTimeout = 5 * time.Second })
	n0 := c.Nodes[0]

	// Registering: only an existing regular executable, refused with 400
	// before a job exists (checked here as the engine is on this node).
	notExec := filepath.Join(t.TempDir(), "llama-server")
	require.NoError(t, os.WriteFile(notExec, []byte("x"), 0o644))
	for _, p := range []string{"", "relative/llama-server", "/nonexistent/llama-server", t.TempDir(), notExec} {
		code, ecode := postJob(t, n0, map[string]any{"operation": "worker_binary_add", "type": "llama-server", "path": p})
		require.Equal(t, http.StatusBadRequest, code, "path %q", p)
		require.Equal(t, "bad_request", ecode)
	}
	code, _ := postJob(t, n0, map[string]any{"operation": "worker_binary_add", "type": "cpu", "path": bin})
	require.Equal(t, http.StatusBadRequest, code)
	// A local user without the admin key may not register anything.
	b, _ := json.Marshal(map[string]any{"operation": "worker_binary_add", "type": "llama-server", "path": bin})
	resp, err := http.Post(n0.URL()+"/v1/jobs", "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	var e struct {
		Type, Version, Path, Source string
		Devices                     []string
	}
	run(t, n0, map[string]any{"operation": "worker_binary_add", "hive": "node1", "type": "llama-server", "path": bin, "devices": []string{"cuda"}}, &e)
	require.Equal(t, bin, e.Path)
	require.Equal(t, "registered", e.Source)
	require.Equal(t, "local", e.Version)

	// Spawn on GPU 1 of node1, through node0.
	var sr api.SpawnResult
	run(t, n0, map[string]any{"operation": "worker_spawn", "hive": "node1", "type": "llama-server", "model": "builtin:stories260k",
		"gpus": []int{1}, "ctx": 512}, &sr)
	require.Equal(t, "ready", sr.State)
	require.Equal(t, "gpu", sr.Device)
	waitSchedulable(t, c, 1)
	var logs struct {
		Processes []process.Status `json:"processes"`
	}
	run(t, n0, map[string]any{"operation": "worker_process_list", "hive": "node1"}, &logs)
	require.Len(t, logs.Processes, 1)
	log, err := os.ReadFile(logs.Processes[0].LogPath)
	require.NoError(t, err)
	require.Contains(t, string(log), `ctx=512 ngl=999`)
	require.Contains(t, string(log), `api_key=true cuda="1"`)
	require.NotContains(t, strings.Join(logs.Processes[0].Cmdline, " "), "api-key")

	// The engine's state comes from polling: ready, one slot, its context.
	require.Eventually(t, func() bool {
		w, ok := liveWorker(t, n0, sr.WorkerID)
		return ok && w.LiveState == "ready" && w.Slots == 1
	}, nodetest.WaitTimeout, 100*time.Millisecond)

	const want = "Once upon a time there was a little"
	checkServes := func(via *node.Node) {
		t.Helper()
		// Jobs API: /v1/infer translated to a streaming completion.
		res, text := infer(t, via, map[string]any{"prompt": "Once", "max_tokens": 8})
		require.Equal(t, want, text)
		require.Equal(t, sr.WorkerID, res.WorkerID)
		require.Equal(t, "length", res.StopReason)
		require.Equal(t, 8, res.TokensOut)
		_, text = infer(t, via, map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "max_tokens": 3})
		require.Equal(t, "Once upon a", text)

		// OpenAI API, streaming chat and plain completions.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		oc := openai.NewClient(option.WithBaseURL(via.URL()+"/v1/"), option.WithAPIKey("unused-on-loopback"))
		comp, err := oc.Completions.New(ctx, openai.CompletionNewParams{Model: "stories260k",
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")}, MaxTokens: openai.Int(8)})
		require.NoError(t, err)
		require.Equal(t, want, comp.Choices[0].Text)
		stream := oc.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "stories260k",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(8)})
		var sb strings.Builder
		for stream.Next() {
			for _, ch := range stream.Current().Choices {
				sb.WriteString(ch.Delta.Content)
			}
		}
		require.NoError(t, stream.Err())
		require.Equal(t, want, sb.String())

		// Ollama API.
		resp, err := http.Post(via.URL()+"/api/generate", "application/json",
			bytes.NewBufferString(`{"model":"stories260k","prompt":"Once","stream":false,"options":{"num_predict":8}}`))
		require.NoError(t, err)
		var og struct {
			Response string `json:"response"`
			Done     bool   `json:"done"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&og))
		resp.Body.Close()
		require.True(t, og.Done)
		require.Equal(t, want, og.Response)
	}
	checkServes(n0)

	// A GPU the machine lacks: the spawn fails with the engine's last lines.
	je := runErr(t, n0, map[string]any{"operation": "worker_spawn", "hive": "node1", "type": "llama-server", "model": "builtin:stories260k", "gpus": []int{9}})
	require.Contains(t, je.Message, "invalid device ordinal")
	require.Contains(t, je.Message, "CUDA_VISIBLE_DEVICES=9")

	// node1 restarts: the engine keeps running and is adopted again.
	pid := logs.Processes[0].PID
	c.Kill(1)
	c.Restart(1)
	require.Eventually(t, func() bool {
		w, ok := liveWorker(t, n0, sr.WorkerID)
		return ok && w.Schedulable && w.PID == pid
	}, nodetest.WaitTimeout, 100*time.Millisecond)
	// node0 reaches the restarted node1 once libp2p has its new address.
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := client.New(n0.URL(), n0.AdminKey()).Run(ctx, map[string]any{"operation": "infer", "model": "stories260k", "prompt": "x", "max_tokens": 1},
			func(jobs.Event) error { return nil })
		return err == nil
	}, nodetest.WaitTimeout, 200*time.Millisecond)
	checkServes(n0)

	// Retire: the engine is stopped and leaves the registry.
	// (The leader may still be replacing the entry it dropped when the old
	// node1 left: retry until the registry has it.)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.New(n0.URL(), n0.AdminKey()).Run(ctx, map[string]any{"operation": "active_worker_retire", "worker_id": sr.WorkerID},
			func(jobs.Event) error { return nil }) == nil
	}, nodetest.WaitTimeout, 200*time.Millisecond)
	require.Eventually(t, func() bool {
		_, ok := liveWorker(t, n0, sr.WorkerID)
		return !ok
	}, nodetest.WaitTimeout, 100*time.Millisecond)
	require.Eventually(t, func() bool { return c.Nodes[1].WorkerProcesses() == 0 }, nodetest.WaitTimeout, 50*time.Millisecond)
}

// The generic type runs any OpenAI-compatible server from a command
// template; here the real rbee-worker (it reads RBEE_WORKER_SECRET, which
// every spawned process gets, and checks it: the node sends it on every
// call), with no heartbeats (no --node): the node polls it and
// translates jobs to its OpenAI endpoint.
func TestGenericOpenAIEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns engine processes")
	}
	bin := buildWorker(t)
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) { cfg.WorkerHeartbeatTimeout = 5 * time.Second })
	n0 := c.Nodes[0]
	code, _ := postJob(t, n0, map[string]any{"operation": "worker_binary_add", "type": "openai", "path": bin, "template": "--model {model}"})
	require.Equal(t, http.StatusBadRequest, code, "a template without {port}")
	run(t, n0, map[string]any{"operation": "worker_binary_add", "type": "openai", "path": bin, "version": "rbee",
		"template": "--model {model} --port {port} --host {host} --id {id} --threads 1 --model-name {model_id}", "health": "/health"}, nil)
	var sr api.SpawnResult
	evs := run(t, n0, map[string]any{"operation": "worker_spawn", "type": "openai", "model": "builtin:stories260k", "device": "cpu"}, &sr)
	require.Equal(t, "ready", sr.State)
	// A template with {port} and no {socket}: every local user reaches
	// the engine, and the spawn says so.
	warned := false
	for _, ev := range evs {
		warned = warned || strings.Contains(ev.Message, "an engine of type openai cannot listen on a Unix socket")
	}
	require.True(t, warned, "no warning that every local user reaches the engine")
	waitSchedulable(t, c, 1)
	want := greedy(t, "Once upon a time", 12)
	_, text := infer(t, n0, map[string]any{"prompt": "Once upon a time", "max_tokens": 12})
	require.Equal(t, want, text)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	oc := openai.NewClient(option.WithBaseURL(n0.URL()+"/v1/"), option.WithAPIKey("unused-on-loopback"))
	comp, err := oc.Completions.New(ctx, openai.CompletionNewParams{Model: "stories260k",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")}, MaxTokens: openai.Int(12), Temperature: openai.Float(0)})
	require.NoError(t, err)
	require.Equal(t, want, comp.Choices[0].Text)
	require.NoError(t, n0.StopWorkers(ctx))
}

// Where a real llama-server is installed, it serves the bundled model.
func TestRealLlamaServer(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns engine processes")
	}
	bin, err := exec.LookPath("llama-server")
	if err != nil {
		t.Skip("no llama-server on PATH: install llama.cpp to run this test")
	}
	bin, _ = filepath.Abs(bin)
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) { cfg.WorkerHeartbeatTimeout = 5 * time.Second })
	n0 := c.Nodes[0]
	run(t, n0, map[string]any{"operation": "worker_binary_add", "type": "llama-server", "path": bin}, nil)
	var sr api.SpawnResult
	run(t, n0, map[string]any{"operation": "worker_spawn", "type": "llama-server", "model": "builtin:stories260k", "device": "cpu", "ctx": 256}, &sr)
	require.Equal(t, "ready", sr.State)
	waitSchedulable(t, c, 1)
	_, text := infer(t, n0, map[string]any{"prompt": "Once upon a time", "max_tokens": 8})
	require.NotEmpty(t, text)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, n0.StopWorkers(ctx))
}

// An engine spawn without a hive goes to a hive and GPU that fit, by the
// VRAM the hives detected (here from a recorded nvidia-smi output: GPU 0
// with 7.8 GiB free, GPU 1 with 312 MiB), and one that cannot fit is
// refused with what was missing.
func TestGPUPlacement(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns engine processes")
	}
	bin := buildFakeLlamaServer(t)
	smi := t.TempDir()
	rec, err := filepath.Abs("hw/testdata/nvidia-smi-busy.csv")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(smi, "nvidia-smi"), []byte("#!/bin/sh\nexec cat "+rec+"\n"), 0o755))
	t.Setenv("PATH", smi+string(os.PathListSeparator)+os.Getenv("PATH"))
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) { cfg.WorkerHeartbeatTimeout = 5 * time.Second })
	n0 := c.Nodes[0]
	require.Eventually(t, func() bool {
		for _, n := range c.Nodes {
			rn, ok := n0.Registry().Node(n.ID())
			if !ok || rn.Capabilities == nil || len(rn.Capabilities.GPUs) != 2 {
				return false
			}
		}
		return true
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	// Only node1 has the engine.
	run(t, n0, map[string]any{"operation": "worker_binary_add", "hive": "node1", "type": "llama-server", "path": bin}, nil)
	require.Eventually(t, func() bool { return len(n0.Registry().Binaries()) > 0 }, nodetest.WaitTimeout, 50*time.Millisecond)

	var sr api.SpawnResult
	evs := run(t, n0, map[string]any{"operation": "worker_spawn", "type": "llama-server", "model": "builtin:stories260k"}, &sr)
	require.Equal(t, "node1", sr.Node)
	require.Equal(t, "ready", sr.State)
	var placed string
	for _, ev := range evs {
		if ev.Action == "place" {
			placed = ev.Message
		}
	}
	require.Contains(t, placed, "placing it on node1, GPU 0 (7.8 GiB free)")
	var ps struct {
		Processes []process.Status `json:"processes"`
	}
	run(t, n0, map[string]any{"operation": "worker_process_list", "hive": "node1"}, &ps)
	require.Len(t, ps.Processes, 1)
	require.Equal(t, []int{0}, ps.Processes[0].GPUs)

	je := runErr(t, n0, map[string]any{"operation": "worker_spawn", "hive": "node1", "type": "llama-server", "model": "builtin:stories260k", "gpus": []int{1}})
	require.Contains(t, je.Message, "GPU 1 on node1 has 312 MiB free")
	je = runErr(t, n0, map[string]any{"operation": "worker_spawn", "type": "llama-server", "model": "builtin:stories260k", "gpus": []int{1}})
	require.Contains(t, je.Message, "spawn refused: needs 515 MiB VRAM, GPU 1 on node1 has 312 MiB free")
	require.NoError(t, c.Nodes[1].StopWorkers(context.Background()))
}

// `worker download --type llama-server` fetches the engine's archive for
// the hive's accelerator from the release location, checks it against the
// signed SHA256SUMS, unpacks it with its libraries and spawns from it; a
// tampered archive installs nothing.
func TestLlamaServerDownloadedArchive(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns engine processes")
	}
	// A release as llama.cpp packs one: the server in build/bin with a
	// shared library beside it, made with the real tar.
	stage := t.TempDir()
	binDir := filepath.Join(stage, "build", "bin")
	require.NoError(t, os.MkdirAll(binDir, 0o755))
	server, err := os.ReadFile(buildFakeLlamaServer(t))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(binDir, "llama-server"), server, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(binDir, "libggml.so.0"), []byte("lib"), 0o644))
	require.NoError(t, os.Symlink("libggml.so.0", filepath.Join(binDir, "libggml.so")))
	archive := filepath.Join(t.TempDir(), "a.tar.gz")
	out, err := exec.Command("tar", "-czf", archive, "-C", stage, "build").CombinedOutput()
	require.NoError(t, err, "%s", out)
	tgz, err := os.ReadFile(archive)
	require.NoError(t, err)

	asset := workercat.ArchiveAssets(workercat.LlamaServerType(), runtime.GOOS, runtime.GOARCH, "cpu")[0]
	root := t.TempDir()
	engines := filepath.Join(root, "llama-server")
	writeSignedRelease(t, engines, "b7000", map[string][]byte{asset: tgz}, releaseKey1)
	writeSignedRelease(t, engines, "b6999", map[string][]byte{asset: tgz}, releaseKey1)
	require.NoError(t, os.WriteFile(filepath.Join(engines, "b6999", asset), append(tgz, 0), 0o644)) // tampered after signing
	require.NoError(t, os.WriteFile(filepath.Join(engines, workercat.LatestFile), []byte("b7000\n"), 0o644))
	rel, _ := releaseServer(t, root)

	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
		cfg.WorkerReleaseURL = rel.URL
		cfg.WorkerReleaseKeys = []ed25519.PublicKey{pubOf(releaseKey1)}
	})
	n0 := c.Nodes[0]

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = client.New(n0.URL(), n0.AdminKey()).Result(ctx, map[string]any{"operation": "worker_download", "type": "llama-server", "version": "b6999", "accel": "cpu"}, nil, nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "sha256")

	var e workercat.Entry
	run(t, n0, map[string]any{"operation": "worker_download", "type": "llama-server", "accel": "cpu"}, &e)
	require.Equal(t, "b7000", e.Version)
	require.Equal(t, asset, e.Archive)
	require.Equal(t, "build/bin/llama-server", e.Exec)
	require.True(t, e.Signed)
	lib, err := os.ReadFile(filepath.Join(filepath.Dir(e.Path), "libggml.so"))
	require.NoError(t, err)
	require.Equal(t, "lib", string(lib))

	var bl struct{ Binaries []workercat.Entry }
	run(t, n0, map[string]any{"operation": "worker_binary_list"}, &bl)
	require.Len(t, bl.Binaries, 1, "the tampered release left nothing")

	var sr api.SpawnResult
	run(t, n0, map[string]any{"operation": "worker_spawn", "type": "llama-server", "version": "b7000", "model": "builtin:stories260k", "device": "cpu", "ctx": 256}, &sr)
	require.Equal(t, "ready", sr.State)
	waitSchedulable(t, c, 1)
	_, text := infer(t, n0, map[string]any{"prompt": "Once", "max_tokens": 8})
	require.Equal(t, "Once upon a time there was a little", text)
	stop, cancelStop := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelStop()
	require.NoError(t, n0.StopWorkers(stop))
}

// An Ollama engine serves only models in its own store: the spawn imports
// the hive's GGUF into it (blob push, then create) and the engine counts as
// loading until Ollama has the model; requests then reach it under the
// catalog id.
func TestOllamaEngineImportsModel(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns engine processes")
	}
	bin := goBuild(t, "./testdata/engines/llama-server", "ollama")
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) { cfg.WorkerHeartbeatTimeout = 5 * time.Second })
	n0 := c.Nodes[0]
	run(t, n0, map[string]any{"operation": "worker_binary_add", "type": "ollama", "path": bin}, nil)
	var sr api.SpawnResult
	evs := run(t, n0, map[string]any{"operation": "worker_spawn", "type": "ollama", "model": "builtin:stories260k", "device": "cpu", "ctx": 512}, &sr)
	require.Equal(t, "ready", sr.State)
	var said []string
	for _, ev := range evs {
		said = append(said, ev.Message)
	}
	require.Contains(t, strings.Join(said, "\n"), "into Ollama's store")
	// Ollama has no Unix socket: the spawn says every local user can
	// reach it.
	require.Contains(t, strings.Join(said, "\n"), "an engine of type ollama cannot listen on a Unix socket")
	waitSchedulable(t, c, 1)
	res, text := infer(t, n0, map[string]any{"prompt": "Once", "max_tokens": 8})
	require.Equal(t, "Once upon a time there was a little", text)
	require.Equal(t, sr.WorkerID, res.WorkerID)

	// The OpenAI API through the node, by the model's short name.
	oc := openai.NewClient(option.WithBaseURL(n0.URL()+"/v1"), option.WithAPIKey(n0.AdminKey()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:     "stories260k",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
		MaxTokens: openai.Int(4),
	})
	require.NoError(t, err)
	require.Equal(t, "Once upon a time", cc.Choices[0].Message.Content)

	// A second spawn of the same model finds the blob already there.
	var sr2 api.SpawnResult
	run(t, n0, map[string]any{"operation": "worker_spawn", "type": "ollama", "model": "builtin:stories260k", "device": "cpu"}, &sr2)
	require.Equal(t, "ready", sr2.State)
	stop, cancelStop := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelStop()
	require.NoError(t, n0.StopWorkers(stop))
}

// TestHungEngineRequestsGoOn: a llama-server whose health check answers
// while its completions hang (here: each token takes ten minutes). A
// request the router gives it (it is local to the node asked, the cpu
// worker of the same model is on the other node) fails over to the cpu
// worker once no first byte came within --engine-first-byte-timeout, and
// the client gets its answer; the router then passes the engine over.
// Before, the request waited for as long as its client did.
func TestHungEngineRequestsGoOn(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns engine processes")
	}
	bin := buildFakeLlamaServer(t)
	worker := buildWorker(t)
	t.Setenv("FAKE_LLAMA_TOKEN_MS", "600000") // the engines spawned inherit it
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = worker
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
		cfg.EngineFirstByteTimeout = time.Second
	})
	n0, n1 := c.Nodes[0], c.Nodes[1]
	run(t, n0, map[string]any{"operation": "worker_binary_add", "hive": "node1", "type": "llama-server", "path": bin, "devices": []string{"cuda"}}, nil)
	var engine api.SpawnResult
	run(t, n0, map[string]any{"operation": "worker_spawn", "hive": "node1", "type": "llama-server", "model": "builtin:stories260k",
		"gpus": []int{1}, "ctx": 512}, &engine)
	require.Equal(t, "ready", engine.State)
	cpu := spawn(t, n0, "node0", 1)
	waitSchedulable(t, c, 2)

	// The first request goes to the engine (local to n1) and on to the
	// cpu worker; the router then passes the engine over for a while.
	res, text := infer(t, n1, map[string]any{"prompt": "Once", "max_tokens": 3})
	require.Equal(t, cpu.WorkerID, res.WorkerID)
	require.Equal(t, 2, res.Attempts, "tried the engine first")
	require.NotEmpty(t, text)
	res, _ = infer(t, n1, map[string]any{"prompt": "Once", "max_tokens": 3})
	require.Equal(t, cpu.WorkerID, res.WorkerID)
	require.Equal(t, 1, res.Attempts, "the failed engine is passed over")
}

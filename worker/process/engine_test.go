package process

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/worker/catalog"
)

var (
	fakeLlamaOnce sync.Once
	fakeLlamaBin  string
	fakeLlamaErr  error
)

// fakeLlamaServer builds the llama-server stand-in of testdata/engines
// (llama-server's flags and /health; deterministic text).
func fakeLlamaServer(t *testing.T) string {
	t.Helper()
	fakeLlamaOnce.Do(func() {
		fakeLlamaBin = filepath.Join(filepath.Dir(workerBin), "llama-server")
		out, err := exec.Command("go", "build", "-o", fakeLlamaBin, "../../testdata/engines/llama-server").CombinedOutput()
		if err != nil {
			fakeLlamaErr = err
			t.Logf("%s", out)
		}
	})
	require.NoError(t, fakeLlamaErr)
	return fakeLlamaBin
}

// An engine is started with its own command line, GPU visibility and its
// API key in the environment (not on the command line), is ready only
// once its /health turns from 503 to 200, and a missing GPU fails the
// spawn with the engine's own last log lines.
func TestSpawnLlamaServer(t *testing.T) {
	bin := fakeLlamaServer(t)
	m := newManager(t, t.TempDir(), nil, nil)
	stopAllAtEnd(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	w, err := m.Spawn(ctx, SpawnOptions{Binary: bin, Type: catalog.LlamaServerType(), ModelPath: modelPath, ModelID: "stories260K",
		WorkerID: "gpu1", Ctx: 512, GPUs: []int{1}, GPULayers: -1, Threads: 2})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "ready before the engine finished loading")
	assert.Equal(t, []int{1}, w.GPUs)
	assert.Equal(t, "/health", w.HealthPath)
	assert.NotContains(t, w.Cmdline, "--api-key")
	log, err := os.ReadFile(w.LogPath)
	require.NoError(t, err)
	assert.Contains(t, string(log), `ctx=512 ngl=999 threads=2 np=1 alias=stories260K api_key=true cuda="1" hip="1" vk="1"`)

	// The engine answers the worker's secret only.
	secret, port, ok := m.Secret("gpu1")
	require.True(t, ok)
	call := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/slots", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusUnauthorized, call(""))
	assert.Equal(t, http.StatusOK, call(secret))

	_, err = m.Spawn(ctx, SpawnOptions{Binary: bin, Type: catalog.LlamaServerType(), ModelPath: modelPath, WorkerID: "gpu9", GPUs: []int{9}, GPULayers: -1})
	require.ErrorIs(t, err, ErrExitedEarly)
	assert.Contains(t, err.Error(), "invalid device ordinal")
	assert.Contains(t, err.Error(), "no usable GPU found for CUDA_VISIBLE_DEVICES=9")

	// An engine that ignores --host and listens on every interface would
	// serve the LAN around the node: stopped, the spawn fails saying so,
	// and the port is free again.
	_, err = m.Spawn(ctx, SpawnOptions{Binary: bin, Type: catalog.LlamaServerType(), ModelPath: modelPath, WorkerID: "open",
		GPULayers: -1, Env: []string{"FAKE_LLAMA_ANY_HOST=1"}})
	require.ErrorIs(t, err, ErrExposed)
	assert.Contains(t, err.Error(), "listens on")
	_, found := m.Info("open")
	assert.False(t, found, "the exposed engine is not kept")

	// A binary that exits at once with status 0 is no server: said so,
	// not "<nil>".
	if truePath, err := exec.LookPath("true"); err == nil {
		_, err = m.Spawn(ctx, SpawnOptions{Binary: truePath, Type: catalog.LlamaServerType(), ModelPath: modelPath, WorkerID: "true0", GPULayers: -1})
		require.ErrorIs(t, err, ErrExitedEarly)
		assert.Contains(t, err.Error(), "status 0")
		assert.NotContains(t, err.Error(), "<nil>")
		// It names the process, so the node can tell a worker its
		// registry retired from one that failed.
		var early *EarlyExitError
		require.ErrorAs(t, err, &early)
		assert.Equal(t, "true0", early.WorkerID)
		assert.Positive(t, early.PID)
	}

	// Still loading when its own ready timeout ends: killed, with its log.
	_, err = m.Spawn(ctx, SpawnOptions{Binary: bin, Type: catalog.LlamaServerType(), ModelPath: modelPath, WorkerID: "slow",
		GPULayers: -1, Env: []string{"FAKE_LLAMA_LOAD_MS=60000"}, ReadyTimeout: 500 * time.Millisecond})
	require.ErrorIs(t, err, ErrNotReady)
	assert.Contains(t, err.Error(), "loading model")
	require.Len(t, m.List(), 1, "the slow engine was killed")
}

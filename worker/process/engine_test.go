package process

import (
	"context"
	"net"
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

	"github.com/rbee-project/rbee/internal/otheruser"
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

	// The engine listens on a Unix socket in a directory only the node's
	// user may enter, not on its port, and answers the worker's secret
	// only.
	secret, port, ok := m.Secret("gpu1")
	require.True(t, ok)
	require.NotEmpty(t, w.Socket)
	assert.Equal(t, w.Socket, m.SocketFor(port))
	st, err := os.Stat(filepath.Dir(w.Socket))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	assert.Contains(t, string(log), "host="+w.Socket)
	_, err = net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	require.Error(t, err, "the engine listens on its port")
	viaSocket := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", w.Socket)
	}}}
	call := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/slots", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := viaSocket.Do(req)
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

	// The socket directory goes with its engine.
	require.NoError(t, m.Stop(ctx, w.PID, time.Second))
	_, err = os.Stat(filepath.Dir(w.Socket))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// Another local user cannot reach an engine the node runs: not on its
// port, not on its socket (TestSpawnLlamaServer checks the node can).
func TestEngineOnlyForTheNodesUser(t *testing.T) {
	bin := fakeLlamaServer(t)
	m := newManager(t, t.TempDir(), nil, nil)
	stopAllAtEnd(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, typ := range []catalog.WorkerType{catalog.LlamaServerType(), templated(t, "--host {socket} --port {port} -m {model}")} {
		t.Run(typ.Name, func(t *testing.T) {
			w, err := m.Spawn(ctx, SpawnOptions{Binary: bin, Type: typ, ModelPath: modelPath, WorkerID: "e-" + typ.Name, GPULayers: -1})
			require.NoError(t, err)
			assert.NotEqual(t, "connected", otheruser.Connect(t, "tcp", "127.0.0.1:"+strconv.Itoa(w.Port)), "another user reached the engine's port")
			require.NotEmpty(t, w.Socket)
			assert.Equal(t, "PermissionError", otheruser.Connect(t, "unix", w.Socket), "another user and the engine's socket")
		})
	}
}

// templated is the generic type as it launches a binary with template tpl.
func templated(t *testing.T, tpl string) catalog.WorkerType {
	t.Helper()
	typ, err := catalog.OpenAIType().ForEntry(catalog.Entry{Type: catalog.TypeOpenAI, Template: tpl, HealthPath: "/health"})
	require.NoError(t, err)
	return typ
}

// A node restarted while its engine runs calls it on its socket again:
// the socket is in the engine's record.
func TestAdoptedEngineKeepsItsSocket(t *testing.T) {
	bin := fakeLlamaServer(t)
	dir := t.TempDir()
	m := newManager(t, dir, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := m.Spawn(ctx, SpawnOptions{Binary: bin, Type: catalog.LlamaServerType(), ModelPath: modelPath, WorkerID: "kept", GPULayers: -1})
	require.NoError(t, err)
	require.NotEmpty(t, w.Socket)
	require.NoError(t, m.Close())

	m2 := newManager(t, dir, nil, nil)
	stopAllAtEnd(t, m2)
	got, ok := m2.Info("kept")
	require.True(t, ok)
	assert.Equal(t, w.Socket, got.Socket)
	assert.Equal(t, w.Socket, m2.SocketFor(w.Port))
	up, err := m2.probe(ctx, "http://127.0.0.1:"+strconv.Itoa(w.Port)+"/health", "")
	require.NoError(t, err)
	assert.True(t, up, "the readiness probe reaches the adopted engine on its socket")
}

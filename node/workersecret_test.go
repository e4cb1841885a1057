package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
	"github.com/rbee-project/rbee/worker"
	"github.com/rbee-project/rbee/worker/process"
)

// postHeartbeat posts a heartbeat to a node as a worker would, with auth
// as the Authorization header ("" for none), and returns the status.
func postHeartbeat(t *testing.T, n *node.Node, hb worker.Heartbeat, auth string) int {
	t.Helper()
	b, err := json.Marshal(hb)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, n.URL()+"/v1/workers/heartbeat", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// callPort sends a request straight to a worker's port.
func callPort(t *testing.T, method string, port int, path, body, auth string) int {
	t.Helper()
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A worker is known to its node only by its secret: heartbeats without it
// get 401 and enter neither the node's view nor the registry (on a node
// with --require-token too, whose API would otherwise let the heartbeat
// route through), and the worker's port answers 401 to everyone but its
// node, while inference through the nodes works (here across the libp2p
// hop, where the worker's own node adds the secret).
func TestWorkerAnswersItsNodeOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	bin := buildWorker(t)
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
		cfg.RequireToken = i == 1
	})
	fake := worker.Heartbeat{ID: "w-fake", PID: 4242, Port: 1, Model: "stories260k", Device: "cpu",
		State: worker.StateReady, Slots: 1, ContextLength: 2048, Version: worker.Version}
	bad := []string{"", "Bearer ", "Bearer " + nodetest.Token, "Bearer " + strings.Repeat("ab", 32), "Basic x", strings.Repeat("ab", 32)}
	for _, n := range c.Nodes {
		for _, auth := range bad {
			require.Equal(t, http.StatusUnauthorized, postHeartbeat(t, n, fake, auth), "%s, Authorization %q", n.Name(), auth)
		}
		require.Empty(t, n.LocalWorkerPorts(), "a refused heartbeat entered %s's view", n.Name())
	}

	// A real worker on node1 (--require-token): its heartbeats carry its
	// secret and are accepted.
	w := spawn(t, c.Nodes[0], "node1", 1)
	// The registry holds it, and nothing of the refused heartbeats (which
	// came before the heartbeats that registered the worker).
	require.Eventually(t, func() bool {
		for _, n := range c.Nodes {
			if rw, ok := n.Registry().Worker(w.WorkerID); !ok || rw.State != fsm.WorkerReady {
				return false
			}
		}
		return true
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	for _, n := range c.Nodes {
		ws := n.Registry().Workers()
		require.Len(t, ws, 1, "%s's registry: %+v", n.Name(), ws)
		require.Equal(t, w.WorkerID, ws[0].ID)
		require.Equal(t, w.Port, ws[0].Port)
	}

	// Its port answers nobody but its node.
	secret := c.WorkerSecret(w.WorkerID)
	body := `{"model":"stories260k","prompt":"Once upon a time","max_tokens":4,"temperature":0}`
	for _, auth := range []string{"", "Bearer " + nodetest.Token, "Bearer " + strings.Repeat("ab", 32), secret, "Bearer " + secret + "0"} {
		require.Equal(t, http.StatusUnauthorized, callPort(t, http.MethodPost, w.Port, "/v1/completions", body, auth), "Authorization %q", auth)
		require.Equal(t, http.StatusUnauthorized, callPort(t, http.MethodPost, w.Port, "/v1/infer", body, auth))
		require.Equal(t, http.StatusUnauthorized, callPort(t, http.MethodGet, w.Port, "/health", "", auth))
	}
	require.Equal(t, http.StatusOK, callPort(t, http.MethodGet, w.Port, "/health", "", "Bearer "+secret))

	// A heartbeat that claims the real worker's id, with another secret or
	// another port, changes nothing.
	claim := fake
	claim.ID = w.WorkerID
	require.Equal(t, http.StatusUnauthorized, postHeartbeat(t, c.Nodes[1], claim, "Bearer "+strings.Repeat("cd", 32)))
	require.Equal(t, http.StatusUnauthorized, postHeartbeat(t, c.Nodes[1], claim, "Bearer "+secret), "right secret, wrong port")
	require.Equal(t, map[string]int{w.WorkerID: w.Port}, c.Nodes[1].LocalWorkerPorts())

	// Inference through node0 reaches the worker on node1 over libp2p.
	var text string
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Nodes[0].URL()+"/v1/completions", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var out struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil || len(out.Choices) != 1 {
			return false
		}
		text = out.Choices[0].Text
		return true
	}, nodetest.WaitTimeout, 100*time.Millisecond, "inference through the node")
	require.Equal(t, greedy(t, "Once upon a time", 4), text)
	for _, n := range c.Nodes {
		rw, ok := n.Registry().Worker(w.WorkerID)
		require.True(t, ok)
		require.Equal(t, fsm.WorkerReady, rw.State)
		require.Len(t, n.Registry().Workers(), 1)
	}
}

// The node hands secrets in the variable the worker reads.
func TestSecretEnvAgrees(t *testing.T) {
	require.Equal(t, worker.SecretEnv, process.SecretEnv)
}

// A worker recorded in a process table from before secrets existed can
// neither report nor be called: the node stops it when it starts.
func TestNodeStopsWorkersWithoutSecret(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	bin := buildWorker(t)
	dataDir := filepath.Join(t.TempDir(), "old")
	pcfg := process.DefaultConfig()
	pcfg.Dir = node.ProcessesDir(dataDir)
	m, err := process.New(pcfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), nodetest.WaitTimeout)
	defer cancel()
	w, err := m.Spawn(ctx, process.SpawnOptions{Binary: bin, ModelPath: "../testdata/model/stories260K.gguf", Threads: 1})
	require.NoError(t, err)
	require.NoError(t, m.Close())
	t.Cleanup(func() { _ = syscall.Kill(w.PID, syscall.SIGKILL) })

	// Rewrite the table as an older rbee wrote it: format 1, no secrets.
	path := filepath.Join(node.ProcessesDir(dataDir), "processes.json")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b, &doc))
	doc["format"] = 1
	for _, e := range doc["processes"].([]any) {
		delete(e.(map[string]any), "secret")
	}
	b, err = json.Marshal(doc)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o600))

	cfg := node.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.Token = "upgraded", dataDir, nodetest.Token
	cfg.HTTPAddr, cfg.GossipAddr, cfg.P2PAddr, cfg.BlobAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.MDNS, cfg.Profile = false, "local"
	n, err := node.New(cfg)
	require.NoError(t, err)
	require.NoError(t, n.Start(ctx))
	t.Cleanup(func() { _ = n.Close() })
	require.Eventually(t, func() bool { return syscall.Kill(w.PID, 0) != nil }, nodetest.WaitTimeout, 20*time.Millisecond,
		"the worker without a secret still runs")
	require.Eventually(t, func() bool { return n.WorkerProcesses() == 0 }, nodetest.WaitTimeout, 20*time.Millisecond)
}

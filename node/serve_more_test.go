package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
)

// workerInFlight asks a worker process directly (with its secret, as its
// node does) how many requests it is generating.
func workerInFlight(t *testing.T, c *nodetest.Cluster, w api.SpawnResult) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/info", w.Port), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+c.WorkerSecret(w.WorkerID))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var info struct {
		InFlight int `json:"in_flight"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&info))
	return info.InFlight
}

// A client that goes away cancels the request on the worker, across the
// libp2p hop.
func TestClientGoneCancelsOnWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 2)
	w := spawnModel(t, c.Nodes[0], "node1", slowModel(t), 1)
	waitSchedulable(t, c, 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"model":"slow","prompt":"Once upon a time","max_tokens":2000,"temperature":0,"stream":true}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Nodes[0].URL()+"/v1/completions", bytes.NewBufferString(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			break // the first chunk: the worker is generating
		}
	}
	require.Equal(t, 1, workerInFlight(t, c, w))
	cancel()
	resp.Body.Close()
	require.Eventually(t, func() bool { return workerInFlight(t, c, w) == 0 }, 10*time.Second, 20*time.Millisecond,
		"the worker still generates for a client that went away")
}

// A worker whose heartbeats stop (its process is frozen) leaves the
// schedule after the heartbeat timeout, and comes back when it resumes.
func TestSilentWorkerLeavesSchedule(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	bin := buildWorker(t)
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		// Three heartbeat intervals (2 s): a loaded machine never flaps.
		cfg.WorkerHeartbeatTimeout = 6 * time.Second
	})
	w := spawn(t, c.Nodes[0], "node1", 1)
	waitSchedulable(t, c, 1)
	require.NoError(t, syscall.Kill(w.PID, syscall.SIGSTOP))
	defer syscall.Kill(w.PID, syscall.SIGCONT)
	waitSchedulable(t, c, 0)
	require.NoError(t, syscall.Kill(w.PID, syscall.SIGCONT))
	waitSchedulable(t, c, 1)
	res, _ := infer(t, c.Nodes[0], map[string]any{"prompt": "Lily"})
	require.Equal(t, w.WorkerID, res.WorkerID)
}

// Worker processes survive a node restart and are re-adopted: listed,
// stoppable and serving again.
func TestWorkersReadoptedAfterNodeRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 3)
	w := spawn(t, c.Nodes[0], "node2", 1)
	waitSchedulable(t, c, 1)
	c.Kill(2)
	require.NoError(t, syscall.Kill(w.PID, 0), "the worker process outlives its node")
	back := c.Restart(2)
	var procs struct {
		Processes []struct {
			PID      int    `json:"pid"`
			WorkerID string `json:"worker_id"`
			Adopted  bool   `json:"adopted"`
		} `json:"processes"`
	}
	run(t, back, map[string]any{"operation": "worker_process_list"}, &procs)
	require.Len(t, procs.Processes, 1)
	require.Equal(t, w.PID, procs.Processes[0].PID)
	require.True(t, procs.Processes[0].Adopted)
	waitSchedulable(t, c, 1)
	res, _ := infer(t, c.Nodes[0], map[string]any{"prompt": "Lily"})
	require.Equal(t, w.WorkerID, res.WorkerID)
	run(t, c.Nodes[0], map[string]any{"operation": "worker_process_delete", "hive": "node2", "pid": w.PID}, nil)
	require.Eventually(t, func() bool { return processGone(w.PID) }, nodetest.WaitTimeout, 50*time.Millisecond)
}

// A node restarted on another API port (another --http-addr, or rbee
// dev's new ports) keeps its workers: they read its new address in its
// node.json when their heartbeats fail, and serve again. Before, they
// beat at the old address until the orphan grace stopped them.
func TestWorkersFollowNodeToNewPort(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 3)
	w := spawn(t, c.Nodes[0], "node2", 1)
	waitSchedulable(t, c, 1)
	old := c.Nodes[2].HTTPAddr()
	c.Kill(2)
	// A silent worker leaves the schedule after 5 s (30 s by default).
	const silent = 5 * time.Second
	back := c.RestartWith(2, func(cfg *node.Config) {
		cfg.HTTPAddr, cfg.WorkerHeartbeatTimeout = "127.0.0.1:0", silent
	})
	require.NotEqual(t, old, back.HTTPAddr(), "the node is on another port")
	restarted := time.Now()
	// Past the silence bound the restarted node still hears the worker
	// (the probe at adoption counts only once).
	require.Eventually(t, func() bool {
		if time.Since(restarted) < 2*silent {
			return false
		}
		var res struct {
			Workers []api.WorkerView `json:"workers"`
		}
		run(t, back, map[string]any{"operation": "active_worker_list"}, &res)
		for _, v := range res.Workers {
			if v.ID == w.WorkerID && v.LiveState == "ready" {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 100*time.Millisecond)
	waitSchedulable(t, c, 1)
	res, _ := infer(t, c.Nodes[0], map[string]any{"prompt": "Lily"})
	require.Equal(t, w.WorkerID, res.WorkerID)
	run(t, c.Nodes[0], map[string]any{"operation": "worker_process_delete", "hive": "node2", "pid": w.PID}, nil)
	require.Eventually(t, func() bool { return processGone(w.PID) }, nodetest.WaitTimeout, 50*time.Millisecond)
}

// A model copied between two nodes of the in-process cluster: the origin is
// unreachable, so the bytes can only come from the peer.
func TestModelPeerCopy(t *testing.T) {
	c := nodetest.New(t, 2)
	path := slowModel(t)
	var e struct {
		ID     string `json:"id"`
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
	run(t, c.Nodes[0], map[string]any{"operation": "model_download", "hive": "node0", "model": path}, &e)
	require.Eventually(t, func() bool {
		for _, h := range c.Nodes[1].Registry().Models() {
			if h.SHA256 == e.SHA256 {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	var e2 struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
		Source string `json:"source"`
	}
	evs := run(t, c.Nodes[0], map[string]any{"operation": "model_download", "hive": "node1", "model": "http://127.0.0.1:9/slow.gguf#sha256=" + e.SHA256}, &e2)
	require.Equal(t, e.SHA256, e2.SHA256)
	var last jobs.Event
	for _, ev := range evs {
		if ev.Type == jobs.TypeProgress {
			last = ev
		}
	}
	require.Equal(t, e.Size, last.Total, "progress events carry the size")
	require.Equal(t, last.Total, last.Done)
	require.Positive(t, last.Rate, "progress events carry the rate")
	require.Equal(t, "peer", last.Message, "progress events say where the bytes come from")
	require.Equal(t, e.Size, e2.Size)
	require.Equal(t, "peer", e2.Source)
}

// A restarted node makes the registry's record of its files match its
// disk again (here: a holding lost while it was down).
func TestHoldingsResyncAfterRestart(t *testing.T) {
	c := nodetest.New(t, 3)
	var e struct {
		ID string `json:"id"`
	}
	run(t, c.Nodes[0], map[string]any{"operation": "model_download", "hive": "node2", "model": "builtin:stories260k"}, &e)
	holds := func() bool {
		for _, h := range c.Nodes[0].Registry().Models() {
			if h.ModelID == e.ID && h.NodeID == c.Nodes[2].ID() {
				return true
			}
		}
		return false
	}
	require.Eventually(t, holds, nodetest.WaitTimeout, 20*time.Millisecond)
	id := c.Nodes[2].ID()
	c.Kill(2)
	b, err := fsm.Encode(fsm.DeleteModelHolding{NodeID: id, ModelID: e.ID})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.Nodes[0].Apply(ctx, b)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !holds() }, nodetest.WaitTimeout, 20*time.Millisecond)
	c.Restart(2)
	require.Eventually(t, holds, nodetest.WaitTimeout, 20*time.Millisecond, "the restarted node records its model again")
}

// TestHalfClosedClientGetsAnError: a client that sends its request and
// shuts down its write side (nc -N) has its request cancelled, as net/http
// sees the end of the connection; it is answered with a 400 (code
// cancelled), never with "200 OK" and an empty body.
func TestHalfClosedClientGetsAnError(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 1)
	spawnModel(t, c.Nodes[0], "node0", slowModel(t), 1)
	waitSchedulable(t, c, 1)
	tests := []struct {
		name, path, body, want string
	}{
		{"openai", "/v1/completions", `{"model":"slow","prompt":"Once upon a time","max_tokens":2000,"temperature":0}`, `"code":"cancelled"`},
		{"openai stream", "/v1/completions", `{"model":"slow","prompt":"Once upon a time","max_tokens":2000,"temperature":0,"stream":true}`, `"code":"cancelled"`},
		{"ollama", "/api/generate", `{"model":"slow","prompt":"Once upon a time","stream":false,"options":{"num_predict":2000}}`, `{"error":"the request was cancelled`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", c.Nodes[0].HTTPAddr())
			require.NoError(t, err)
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", tc.path, len(tc.body), tc.body)
			require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", b)
			require.Contains(t, string(b), tc.want)
		})
	}
}

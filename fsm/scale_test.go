package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// scaleRegistry fills a registry with nodes nodes of workersPer workers
// each, as the leader's reconcile would write them, and returns the mean
// time of one apply.
func scaleRegistry(t testing.TB, f *FSM, nodes, workersPer int) time.Duration {
	t.Helper()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var cmds [][]byte
	for i := range nodes {
		id := fmt.Sprintf("12D3KooWnode%040d", i)
		cmds = append(cmds, enc(t, UpsertNode{Node: Node{ID: id, Name: fmt.Sprintf("node%d", i),
			HTTPAddr: "10.0.0.1:7833", GossipAddr: "10.0.0.1:7834", P2PAddrs: []string{"/ip4/10.0.0.1/tcp/7835"},
			Version: "v0.9.0", State: NodeAlive, UpdatedAt: now}}))
		for w := range workersPer {
			cmds = append(cmds, enc(t, UpsertWorker{Worker: Worker{ID: fmt.Sprintf("w-%d-%d", i, w), NodeID: id,
				Model: "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf", Device: "cpu",
				Port: 40000 + w, PID: 1000 + w, State: WorkerReady, RegisteredAt: now, UpdatedAt: now}}))
		}
	}
	start := time.Now()
	for _, c := range cmds {
		_, err := f.ApplyCommand(f.Index()+1, c)
		require.NoError(t, err)
	}
	return time.Since(start) / time.Duration(len(cmds))
}

// TestRegistryScale measures the registry at rbee's simulated scale:
// applying a registry write into a registry of nodes×5 workers, encoding
// a snapshot (what raft persists and sends a lagging follower) and
// restoring it (a restart, a follower catching up). It prints one JSON
// line per node count. Opt in:
//
//	RBEE_SCALE_SIM=1 [RBEE_SCALE_SIM_NODES=100,1000] go test -run TestRegistryScale -v ./fsm/
func TestRegistryScale(t *testing.T) {
	if testing.Short() || os.Getenv("RBEE_SCALE_SIM") == "" {
		t.Skip("set RBEE_SCALE_SIM=1")
	}
	counts := []int{100, 1000}
	if s := os.Getenv("RBEE_SCALE_SIM_NODES"); s != "" {
		counts = nil
		for _, f := range bytes.Split([]byte(s), []byte(",")) {
			c, err := strconv.Atoi(string(bytes.TrimSpace(f)))
			require.NoError(t, err)
			counts = append(counts, c)
		}
	}
	const workersPer = 5
	for _, n := range counts {
		f := New(nil)
		apply := scaleRegistry(t, f, n, workersPer)
		// One more write into the full registry: what a reconcile pays.
		start := time.Now()
		const extra = 200
		for i := range extra {
			_, err := f.ApplyCommand(f.Index()+1, enc(t, SetWorkerState{ID: fmt.Sprintf("w-%d-0", i%n), State: WorkerRegistered,
				At: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)}))
			require.NoError(t, err)
		}
		applyFull := time.Since(start) / extra

		start = time.Now()
		snap, err := f.Snapshot()
		require.NoError(t, err)
		taken := time.Since(start)
		var buf bytes.Buffer
		start = time.Now()
		require.NoError(t, snap.Persist(&bufSink{Buffer: &buf}))
		encoded := time.Since(start)
		snap.Release()
		size := buf.Len()

		g := New(nil)
		start = time.Now()
		require.NoError(t, g.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))))
		restored := time.Since(start)
		require.Len(t, g.Workers(), n*workersPer)

		b, err := json.Marshal(map[string]any{"nodes": n, "workers": n * workersPer,
			"apply_us_while_filling": apply.Microseconds(), "apply_us_full": applyFull.Microseconds(),
			"snapshot_take_us": taken.Microseconds(), "snapshot_encode_ms": encoded.Milliseconds(),
			"snapshot_bytes": size, "restore_ms": restored.Milliseconds()})
		require.NoError(t, err)
		fmt.Println(string(b))
	}
}

// bufSink is a raft.SnapshotSink into memory.
type bufSink struct{ *bytes.Buffer }

func (s *bufSink) ID() string    { return "mem" }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) Close() error  { return nil }

package node_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
)

func runErr(t *testing.T, n *node.Node, req map[string]any) *client.JobError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := client.New(n.URL(), n.AdminKey()).Run(ctx, req, func(jobs.Event) error { return nil })
	var je *client.JobError
	if err == nil {
		t.Fatalf("%v succeeded, want an error", req)
	}
	var ae *client.APIError
	if errors.As(err, &ae) {
		return &client.JobError{Code: ae.Code, Message: ae.Message}
	}
	require.ErrorAs(t, err, &je)
	return je
}

func TestBootstrapExpect(t *testing.T) {
	c := nodetest.New(t, 3, func(i int, cfg *node.Config) { cfg.BootstrapExpect = 3 })
	leader := c.WaitConverged(3)
	require.NotNil(t, leader)
	for _, n := range c.Nodes {
		require.Equal(t, leader.ID(), n.LeaderID())
	}
}

func TestHiveCatalogOperations(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 2)
	n0 := c.Nodes[0]

	// Hostile and bad requests change nothing.
	for _, tc := range []struct {
		req  map[string]any
		code string
	}{
		{map[string]any{"operation": "model_download", "model": "hf:../../../etc/passwd"}, "bad_request"},
		{map[string]any{"operation": "model_get", "id": "../../etc"}, "bad_request"},
		{map[string]any{"operation": "model_delete", "id": "/etc/passwd"}, "bad_request"},
		{map[string]any{"operation": "model_get", "id": "nope"}, "not_found"},
		{map[string]any{"operation": "worker_binary_get", "type": "../x"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "device": "tpu"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:nope"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "shards": 2, "mode": "diagonal"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "shards": 2, "hives": []string{"node1"}}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "shards": 1000}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "shards": 1}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "shards": 2, "type": "llama-server"}, "bad_request"},
		// A group's shards get ids of their own: a worker id was dropped.
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "shards": 2, "worker_id": "w-mine"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hives": []string{"node0", "node1"}, "worker_id": "w-mine"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hives": []string{"node1", "nohive"}}, "unknown_hive"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "shard": map[string]any{"group": "g-1", "mode": "pipeline", "lo": 3, "hi": 1}}, "bad_request"},
		// Only nodes set shard and group; hives names a group's hives.
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hive": "node1", "shard": map[string]any{"group": "g-1", "mode": "pipeline", "lo": 3, "hi": 5}}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hives": []string{"node0", "node1"}, "group": "g-1"}, "bad_request"},
		// In any case: Go's JSON decoding matches field names without it.
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hive": "node1", "Shard": map[string]any{"group": "g-1", "mode": "pipeline", "lo": 3, "hi": 5}}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hives": []string{"node0", "node1"}, "GROUP": "g-1"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hives": []string{"node1"}}, "bad_request"},
		// One shard per hive, whether named twice by name or by name and id.
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hives": []string{"node0", "node0"}}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hives": []string{"node1", c.Nodes[1].ID()}, "mode": "tensor"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "hive": "node0", "hives": []string{"node1", "node0"}}, "bad_request"},
		{map[string]any{"operation": "worker_process_delete", "pid": os.Getpid()}, "forbidden"},
		{map[string]any{"operation": "worker_process_delete", "pid": 1}, "forbidden"},
		{map[string]any{"operation": "model_list", "hive": "nohive"}, "unknown_hive"},
		// A field the operation does not take is refused, not ignored.
		{map[string]any{"operation": "status", "bogus": 1}, "bad_request"},
		{map[string]any{"operation": "model_list", "hiv": "node1"}, "bad_request"},
		{map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "thread": 2}, "bad_request"},
	} {
		je := runErr(t, n0, tc.req)
		require.Equal(t, tc.code, je.Code, "%v: %s", tc.req, je.Message)
	}
	// Nothing was left behind: no group entry, no worker, no process.
	for _, n := range c.Nodes {
		require.Empty(t, n.Registry().Groups(), n.Name())
		require.Empty(t, n.Registry().Workers(), n.Name())
		require.Zero(t, n.WorkerProcesses(), n.Name())
	}

	// Spawn on node1 through node0; the model and binary are recorded in
	// the registry; both refuse deletion while the worker runs.
	w := spawn(t, n0, "node1", 1)
	var ml struct {
		Models []api.ModelView `json:"models"`
	}
	require.Eventually(t, func() bool {
		run(t, n0, map[string]any{"operation": "model_list", "all": true}, &ml)
		return len(ml.Models) == 1 && len(ml.Models[0].Nodes) == 1 && ml.Models[0].Nodes[0] == "node1"
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	je := runErr(t, n0, map[string]any{"operation": "model_delete", "hive": "node1", "id": "builtin--stories260k"})
	require.Equal(t, "conflict", je.Code)
	je = runErr(t, n0, map[string]any{"operation": "worker_binary_delete", "hive": "node1", "type": "cpu"})
	require.Equal(t, "conflict", je.Code)

	var procs struct {
		Processes []struct {
			PID      int    `json:"pid"`
			WorkerID string `json:"worker_id"`
			Port     int    `json:"port"`
			RSS      uint64 `json:"rss_bytes"`
		} `json:"processes"`
	}
	run(t, n0, map[string]any{"operation": "worker_process_list", "hive": "node1"}, &procs)
	require.Len(t, procs.Processes, 1)
	require.Equal(t, w.PID, procs.Processes[0].PID)
	require.Positive(t, procs.Processes[0].RSS)

	// Stop it; then deletes succeed.
	run(t, n0, map[string]any{"operation": "worker_process_delete", "hive": "node1", "pid": w.PID}, nil)
	run(t, n0, map[string]any{"operation": "model_delete", "hive": "node1", "id": "builtin--stories260k"}, nil)
	run(t, n0, map[string]any{"operation": "worker_binary_delete", "hive": "node1", "type": "cpu"}, nil)
	require.Eventually(t, func() bool {
		run(t, n0, map[string]any{"operation": "model_list", "all": true}, &ml)
		return len(ml.Models) == 0
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	// Worker downloads and peer copies: release_test.go.
}

func TestWorkerBuildOperation(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the worker")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) { cfg.SourceDir = root })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var e struct{ Type, Version, Source string }
	err := client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Result(ctx, map[string]any{"operation": "worker_build", "type": "cpu"}, &e, nil)
	require.NoError(t, err)
	require.Equal(t, "built", e.Source)
	require.Equal(t, "cpu", e.Type)
}

func runQuiet(ctx context.Context, n *node.Node, req map[string]any) error {
	return client.New(n.URL(), n.AdminKey()).Run(ctx, req, func(jobs.Event) error { return nil })
}

// hive install picks this binary for a host of the same platform, and the
// catalogued rbee of the host's platform otherwise.
func TestInstallBinaryForOtherPlatforms(t *testing.T) {
	bin := buildRbee(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	// A signed release folder with rbee for the other platform; the node
	// trusts its key and was started with its location.
	data := []byte("#!/bin/sh\necho rbee for another platform\n")
	root := t.TempDir()
	writeSignedRelease(t, root, "v1.2.3", map[string][]byte{"rbee-linux-" + other: data}, releaseKey1)
	rel := httptest.NewServer(http.FileServer(http.Dir(root)))
	defer rel.Close()
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.RbeeBinary = bin
		cfg.WorkerReleaseURL = rel.URL
		cfg.WorkerReleaseKeys = []ed25519.PublicKey{pubOf(releaseKey1)}
	})
	n0 := c.Nodes[0]
	p, err := n0.RbeeBinaryFor(runtime.GOOS, runtime.GOARCH)
	require.NoError(t, err)
	require.Equal(t, bin, p)
	_, err = n0.RbeeBinaryFor("linux", other)
	require.ErrorContains(t, err, "rbee worker build --type rbee --os linux --arch "+other)

	var e struct{ OS, Arch, Type string }
	run(t, n0, map[string]any{"operation": "worker_download", "type": "rbee", "version": "v1.2.3", "os": "linux", "arch": other}, &e)
	require.Equal(t, other, e.Arch)
	p, err = n0.RbeeBinaryFor("linux", other)
	require.NoError(t, err)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, data, got)
	// rbee is not a worker.
	je := runErr(t, n0, map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "type": "rbee"})
	require.Equal(t, "bad_request", je.Code)
}

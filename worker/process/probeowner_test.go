package process

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/otheruser"
)

// A worker's port is on its command line, which every local user can read.
// Until the worker listens there (an engine loads its model first), another
// user could: the readiness probe sent them the worker's secret, and their
// 200 made the spawn ready, with requests routed to them. The probe now
// goes only to a server the node's user runs: the spawn is not ready and
// the other user's server gets no secret.
func TestProbeOnlyToTheNodesUser(t *testing.T) {
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	// An engine that has not listened yet: it writes its command line
	// and sleeps.
	engine := filepath.Join(dir, "slow-engine")
	require.NoError(t, os.WriteFile(engine, []byte("#!/bin/sh\necho \"$@\" > "+args+".tmp && mv "+args+".tmp "+args+"\nexec sleep 60\n"), 0o755))
	m := newManager(t, t.TempDir(), nil, nil)
	stopAllAtEnd(t, m)

	type result struct {
		w   WorkerInfo
		err error
	}
	done := make(chan result, 1)
	// An engine on a port (a socket engine's probe never goes to its port:
	// TestEngineOnlyForTheNodesUser).
	onPort := templated(t, "-m {model} --host {host} --port {port}")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		w, err := m.Spawn(ctx, SpawnOptions{Binary: engine, Type: onPort, ModelPath: modelPath, ModelID: "stories260K",
			WorkerID: "squatted", GPULayers: -1, ReadyTimeout: 3 * time.Second})
		done <- result{w, err}
	}()
	// The other user reads the port from the command line and listens
	// there first.
	var port int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(args)
		if err != nil {
			return false
		}
		mm := regexp.MustCompile(`--port (\d+)`).FindSubmatch(b)
		if mm == nil {
			return false
		}
		port, err = strconv.Atoi(string(mm[1]))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the engine's command line")
	url, next := otheruser.Recorder(t, "127.0.0.1", port)

	res := <-done
	require.ErrorIs(t, res.err, ErrNotReady, "the spawn took the other user's server for its worker")
	require.ErrorContains(t, res.err, "uid 65534", "the error names the other user's server")
	resp, err := http.Get(url + "/after")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "-", next(), "the other user's server got the worker's secret")
}

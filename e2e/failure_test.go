package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/localcluster"
)

// streamingInfer starts `rbee infer` and returns once its first output
// bytes arrived; wait returns its exit error and full stdout.
func streamingInfer(t *testing.T, bin, nodeURL string, args ...string) (wait func() (string, string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	all := append([]string{"infer", "--node", nodeURL}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	cmd.Env = append(os.Environ(), "RBEE_NODE=", "RBEE_TOKEN=")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder // read only after Wait
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	r := bufio.NewReader(stdout)
	first := make([]byte, 1)
	_, err = io.ReadFull(r, first)
	if err != nil {
		werr := cmd.Wait()
		require.NoError(t, err, "no output from rbee infer (exit: %v): %s", werr, stderr.String())
	}
	return func() (string, string, error) {
		defer cancel()
		rest, _ := io.ReadAll(r)
		err := cmd.Wait()
		return string(first) + string(rest), stderr.String(), err
	}
}

func TestServeFailuresEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	bin := filepath.Join(build(t, "rbee", "rbee-worker"), "rbee")
	dir := t.TempDir()
	// A random-weight model whose large output layer makes every token cost
	// milliseconds: streams last long enough to break things in the middle.
	slow := filepath.Join(dir, "slow.gguf")
	cli(t, bin, "model", "synth", slow, "--arch", "llama", "--dim", "384", "--layers", "1", "--heads", "4", "--kv-heads", "4",
		"--ff", "512", "--vocab", "98304", "--type", "f32", "--ctx", "2048")

	cl, leader := startCluster(t, bin, dir)
	var others []*localcluster.Node
	for _, n := range cl.Nodes {
		if n.Name != leader {
			others = append(others, n)
		}
	}
	host, entry := others[0], others[1]
	spawnSlow := func() string {
		var sp struct {
			WorkerID string `json:"worker_id"`
		}
		out := cli(t, bin, "worker", "spawn", "--model", slow, "--hive", host.Name, "-o", "json", "--node", entry.URL())
		require.NoError(t, json.Unmarshal([]byte(out), &sp), out)
		require.Eventually(t, func() bool {
			_, _, err := cliRaw(bin, "infer", "--model", "slow", "-n", "1", "--node", entry.URL(), "x")
			return err == nil
		}, 30*time.Second, 100*time.Millisecond)
		return sp.WorkerID
	}

	// Retire drains: the stream in flight finishes, then the worker leaves.
	w1 := spawnSlow()
	wait := streamingInfer(t, bin, entry.URL(), "--model", "slow", "--temperature", "0", "-n", "300", "Once upon a time")
	cli(t, bin, "worker", "retire", w1, "--yes", "--node", cl.ByName(leader).URL())
	_, errOut, err := wait()
	require.NoError(t, err, "the stream in flight must finish: %s", errOut)
	require.Eventually(t, func() bool {
		var wl struct {
			Workers []any `json:"workers"`
		}
		_ = json.Unmarshal([]byte(cli(t, bin, "worker", "list", "-o", "json", "--node", entry.URL())), &wl)
		return len(wl.Workers) == 0
	}, 60*time.Second, 200*time.Millisecond, "the retired worker leaves the registry")

	// kill -9 the leader while a stream runs on a surviving worker: it finishes.
	spawnSlow()
	wait = streamingInfer(t, bin, entry.URL(), "--model", "slow", "--temperature", "0", "-n", "300", "Once upon a time")
	require.NoError(t, cl.Kill(cl.ByName(leader)))
	_, errOut, err = wait()
	require.NoError(t, err, "the stream must survive the leader's death: %s", errOut)

	// kill -9 the node hosting a busy worker: the client gets an error, not a hang.
	wait = streamingInfer(t, bin, entry.URL(), "--model", "slow", "--temperature", "0", "-n", "2000", "Once upon a time")
	require.NoError(t, cl.Kill(host))
	localcluster.StopWorkers(host.DataDir)
	done := make(chan error, 1)
	var stderr string
	go func() {
		var err error
		_, stderr, err = wait()
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		require.Contains(t, stderr, "error:")
	case <-time.After(60 * time.Second):
		t.Fatal("rbee infer hangs after the worker's node died")
	}
}

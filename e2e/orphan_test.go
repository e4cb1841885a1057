package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	gproc "github.com/shirou/gopsutil/v4/process"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/localcluster"
)

// alive reports whether pid runs (a zombie left by a dead parent does not).
func alive(pid int) bool {
	p, err := gproc.NewProcess(int32(pid))
	if err != nil {
		return false
	}
	st, err := p.Status()
	return err == nil && !slices.Contains(st, gproc.Zombie)
}

type spawned struct {
	WorkerID string `json:"worker_id"`
	PID      int    `json:"pid"`
	Port     int    `json:"port"`
}

func spawnTiny(t *testing.T, bin string, n *localcluster.Node) spawned {
	t.Helper()
	var sp spawned
	out := cli(t, bin, "worker", "spawn", "--model", "builtin:stories260k", "--hive", n.Name, "-o", "json", "--node", n.URL())
	require.NoError(t, json.Unmarshal([]byte(out), &sp), out)
	require.Positive(t, sp.PID)
	return sp
}

// inferWorks waits until an inference through n answers.
func inferWorks(t *testing.T, bin string, n *localcluster.Node) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, _, err := cliRaw(bin, "infer", "--model", "stories260k", "--temperature", "0", "-n", "4", "--node", n.URL(), "Once upon a time")
		return err == nil
	}, 60*time.Second, 200*time.Millisecond, "inference through %s", n.Name)
}

func listsWorker(t *testing.T, bin string, n *localcluster.Node, id string) bool {
	t.Helper()
	var wl struct {
		Workers []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"workers"`
	}
	out, _, err := cliRaw(bin, "worker", "list", "-o", "json", "--node", n.URL())
	if err != nil || json.Unmarshal([]byte(out), &wl) != nil {
		return false
	}
	for _, w := range wl.Workers {
		if w.ID == id {
			return true
		}
	}
	return false
}

func fileContains(t *testing.T, path, s string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// TestWorkerWithoutItsNodeEndToEnd runs real `rbee node` and `rbee-worker`
// processes: a worker answers its node only; it survives a kill -9 of its
// node that is restarted within the orphan grace (re-adopted, it serves
// again); a graceful stop says that the worker keeps running; a fresh node
// on the same address (another data dir) refuses the worker, which then
// exits after the grace; and a worker whose node is killed for good exits
// after the grace.
func TestWorkerWithoutItsNodeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	// The grace must cover a node restart (a couple of seconds on a loaded
	// machine) plus the worker's 2 s heartbeat interval; every wait for an
	// exit below lasts about this long.
	const grace = 8 * time.Second
	// exitSlack: an orphan exits within a heartbeat interval and a beat
	// timeout (2 s each) after the grace, plus process teardown and a
	// loaded machine.
	const exitSlack = 15 * time.Second
	bin := filepath.Join(build(t, "rbee", "rbee-worker"), "rbee")
	dir := t.TempDir()
	cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: dir, Nodes: 1, Profile: "local",
		ExtraArgs: []string{"--worker-orphan-grace", grace.String()}})
	require.NoError(t, err)
	t.Cleanup(func() {
		cl.Close()
		if t.Failed() {
			for _, n := range cl.Nodes {
				b, _ := os.ReadFile(n.LogPath)
				t.Logf("==== %s log (tail)\n%s", n.Name, tail(string(b), 4000))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	require.NoError(t, cl.Start(ctx))
	_, err = cl.WaitConverged(ctx, 1)
	require.NoError(t, err)
	a := cl.Nodes[0]

	// The worker's port answers only its node; inference through the node works.
	w1 := spawnTiny(t, bin, a)
	inferWorks(t, bin, a)
	for _, path := range []string{"/v1/completions", "/v1/infer"} {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d%s", w1.Port, path), "application/json",
			strings.NewReader(`{"model":"stories260k","prompt":"Once upon a time","max_tokens":4}`))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, path)
	}
	w1Log := filepath.Join(node.ProcessesDir(a.DataDir), "logs", w1.WorkerID+".log")

	// kill -9 of the node, restarted within the grace: the same worker
	// process is adopted again and serves.
	require.NoError(t, cl.Kill(a))
	require.True(t, alive(w1.PID))
	require.NoError(t, cl.StartNode(ctx, a, nil))
	require.NoError(t, localcluster.WaitHealthy(ctx, a))
	inferWorks(t, bin, a)
	require.True(t, listsWorker(t, bin, a, w1.WorkerID))
	require.True(t, alive(w1.PID), "the worker was adopted, not replaced")

	// A graceful stop says what happens to the worker.
	require.NoError(t, cl.Stop(a))
	stopped := time.Now()
	require.True(t, fileContains(t, a.LogPath, "1 worker process(es) keep running"), "no notice about the kept worker")
	require.True(t, alive(w1.PID))

	// A fresh node (another data dir, a cluster of its own with the same
	// token) on the same address refuses the worker; it never enters that
	// node's registry, and the worker exits after its grace.
	b := &localcluster.Node{Name: "stranger", DataDir: filepath.Join(dir, "stranger"), HTTPAddr: a.HTTPAddr,
		GossipAddr: a.GossipAddr, P2PAddr: a.P2PAddr, LogPath: filepath.Join(dir, "stranger.log")}
	cl.Nodes = append(cl.Nodes, b) // stopped, and its workers too, at cleanup
	require.NoError(t, cl.StartNode(ctx, b, nil))
	require.NoError(t, localcluster.WaitHealthy(ctx, b))
	listed := false
	require.Eventually(t, func() bool {
		listed = listed || listsWorker(t, bin, b, w1.WorkerID)
		return !alive(w1.PID)
	}, grace+exitSlack, 200*time.Millisecond, "the refused worker did not exit")
	require.False(t, listed, "the stranger's registry listed the old worker")
	require.GreaterOrEqual(t, time.Since(stopped), grace-3*time.Second, "the worker exited before its grace")
	require.True(t, fileContains(t, b.LogPath, "refused a heartbeat"))
	require.True(t, fileContains(t, w1Log, "node refused the worker's secret"))
	require.True(t, fileContains(t, w1Log, "node is gone"))

	// A worker whose node is killed for good exits after the grace.
	w2 := spawnTiny(t, bin, b)
	inferWorks(t, bin, b)
	require.NoError(t, cl.Kill(b))
	killed := time.Now()
	require.True(t, alive(w2.PID))
	require.Eventually(t, func() bool { return !alive(w2.PID) }, grace+exitSlack, 200*time.Millisecond,
		"the worker of a killed node did not exit")
	require.GreaterOrEqual(t, time.Since(killed), grace-3*time.Second, "the worker exited before its grace")
	require.True(t, fileContains(t, filepath.Join(node.ProcessesDir(b.DataDir), "logs", w2.WorkerID+".log"), "node is gone"))
}

// TestEngineWithoutItsNodeEndToEnd: an external engine (here the
// llama-server stand-in) runs under the node's engine guard; when its node
// is killed for good, guard and engine exit after the orphan grace.
func TestEngineWithoutItsNodeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	const grace = 4 * time.Second
	const exitSlack = 15 * time.Second
	dir := build(t, "rbee")
	bin := filepath.Join(dir, "rbee")
	engine := filepath.Join(dir, "llama-server")
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", engine, "./testdata/engines/llama-server")
	cmd.Dir = filepath.Dir(filepath.Dir(file))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)

	cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: t.TempDir(), Nodes: 1, Profile: "local",
		ExtraArgs: []string{"--worker-orphan-grace", grace.String()}})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, cl.Start(ctx))
	a := cl.Nodes[0]
	cli(t, bin, "worker", "binary", "add", "--type", "llama-server", "--path", engine, "--node", a.URL())
	var sp spawned
	out2 := cli(t, bin, "worker", "spawn", "--type", "llama-server", "--model", "builtin:stories260k", "--device", "cpu", "-o", "json", "--node", a.URL())
	require.NoError(t, json.Unmarshal([]byte(out2), &sp), out2)
	guard, err := gproc.NewProcess(int32(sp.PID))
	require.NoError(t, err)
	args, err := guard.CmdlineSlice()
	require.NoError(t, err)
	require.Contains(t, args, "engine-guard", "engines run under the guard")
	var child int32
	require.Eventually(t, func() bool {
		kids, err := guard.Children()
		if err != nil || len(kids) == 0 {
			return false
		}
		child = kids[0].Pid
		return true
	}, 10*time.Second, 50*time.Millisecond)
	inferWorks(t, bin, a)

	require.NoError(t, cl.Kill(a))
	killed := time.Now()
	require.True(t, alive(sp.PID) && alive(int(child)), "the engine outlives its node for the grace")
	require.Eventually(t, func() bool { return !alive(sp.PID) && !alive(int(child)) }, grace+exitSlack, 200*time.Millisecond,
		"the engine of a killed node did not exit")
	require.GreaterOrEqual(t, time.Since(killed), grace-2*time.Second, "the engine exited before its grace")
}

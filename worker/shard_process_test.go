package worker

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/worker/shard"
)

// workerProc is a worker process started by a test.
type workerProc struct {
	cmd    *exec.Cmd
	exited chan error
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startWorkerProc(t *testing.T, bin string, env []string, args ...string) *workerProc {
	t.Helper()
	p := &workerProc{cmd: exec.Command(bin, args...), exited: make(chan error, 1), stderr: &lockedBuffer{}}
	p.cmd.Env = append(append(os.Environ(), SecretEnv+"="+testSecret), env...)
	p.cmd.Stderr = p.stderr
	require.NoError(t, p.cmd.Start())
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%v stderr:\n%s", args, p.stderr.String())
		}
	})
	return p
}

// waitReady waits for the heartbeat of worker id in state ready and
// returns its base URL.
func waitReady(t *testing.T, node *nodeRecorder, id string) string {
	t.Helper()
	var port int
	require.Eventually(t, func() bool {
		for _, hb := range node.all() {
			if hb.ID == id && hb.State == StateReady {
				port = hb.Port
				return true
			}
		}
		return false
	}, reqTimeout, 10*time.Millisecond)
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// TestPipelineGroupProcesses: a model served by a group of three worker
// processes (a head of layers [0, 2) and stages [2, 4) and [4, 5), joined
// by the stage protocol over upgraded HTTP connections) answers greedy
// requests with exactly the ids of an unsharded worker; a stage refuses
// generation and strangers; when a stage process dies, the generation in
// flight ends with an error event that names the stage.
func TestPipelineGroupProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "rbee-worker")
	build := exec.Command("go", "build", "-o", bin, "../cmd/rbee-worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	model, err := filepath.Abs(testModelPath)
	require.NoError(t, err)

	node := newNodeRecorder(t)
	common := []string{"--model", model, "--port", "0", "--node", node.srv.URL, "--heartbeat-interval", "50ms", "--threads", "1", "--ctx", "256"}
	startWorkerProc(t, bin, nil, append(common, "--id", "w-stage1", "--shard-layers", "2:4")...)
	stage2 := startWorkerProc(t, bin, nil, append(common, "--id", "w-stage2", "--shard-layers", "4:5")...)
	url1, url2 := waitReady(t, node, "w-stage1"), waitReady(t, node, "w-stage2")
	startWorkerProc(t, bin, []string{StageSecretsEnv + "=" + testSecret + "," + testSecret},
		append(common, "--id", "w-head", "--slots", "2", "--shard-layers", "0:2", "--stage", url1, "--stage", url2)...)
	head := waitReady(t, node, "w-head")

	var in Info
	require.Equal(t, http.StatusOK, getJSON(t, head+"/v1/info", &in))
	require.Equal(t, []int{0, 2}, []int{in.ShardLo, in.ShardHi})
	require.Equal(t, http.StatusOK, getJSON(t, url1+"/v1/info", &in))
	require.Equal(t, []int{2, 4}, []int{in.ShardLo, in.ShardHi})

	// The reference: one unsharded worker in this process.
	cfg := testConfig(t)
	cfg.Load = LoadEngine
	cfg.ContextSize = 256
	_, whole := startServer(t, cfg)
	prompts := []string{"Once upon a time", "Lily and Tom went to the park. They"}
	var wg sync.WaitGroup
	got := make([]inferStream, len(prompts))
	for i, p := range prompts {
		want := infer(t, whole, map[string]any{"prompt": p, "max_tokens": 40, "temperature": 0})
		require.NotEmpty(t, want.ids())
		// Both at once on the head: they share its steps (two slots).
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = infer(t, head, map[string]any{"prompt": p, "max_tokens": 40, "temperature": 0})
		}()
		wg.Wait()
		require.Equal(t, want.ids(), got[i].ids())
		require.Equal(t, want.text(), got[i].text())
	}

	// A stage serves only its stage protocol, and only to its secret.
	resp := post(t, testCtx(t), url1+"/v1/infer", map[string]any{"prompt": "x", "max_tokens": 2})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	_, err = DialStage(url1, "not-the-secret-0123456789")(testCtx(t))
	require.ErrorIs(t, err, shard.ErrProtocol)
	require.ErrorContains(t, err, "401")

	// A stage dies mid-generation: the stream ends with an error event.
	resp = post(t, testCtx(t), head+"/v1/infer", map[string]any{"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	rd := newSSEReader(resp.Body)
	var evs []sseEvent
	for ev, ok := rd.next(); ok; ev, ok = rd.next() {
		evs = append(evs, ev)
		if ev.Event == "token" && len(evs) == 4 {
			require.NoError(t, stage2.cmd.Process.Kill())
		}
	}
	st := parseInfer(t, evs)
	require.Nil(t, st.End)
	require.NotNil(t, st.Err)
	require.True(t, strings.Contains(st.Err.Message, "stage 2"), st.Err.Message)
	require.Less(t, len(st.ids()), 200)

	// The head stays up and says so on the next request (stage 2 does
	// not answer the reconnection).
	again := infer(t, head, map[string]any{"prompt": "Once", "max_tokens": 5, "temperature": 0})
	require.NotNil(t, again.Err)
	require.Contains(t, again.Err.Message, "stage 2")
	var hi Info
	require.Equal(t, http.StatusOK, getJSON(t, head+"/v1/info", &hi))
	require.Equal(t, StateReady, hi.State)
}

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

// TestShardGroupProcesses: a model served by a group of worker processes
// — a pipeline (a head of layers [0, 2), stages [2, 4) and [4, 5)) and a
// tensor group (a head of KV heads [0, 2), a member of [2, 4)), joined by
// the stage protocol over upgraded HTTP connections — answers greedy
// requests, two at a time, with exactly the ids and text of an unsharded
// worker; the other shards refuse generation and strangers; when the last
// shard's process dies, the generation in flight ends with an error event
// that names it, and so does the next request.
func TestShardGroupProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := buildWorker(t)
	model, err := filepath.Abs(testModelPath)
	require.NoError(t, err)

	// The reference: one unsharded worker in this process.
	cfg := testConfig(t)
	cfg.Load = LoadEngine
	cfg.ContextSize = 256
	_, whole := startServer(t, cfg)
	prompts := []string{"Once upon a time", "Lily and Tom went to the park. They"}
	var want []inferStream
	for _, p := range prompts {
		w := infer(t, whole, map[string]any{"prompt": p, "max_tokens": 40, "temperature": 0})
		require.NotEmpty(t, w.ids())
		want = append(want, w)
	}

	cases := []struct {
		mode   string
		flag   string
		shards []string // the other shards' ranges, in order
		head   string
		last   string // how errors name the last shard
	}{
		{ShardPipeline, "--shard-layers", []string{"2:4", "4:5"}, "0:2", "stage 2"},
		{ShardTensor, "--shard-kv-heads", []string{"2:4"}, "0:2", "member 1"},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			node := newNodeRecorder(t)
			common := []string{"--model", model, "--port", "0", "--node", node.srv.URL, "--heartbeat-interval", "50ms", "--threads", "1", "--ctx", "256"}
			var procs []*workerProc
			var urls, secrets []string
			headArgs := append(common, "--id", "w-head", "--slots", "2", c.flag, c.head)
			for i, r := range c.shards {
				id := fmt.Sprintf("w-shard%d", i+1)
				procs = append(procs, startWorkerProc(t, bin, nil, append(common, "--id", id, c.flag, r)...))
				u := waitReady(t, node, id)
				urls = append(urls, u)
				secrets = append(secrets, testSecret)
				headArgs = append(headArgs, "--stage", u)
			}
			startWorkerProc(t, bin, []string{StageSecretsEnv + "=" + strings.Join(secrets, ",")}, headArgs...)
			head := waitReady(t, node, "w-head")

			var in Info
			require.Equal(t, http.StatusOK, getJSON(t, head+"/v1/info", &in))
			require.Equal(t, c.mode+" "+c.head, fmt.Sprintf("%s %d:%d", in.ShardMode, in.ShardLo, in.ShardHi))
			require.Equal(t, http.StatusOK, getJSON(t, urls[0]+"/v1/info", &in))
			require.Equal(t, c.mode+" "+c.shards[0], fmt.Sprintf("%s %d:%d", in.ShardMode, in.ShardLo, in.ShardHi))

			// Both prompts at once on the head: they share its steps.
			got := make([]inferStream, len(prompts))
			var wg sync.WaitGroup
			for i, p := range prompts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got[i] = infer(t, head, map[string]any{"prompt": p, "max_tokens": 40, "temperature": 0})
				}()
			}
			wg.Wait()
			for i := range prompts {
				require.Equal(t, want[i].ids(), got[i].ids())
				require.Equal(t, want[i].text(), got[i].text())
			}

			// Another shard serves only its stage protocol, and only to
			// its secret.
			resp := post(t, testCtx(t), urls[0]+"/v1/infer", map[string]any{"prompt": "x", "max_tokens": 2})
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			_, err = DialStage(urls[0], "not-the-secret-0123456789")(testCtx(t))
			require.ErrorIs(t, err, shard.ErrProtocol)
			require.ErrorContains(t, err, "401")

			// The last shard dies mid-generation: the stream ends with an
			// error event.
			resp = post(t, testCtx(t), head+"/v1/infer", map[string]any{"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0})
			require.Equal(t, http.StatusOK, resp.StatusCode)
			rd := newSSEReader(resp.Body)
			var evs []sseEvent
			for ev, ok := rd.next(); ok; ev, ok = rd.next() {
				evs = append(evs, ev)
				if ev.Event == "token" && len(evs) == 4 {
					require.NoError(t, procs[len(procs)-1].cmd.Process.Kill())
				}
			}
			st := parseInfer(t, evs)
			require.Nil(t, st.End)
			require.NotNil(t, st.Err)
			require.Contains(t, st.Err.Message, c.last)
			require.Less(t, len(st.ids()), 200)

			// The head stays up and says so on the next request (the
			// shard does not answer the reconnection).
			again := infer(t, head, map[string]any{"prompt": "Once", "max_tokens": 5, "temperature": 0})
			require.NotNil(t, again.Err)
			require.Contains(t, again.Err.Message, c.last)
			var hi Info
			require.Equal(t, http.StatusOK, getJSON(t, head+"/v1/info", &hi))
			require.Equal(t, StateReady, hi.State)
		})
	}
}

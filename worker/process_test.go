package worker

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProcess builds cmd/rbee-worker, runs it as a real process against a
// node recorder, serves a greedy generation, and drains on SIGTERM.
func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := buildWorker(t)

	// Bad flags exit 2 without starting; so does a missing secret.
	bad := exec.Command(bin, "--model", testModelPath)
	bad.Env = append(os.Environ(), SecretEnv+"="+testSecret)
	require.Error(t, bad.Run())
	require.Equal(t, 2, bad.ProcessState.ExitCode())
	model, err := filepath.Abs(testModelPath)
	require.NoError(t, err)
	var noSecretErr bytes.Buffer
	noSecret := exec.Command(bin, "--model", model, "--id", "w-nosecret")
	noSecret.Env = append(os.Environ(), SecretEnv+"=")
	noSecret.Stderr = &noSecretErr
	require.Error(t, noSecret.Run())
	require.Equal(t, 2, noSecret.ProcessState.ExitCode())
	require.Contains(t, noSecretErr.String(), SecretEnv)

	node := newNodeRecorder(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--model", model, "--port", "0", "--id", "w-proc", "--node", node.srv.URL,
		"--heartbeat-interval", "50ms", "--threads", "1", "--slots", "2", "--log-level", "debug")
	cmd.Env = append(os.Environ(), SecretEnv+"="+testSecret)
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("worker stderr:\n%s", stderr.String())
		}
	})

	// The heartbeat tells the node (and us) the port.
	var ready Heartbeat
	require.Eventually(t, func() bool {
		for _, hb := range node.all() {
			if hb.State == StateReady {
				ready = hb
				return true
			}
		}
		return false
	}, reqTimeout, 10*time.Millisecond)
	require.Equal(t, "w-proc", ready.ID)
	require.Equal(t, cmd.Process.Pid, ready.PID)
	require.Equal(t, model, ready.ModelPath)
	require.Equal(t, 2, ready.Slots)
	require.Positive(t, ready.Port)
	base := fmt.Sprintf("http://127.0.0.1:%d", ready.Port)

	var in Info
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/info", &in))
	require.Equal(t, "w-proc", in.ID)
	require.Equal(t, 2048, in.ContextLength)

	ref := loadUpstreamRef(t)
	for _, c := range ref.Cases {
		if c.ExpectedFirstGeneratedText == "" {
			continue
		}
		got := infer(t, base, map[string]any{"prompt": c.Prompt, "max_tokens": len(c.DerivedFirstGeneratedIDs), "temperature": 0})
		require.Equal(t, c.ExpectedFirstGeneratedText, got.text())
	}

	// SIGTERM drains: a request already streaming runs to its end, then the
	// process exits 0; the last beats are draining, stopped.
	resp := post(t, testCtx(t), base+"/v1/infer", map[string]any{"prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	rd := newSSEReader(resp.Body)
	first, ok := rd.next()
	require.True(t, ok)
	require.Equal(t, "started", first.Event)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	var rest []sseEvent
	for ev, ok := rd.next(); ok; ev, ok = rd.next() {
		rest = append(rest, ev)
	}
	st := parseInfer(t, append([]sseEvent{first}, rest...))
	require.NotNil(t, st.End, "events %v", st.Order[max(0, len(st.Order)-3):])
	require.Contains(t, []string{StopLength, StopEOS}, st.End.StopReason)
	require.Equal(t, st.End.TokensOut, len(st.ids()))
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status")
		exited <- nil // for the cleanup
	case <-time.After(reqTimeout):
		t.Fatal("worker did not exit after SIGTERM")
	}
	// In the order the worker sent them (Seq): its loop's last beat, cut
	// short by the stop, may reach the node after the final one.
	beats := node.all()
	sort.SliceStable(beats, func(i, j int) bool { return beats[i].Seq < beats[j].Seq })
	require.GreaterOrEqual(t, len(beats), 2)
	require.Equal(t, StateStopped, beats[len(beats)-1].State)
	require.Equal(t, StateDraining, beats[len(beats)-2].State)
	for i, hb := range beats {
		require.Positive(t, hb.Seq, "every beat is numbered")
		if i > 0 {
			require.Greater(t, hb.Seq, beats[i-1].Seq, "no number twice")
		}
	}

	// A worker whose node is gone (nobody listens there) exits 3 after its
	// orphan grace and says why.
	gone := newNodeRecorder(t)
	gone.srv.Close()
	var orphanErr bytes.Buffer
	orphan := exec.Command(bin, "--model", model, "--port", "0", "--id", "w-orphan", "--node", gone.srv.URL,
		"--heartbeat-interval", "50ms", "--orphan-grace", "500ms", "--threads", "1")
	orphan.Env = append(os.Environ(), SecretEnv+"="+testSecret)
	orphan.Stderr = &orphanErr
	started := time.Now()
	require.NoError(t, orphan.Start())
	orphanExit := make(chan error, 1)
	go func() { orphanExit <- orphan.Wait() }()
	select {
	case <-orphanExit:
	case <-time.After(reqTimeout):
		_ = orphan.Process.Kill()
		<-orphanExit
		t.Fatalf("orphaned worker did not exit; stderr:\n%s", orphanErr.String())
	}
	require.Equal(t, 3, orphan.ProcessState.ExitCode(), orphanErr.String())
	require.GreaterOrEqual(t, time.Since(started), 500*time.Millisecond)
	require.Contains(t, orphanErr.String(), "node is gone")
}

package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-project/rbee/worker/catalog"
	gproc "github.com/shirou/gopsutil/v4/process"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const modelPath = "../../testdata/model/stories260K.gguf"

// workerBin is the real rbee-worker, built once per test run by TestMain.
var workerBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "rbee-process-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		workerBin = filepath.Join(dir, "rbee-worker")
		out, err := exec.Command("go", "build", "-o", workerBin, "../../cmd/rbee-worker").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building rbee-worker: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

// exits records OnExit calls.
type exits struct {
	mu   sync.Mutex
	got  map[int]error
	info map[int]WorkerInfo
}

func newExits() *exits { return &exits{got: map[int]error{}, info: map[int]WorkerInfo{}} }

func (e *exits) on(info WorkerInfo, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got[info.PID] = err
	e.info[info.PID] = info
}

func (e *exits) has(pid int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.info[pid]
	return ok
}

func (e *exits) get(pid int) (WorkerInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.info[pid], e.got[pid]
}

func newManager(t *testing.T, dir string, ex *exits, mod func(*Config)) *Manager {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.PollInterval = 50 * time.Millisecond
	if ex != nil {
		cfg.OnExit = ex.on
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// stopAllAtEnd ends whatever a test left running (never anything but
// processes the manager started).
func stopAllAtEnd(t *testing.T, m *Manager) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = m.StopAll(ctx, 2*time.Second)
	})
}

// health probes a worker's /health with the secret the manager holds for
// it, as the node does.
func health(m *Manager, w WorkerInfo) (int, error) {
	secret, _, _ := m.Secret(w.WorkerID)
	return healthWith(w.Port, secret)
}

func healthWith(port int, secret string) (int, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/health", nil)
	if err != nil {
		return 0, err
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func portClosed(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func running(pid int) bool {
	p, err := gproc.NewProcess(int32(pid))
	if err != nil {
		return false
	}
	st, err := p.Status()
	return err == nil && len(st) > 0 && st[0] != gproc.Zombie
}

func stateEntries(t *testing.T, dir string) []stateEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	var doc stateDoc
	require.NoError(t, json.Unmarshal(b, &doc))
	return doc.Processes
}

func spawn(t *testing.T, m *Manager, id string) WorkerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := m.Spawn(ctx, SpawnOptions{Binary: workerBin, ModelPath: modelPath, ModelID: "stories260K", WorkerID: id, Threads: 1})
	require.NoError(t, err)
	return w
}

func TestSpawnHealthListStop(t *testing.T) {
	dir := t.TempDir()
	ex := newExits()
	m := newManager(t, dir, ex, nil)
	stopAllAtEnd(t, m)

	w := spawn(t, m, "")
	assert.Regexp(t, `^w-[0-9a-f]{8}$`, w.WorkerID)
	assert.Positive(t, w.PID)
	assert.Positive(t, w.Port)
	assert.Equal(t, catalog.TypeCPU, w.Type)
	assert.Equal(t, "stories260K", w.ModelID)
	assert.Equal(t, workerBin, w.Binary)
	assert.Positive(t, w.CreateTime)
	assert.Equal(t, filepath.Join(dir, "logs", w.WorkerID+".log"), w.LogPath)
	assert.Contains(t, w.Cmdline, "--port")
	assert.Contains(t, w.Cmdline, strconv.Itoa(w.Port))
	code, err := health(m, w)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)

	// The worker's secret: 256 random bits, in its environment and the
	// state file (0600), never on its command line; without it the
	// worker's port answers 401.
	secret, port, ok := m.Secret(w.WorkerID)
	require.True(t, ok)
	assert.Equal(t, w.Port, port)
	assert.Regexp(t, `^[0-9a-f]{64}$`, secret)
	for _, arg := range w.Cmdline {
		assert.NotContains(t, arg, secret)
	}
	if runtime.GOOS == "linux" {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", w.PID))
		require.NoError(t, err)
		assert.Contains(t, string(env), "\x00"+SecretEnv+"="+secret+"\x00")
	}
	code, err = healthWith(w.Port, "")
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, code)
	code, err = healthWith(w.Port, newSecret())
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, code)
	_, _, ok = m.Secret("w-unknown")
	assert.False(t, ok)
	fi, err := os.Stat(filepath.Join(dir, stateFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	secrets, err := ReadSecrets(dir)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{w.WorkerID: secret}, secrets)

	list := m.List()
	require.Len(t, list, 1)
	assert.Equal(t, w.PID, list[0].PID)
	assert.Positive(t, list[0].RSS, "RSS of a live Go process")
	assert.GreaterOrEqual(t, list[0].CPUPercent, 0.0)
	assert.GreaterOrEqual(t, list[0].Uptime, time.Duration(0))
	got, err := m.Get(w.PID)
	require.NoError(t, err)
	assert.Equal(t, w.WorkerID, got.WorkerID)
	byID, err := m.ByWorkerID(w.WorkerID)
	require.NoError(t, err)
	assert.Equal(t, w.PID, byID.PID)
	state := stateEntries(t, dir)
	require.Len(t, state, 1)
	assert.Equal(t, w.PID, state[0].PID)
	assert.Equal(t, w.Cmdline, state[0].Cmdline)
	assert.True(t, m.BinaryInUse(workerBin))
	tail, err := m.LogTail(w.PID, 0)
	require.NoError(t, err)
	assert.Contains(t, tail, "worker listening")
	short, err := m.LogTail(w.PID, 10)
	require.NoError(t, err)
	assert.Len(t, short, 10)
	_, err = m.LogTail(os.Getpid(), 0)
	require.ErrorIs(t, err, ErrNotOurs)

	// The same worker id twice is refused.
	_, err = m.Spawn(context.Background(), SpawnOptions{Binary: workerBin, ModelPath: modelPath, WorkerID: w.WorkerID})
	require.ErrorIs(t, err, ErrIDInUse)

	require.NoError(t, m.Stop(context.Background(), w.PID, 10*time.Second))
	assert.False(t, running(w.PID))
	assert.True(t, portClosed(w.Port))
	_, err = m.Get(w.PID)
	require.ErrorIs(t, err, ErrNotOurs)
	assert.Empty(t, m.List())
	assert.Empty(t, stateEntries(t, dir))
	assert.False(t, m.BinaryInUse(workerBin))
	require.Eventually(t, func() bool { return ex.has(w.PID) }, 10*time.Second, 10*time.Millisecond)
	info, exitErr := ex.get(w.PID)
	assert.True(t, info.Stopped)
	assert.NoError(t, exitErr, "SIGTERM drains and exits 0")
	logData, err := os.ReadFile(w.LogPath)
	require.NoError(t, err)
	assert.Contains(t, string(logData), "ready")
	assert.Contains(t, string(logData), "draining")

	require.ErrorIs(t, m.Stop(context.Background(), w.PID, time.Second), ErrNotOurs)
}

func TestExitNoticedWhenKilledFromOutside(t *testing.T) {
	ex := newExits()
	m := newManager(t, t.TempDir(), ex, nil)
	stopAllAtEnd(t, m)
	w := spawn(t, m, "victim")
	require.NoError(t, syscall.Kill(w.PID, syscall.SIGKILL))
	require.Eventually(t, func() bool { return ex.has(w.PID) }, 10*time.Second, 5*time.Millisecond)
	info, err := ex.get(w.PID)
	assert.False(t, info.Stopped)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Empty(t, m.List())
}

func TestSpawnFailures(t *testing.T) {
	dir := t.TempDir()
	ex := newExits()
	m := newManager(t, dir, ex, func(c *Config) { c.ReadyTimeout = 500 * time.Millisecond })
	stopAllAtEnd(t, m)
	ctx := context.Background()

	notModel := filepath.Join(t.TempDir(), "notamodel.gguf")
	require.NoError(t, os.WriteFile(notModel, []byte("this is not GGUF"), 0o644))
	nonExec := filepath.Join(t.TempDir(), "worker")
	require.NoError(t, os.WriteFile(nonExec, []byte("#!/bin/sh\n"), 0o644))
	tests := []struct {
		name string
		opts SpawnOptions
		want error
		text string
	}{
		{"no binary", SpawnOptions{ModelPath: modelPath}, ErrBadOptions, "Binary"},
		{"missing binary", SpawnOptions{Binary: "/nonexistent/rbee-worker", ModelPath: modelPath}, ErrBadOptions, "no such file"},
		{"not executable", SpawnOptions{Binary: nonExec, ModelPath: modelPath}, ErrBadOptions, "not an executable"},
		{"directory as binary", SpawnOptions{Binary: t.TempDir(), ModelPath: modelPath}, ErrBadOptions, "not an executable"},
		{"no model", SpawnOptions{Binary: workerBin}, ErrBadOptions, "ModelPath"},
		{"missing model", SpawnOptions{Binary: workerBin, ModelPath: "/nonexistent.gguf"}, ErrBadOptions, "model"},
		{"hostile worker id", SpawnOptions{Binary: workerBin, ModelPath: modelPath, WorkerID: "../../etc/x"}, ErrBadOptions, "worker id"},
		{"negative threads", SpawnOptions{Binary: workerBin, ModelPath: modelPath, Threads: -1}, ErrBadOptions, "negative"},
		// The worker starts, fails to load the model and exits 1: the error
		// carries its own log line.
		{"model load fails", SpawnOptions{Binary: workerBin, ModelPath: notModel, WorkerID: "bad-model"}, ErrExitedEarly, "model load failed"},
		// The worker rejects an unknown flag and exits 2.
		{"bad flag", SpawnOptions{Binary: workerBin, ModelPath: modelPath, ExtraArgs: []string{"--bogus"}}, ErrExitedEarly, "bogus"},
		{"bad KV cache type", SpawnOptions{Binary: workerBin, ModelPath: modelPath, ExtraArgs: []string{"--kv-cache", "q4_0"}}, ErrExitedEarly, "want f16 or f32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Spawn(ctx, tt.opts)
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.text)
			assert.Empty(t, m.List())
			assert.Empty(t, stateEntries(t, dir))
		})
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := m.Spawn(cctx, SpawnOptions{Binary: workerBin, ModelPath: modelPath})
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, m.List())

	// A process that never answers its health check is killed, with its
	// whole group, after ReadyTimeout or when ctx ends.
	script := filepath.Join(t.TempDir(), "silent.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho starting but never serving\nsleep 60 &\nwait\n"), 0o755))
	for _, withCtx := range []bool{false, true} {
		sctx, cancel := context.WithCancel(ctx)
		if withCtx {
			time.AfterFunc(100*time.Millisecond, cancel)
		}
		_, err := m.Spawn(sctx, SpawnOptions{Binary: script, ModelPath: modelPath, WorkerID: "silent"})
		cancel()
		require.ErrorIs(t, err, ErrNotReady)
		assert.Contains(t, err.Error(), "starting but never serving")
		if withCtx {
			require.ErrorIs(t, err, context.Canceled)
		}
		assert.Empty(t, m.List())
	}
	// None of the failed spawns is reported as an exit of a ready worker.
	ex.mu.Lock()
	assert.Empty(t, ex.got)
	ex.mu.Unlock()
}

func TestStopRefusesForeignProcess(t *testing.T) {
	m := newManager(t, t.TempDir(), nil, nil)
	stopAllAtEnd(t, m)
	sleep := exec.Command("sleep", "60")
	require.NoError(t, sleep.Start())
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })

	for _, pid := range []int{sleep.Process.Pid, os.Getpid(), 1, 0, -1} {
		err := m.Stop(context.Background(), pid, 100*time.Millisecond)
		require.ErrorIs(t, err, ErrNotOurs, "pid %d", pid)
		_, err = m.Get(pid)
		require.ErrorIs(t, err, ErrNotOurs)
	}
	assert.True(t, running(sleep.Process.Pid), "Stop must never signal a process it did not start")
	require.NoError(t, sleep.Process.Signal(syscall.Signal(0)))
}

func TestStopEscalatesToKillingTheGroup(t *testing.T) {
	m := newManager(t, t.TempDir(), nil, nil)
	stopAllAtEnd(t, m)
	// A launcher that ignores SIGTERM and runs the real worker as its child
	// in the same process group: only SIGKILL to the group ends both.
	script := filepath.Join(t.TempDir(), "stubborn.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\ntrap '' TERM\n\"$WORKER\" \"$@\" &\nwait\nwait\n"), 0o755))
	w, err := m.Spawn(context.Background(), SpawnOptions{Binary: script, ModelPath: modelPath, WorkerID: "stubborn",
		Env: []string{"WORKER=" + workerBin}})
	require.NoError(t, err)
	code, err := health(m, w)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)

	require.NoError(t, m.Stop(context.Background(), w.PID, 300*time.Millisecond))
	assert.False(t, running(w.PID))
	// The worker in the launcher's group was killed too (its socket closes
	// as the kernel tears it down, a moment after the leader is reaped).
	require.Eventually(t, func() bool { return portClosed(w.Port) }, 10*time.Second, 10*time.Millisecond)
	assert.Empty(t, m.List())
}

// A worker that leaves a child in its process group (a launcher whose
// server runs in the background, an engine that forks) takes it along when
// it exits: a stopped worker must not leave its port, or its GPU memory,
// held by a process nobody supervises.
func TestExitEndsWhatTheWorkerLeftInItsGroup(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a child's group is ended as it is reaped on Linux only")
	}
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, m *Manager, w WorkerInfo)
	}{
		{"stop", func(t *testing.T, m *Manager, w WorkerInfo) {
			require.NoError(t, m.Stop(context.Background(), w.PID, 5*time.Second))
		}},
		{"exits by itself", func(t *testing.T, _ *Manager, w WorkerInfo) {
			require.NoError(t, syscall.Kill(w.PID, syscall.SIGTERM))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, t.TempDir(), nil, nil)
			stopAllAtEnd(t, m)
			// The launcher ends on SIGTERM; its background worker does not
			// get it.
			script := filepath.Join(t.TempDir(), "launcher.sh")
			require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n\"$WORKER\" \"$@\" &\nwait\n"), 0o755))
			w, err := m.Spawn(context.Background(), SpawnOptions{Binary: script, ModelPath: modelPath, WorkerID: "launched",
				Env: []string{"WORKER=" + workerBin}})
			require.NoError(t, err)
			t.Cleanup(func() { _ = syscall.Kill(-w.PID, syscall.SIGKILL) })
			code, err := health(m, w)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code)

			tc.end(t, m, w)
			require.Eventually(t, func() bool { return !running(w.PID) && len(m.List()) == 0 }, 10*time.Second, 10*time.Millisecond)
			require.Eventually(t, func() bool { return portClosed(w.Port) }, 10*time.Second, 10*time.Millisecond,
				"the worker the launcher left behind still holds the port")
		})
	}
}

// The same for a worker adopted from an earlier run of the node (not this
// process's child): stopping it ends what it left in its group.
func TestStopAdoptedEndsWhatItLeftInItsGroup(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("process groups as on Linux")
	}
	dir := t.TempDir()
	script := filepath.Join(t.TempDir(), "launcher.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n\"$WORKER\" \"$@\" &\nwait\n"), 0o755))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	secret := newSecret()
	args := catalog.CPUType().Args(catalog.Launch{ModelPath: modelPath, WorkerID: "adopted", Port: port, Host: "127.0.0.1", Threads: 1})
	// Started the way an earlier node left it: in a session of its own,
	// and not a child of this process (sh exits at once; setsid execs in
	// place, as sh's background job leads no group).
	sh := exec.Command("sh", append([]string{"-c", `setsid "$0" "$@" >/dev/null 2>&1 & echo $!`, script}, args...)...)
	sh.Env = append(os.Environ(), "WORKER="+workerBin, SecretEnv+"="+secret)
	out, err := sh.Output()
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
	require.Eventually(t, func() bool { code, err := healthWith(port, secret); return err == nil && code == http.StatusOK },
		30*time.Second, 20*time.Millisecond)

	info := WorkerInfo{PID: pid, WorkerID: "adopted", Type: catalog.TypeCPU, ModelPath: modelPath, Port: port, Binary: script}
	gp, err := gproc.NewProcess(int32(pid))
	require.NoError(t, err)
	info.Cmdline, err = gp.CmdlineSlice()
	require.NoError(t, err)
	info.CreateTime, err = gp.CreateTime()
	require.NoError(t, err)
	info.StartTicks, _ = startTicks(pid)
	b, err := json.Marshal(stateDoc{Format: stateVer, Processes: []stateEntry{{WorkerInfo: info, Secret: secret}}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, stateFile), b, 0o600))

	m := newManager(t, dir, nil, nil)
	stopAllAtEnd(t, m)
	require.Len(t, m.List(), 1)
	require.NoError(t, m.Stop(context.Background(), pid, 5*time.Second))
	require.Eventually(t, func() bool { return portClosed(port) }, 10*time.Second, 10*time.Millisecond,
		"the worker the adopted launcher left behind still holds the port")
}

// The log tail a failed spawn's error carries (printed by the CLI) is
// text without the worker's terminal control sequences.
func TestSpawnErrorLogTailIsPlainText(t *testing.T) {
	m := newManager(t, t.TempDir(), nil, nil)
	script := filepath.Join(t.TempDir(), "loud.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\nprintf 'before \\033]0;TITLE\\007\\033[31mred\\033[0m\\r\\033[2K\\tafter \\302\\233 \\377\\nline two\\n' >&2\nexit 1\n"), 0o755))
	_, err := m.Spawn(context.Background(), SpawnOptions{Binary: script, ModelPath: modelPath, WorkerID: "loud"})
	require.ErrorIs(t, err, ErrExitedEarly)
	msg := err.Error()
	assert.Contains(t, msg, "before ]0;TITLE[31mred[0m[2K\tafter  \nline two\n")
	for _, c := range []string{"\x1b", "\a", "\r", "\u009b", "\xff"} {
		assert.NotContains(t, msg, c)
	}
}

// A worker runs in a session of its own: no controlling terminal (the one
// the node may run in) to write into or be stopped by, and its own process
// group.
func TestWorkerHasItsOwnSession(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads the session from /proc")
	}
	m := newManager(t, t.TempDir(), nil, nil)
	stopAllAtEnd(t, m)
	w := spawn(t, m, "session")
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(w.PID) + "/stat")
	require.NoError(t, err)
	// pid (comm) state ppid pgrp session tty_nr ...
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	require.GreaterOrEqual(t, len(fields), 5)
	assert.Equal(t, strconv.Itoa(w.PID), fields[2], "process group")
	assert.Equal(t, strconv.Itoa(w.PID), fields[3], "session")
	assert.Equal(t, "0", fields[4], "controlling terminal")
}

func TestReadoptAfterRestart(t *testing.T) {
	dir := t.TempDir()
	a := newManager(t, dir, nil, nil)
	w := spawn(t, a, "survivor")
	w2 := spawn(t, a, "second")
	secrets := make([]string, 2)
	for i, id := range []string{w.WorkerID, w2.WorkerID} {
		var ok bool
		secrets[i], _, ok = a.Secret(id)
		require.True(t, ok)
	}
	require.NoError(t, a.Close())

	// Stale entries: a pid that has exited, and a live process (our own
	// sleep) recorded under another command line and under another start
	// time. Neither may be adopted nor signalled.
	done := exec.Command("true")
	require.NoError(t, done.Run())
	sleeps := make([]*exec.Cmd, 3)
	cts := make([]int64, 3)
	for i := range sleeps {
		sleeps[i] = exec.Command("sleep", "60")
		require.NoError(t, sleeps[i].Start())
		s := sleeps[i]
		t.Cleanup(func() { _ = s.Process.Kill(); _ = s.Wait() })
		sp, err := gproc.NewProcess(int32(s.Process.Pid))
		require.NoError(t, err)
		cts[i], err = sp.CreateTime()
		require.NoError(t, err)
	}
	state := stateEntries(t, dir)
	require.Len(t, state, 2)
	for i := range state {
		if runtime.GOOS == "linux" {
			require.NotZero(t, state[i].StartTicks)
		}
		if state[i].PID == w2.PID && state[i].StartTicks != 0 {
			// The wall clock was stepped since: the create time moved, the
			// start ticks did not, and the worker is still recognised.
			state[i].CreateTime -= 5000
		}
	}
	sec := newSecret()
	state = append(state,
		stateEntry{WorkerInfo{PID: done.Process.Pid, WorkerID: "exited", Cmdline: []string{"true"}, CreateTime: 1}, sec},
		stateEntry{WorkerInfo{PID: sleeps[0].Process.Pid, WorkerID: "other-cmdline", Cmdline: []string{"sleep", "61"}, CreateTime: cts[0]}, sec},
		// An hour off: the create time gopsutil reports may move by a
		// second between calls (boot time estimated from the uptime), so
		// an offset of one second sometimes matched.
		stateEntry{WorkerInfo{PID: sleeps[1].Process.Pid, WorkerID: "other-start", Cmdline: []string{"sleep", "60"}, CreateTime: cts[1] - 3_600_000}, sec},
		stateEntry{WorkerInfo{PID: sleeps[2].Process.Pid, WorkerID: "other-ticks", Cmdline: []string{"sleep", "60"}, CreateTime: cts[2], StartTicks: 1}, sec},
		stateEntry{WorkerInfo{PID: -5, WorkerID: "../bad", Cmdline: []string{"x"}, CreateTime: 1}, sec},
	)
	b, err := json.Marshal(stateDoc{Format: stateVer, Processes: state})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, stateFile), b, 0o644))

	ex := newExits()
	m := newManager(t, dir, ex, nil)
	stopAllAtEnd(t, m)
	list := m.List()
	require.Len(t, list, 2)
	assert.ElementsMatch(t, []int{w.PID, w2.PID}, []int{list[0].PID, list[1].PID})
	for _, s := range list {
		assert.True(t, s.Adopted)
		assert.Positive(t, s.RSS)
	}
	assert.Len(t, stateEntries(t, dir), 2, "stale entries are dropped from the file")
	for _, s := range sleeps {
		assert.True(t, running(s.Process.Pid))
	}
	code, err := health(m, w)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	// The secrets come back with the workers: the node that spawned them
	// still talks to them.
	for i, id := range []string{w.WorkerID, w2.WorkerID} {
		got, port, ok := m.Secret(id)
		require.True(t, ok, id)
		assert.Equal(t, secrets[i], got)
		assert.Equal(t, []int{w.Port, w2.Port}[i], port)
	}
	assert.True(t, m.BinaryInUse(workerBin))
	for _, s := range sleeps {
		require.ErrorIs(t, m.Stop(context.Background(), s.Process.Pid, time.Second), ErrNotOurs)
	}

	// Stop works on an adopted worker (SIGTERM; it drains and exits).
	require.NoError(t, m.Stop(context.Background(), w.PID, 10*time.Second))
	assert.True(t, portClosed(w.Port))
	require.Eventually(t, func() bool { return ex.has(w.PID) }, 5*time.Second, 10*time.Millisecond)
	info, exitErr := ex.get(w.PID)
	assert.True(t, info.Stopped)
	require.ErrorIs(t, exitErr, ErrExitUnknown)

	// An adopted worker killed from outside is noticed by polling.
	require.NoError(t, syscall.Kill(w2.PID, syscall.SIGKILL))
	require.Eventually(t, func() bool { return ex.has(w2.PID) }, 10*time.Second, 10*time.Millisecond)
	assert.Empty(t, m.List())
	assert.Empty(t, stateEntries(t, dir))
	for _, s := range sleeps {
		assert.True(t, running(s.Process.Pid), "the foreign sleeps survived everything")
	}
}

func TestCorruptStateStartsEmpty(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, stateFile), []byte("{garbage"), 0o644))
	m := newManager(t, dir, nil, nil)
	assert.Empty(t, m.List())
	assert.FileExists(t, filepath.Join(dir, stateFile+".bad"))
	require.NoError(t, m.Close())
	require.NoError(t, m.Close())
	_, err := m.Spawn(context.Background(), SpawnOptions{Binary: workerBin, ModelPath: modelPath})
	require.ErrorIs(t, err, ErrClosed)
	_, err = New(Config{})
	require.ErrorIs(t, err, ErrBadOptions)
	_, err = New(Config{Dir: t.TempDir(), Host: "localhost:1"})
	require.ErrorIs(t, err, ErrBadOptions)
}

// TestCatalogDeleteRefusedWhileRunning wires the two packages the way the
// node does: the catalog asks the manager whether a binary is in use.
func TestCatalogDeleteRefusedWhileRunning(t *testing.T) {
	m := newManager(t, t.TempDir(), nil, nil)
	stopAllAtEnd(t, m)
	ccfg := catalog.DefaultConfig()
	ccfg.Dir = t.TempDir()
	ccfg.InUse = func(e catalog.Entry) bool { return m.BinaryInUse(e.Path) }
	cat, err := catalog.New(ccfg)
	require.NoError(t, err)
	e, err := cat.Add(context.Background(), catalog.AddOptions{Type: catalog.TypeCPU, Version: "test"}, workerBin)
	require.NoError(t, err)

	w, err := m.Spawn(context.Background(), SpawnOptions{Binary: e.Path, ModelPath: modelPath})
	require.NoError(t, err)
	_, err = cat.Delete(catalog.TypeCPU, "")
	require.ErrorIs(t, err, catalog.ErrInUse)
	assert.FileExists(t, e.Path)

	require.NoError(t, m.Stop(context.Background(), w.PID, 10*time.Second))
	gone, err := cat.Delete(catalog.TypeCPU, "")
	require.NoError(t, err)
	assert.Len(t, gone, 1)
	assert.NoFileExists(t, e.Path)
}

func TestConcurrentSpawns(t *testing.T) {
	m := newManager(t, t.TempDir(), nil, nil)
	stopAllAtEnd(t, m)
	const n = 3
	var wg sync.WaitGroup
	infos := make([]WorkerInfo, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			infos[i], errs[i] = m.Spawn(context.Background(), SpawnOptions{Binary: workerBin, ModelPath: modelPath, Threads: 1})
		}()
	}
	wg.Wait()
	ports := map[int]bool{}
	for i := range n {
		require.NoError(t, errs[i])
		ports[infos[i].Port] = true
	}
	assert.Len(t, ports, n)
	assert.Len(t, m.List(), n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, m.StopAll(ctx, 5*time.Second))
	assert.Empty(t, m.List())
	for _, w := range infos {
		assert.False(t, running(w.PID))
	}
}

func TestStartTicksIdentifiesProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("start ticks are read from /proc")
	}
	a, ok := startTicks(os.Getpid())
	require.True(t, ok)
	b, ok := startTicks(os.Getpid())
	require.True(t, ok)
	assert.Equal(t, a, b)
	s := exec.Command("sleep", "60")
	require.NoError(t, s.Start())
	defer func() { _ = s.Process.Kill(); _ = s.Wait() }()
	c, ok := startTicks(s.Process.Pid)
	require.True(t, ok)
	assert.GreaterOrEqual(t, c, a, "a later process started later")
	_, ok = startTicks(-1)
	assert.False(t, ok)
}

// TestReadoptVersion1State: a state file from before secrets existed still
// gives the node its workers to stop, but no secret to talk to them with.
func TestReadoptVersion1State(t *testing.T) {
	dir := t.TempDir()
	a := newManager(t, dir, nil, nil)
	w := spawn(t, a, "old")
	require.NoError(t, a.Close())
	var v1 struct {
		Format    int          `json:"format"`
		Processes []WorkerInfo `json:"processes"`
	}
	for _, e := range stateEntries(t, dir) {
		v1.Processes = append(v1.Processes, e.WorkerInfo)
	}
	v1.Format = stateVer1
	b, err := json.Marshal(v1)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, stateFile), b, 0o644))

	m := newManager(t, dir, nil, nil)
	stopAllAtEnd(t, m)
	list := m.List()
	require.Len(t, list, 1)
	assert.True(t, list[0].Adopted)
	_, _, ok := m.Secret(w.WorkerID)
	assert.False(t, ok, "no secret for a worker of a version 1 file")
	fi, err := os.Stat(filepath.Join(dir, stateFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "rewritten readable by the owner alone")
	require.NoError(t, m.Stop(context.Background(), w.PID, 10*time.Second))
	assert.False(t, running(w.PID))
}

// TestPruneLogs: past keepLogs, the oldest logs of workers that do not
// run go; a running worker's log and the one starting stay.
func TestPruneLogs(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir, nil, nil)
	logs := filepath.Join(dir, logsSubdir)
	require.NoError(t, os.MkdirAll(logs, 0o755))
	base := time.Now().Add(-time.Hour)
	for i := range keepLogs + 20 {
		p := filepath.Join(logs, fmt.Sprintf("w-%03d.log", i))
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o644))
		require.NoError(t, os.Chtimes(p, base.Add(time.Duration(i)*time.Second), base.Add(time.Duration(i)*time.Second)))
	}
	m.mu.Lock()
	// The oldest, but running. As a child of the manager (a cmd): the
	// poll of adopted workers would find no pid 999999 and drop it (it
	// did, on a slow CI machine, and closed its nil done channel).
	m.procs[999999] = &proc{info: WorkerInfo{WorkerID: "w-000", PID: 999999}, cmd: &exec.Cmd{}, done: make(chan struct{})}
	m.mu.Unlock()
	defer func() { m.mu.Lock(); delete(m.procs, 999999); m.mu.Unlock() }()
	m.pruneLogs("w-001")
	ents, err := os.ReadDir(logs)
	require.NoError(t, err)
	require.Len(t, ents, keepLogs+2, "the newest keepLogs, the running one's, the starting one's")
	for _, keep := range []string{"w-000.log", "w-001.log", fmt.Sprintf("w-%03d.log", keepLogs+19)} {
		require.FileExists(t, filepath.Join(logs, keep))
	}
	require.NoFileExists(t, filepath.Join(logs, "w-002.log"))
}

// A worker that starts but cannot be written to processes.json (a full
// disk, a directory in its place) is stopped and the spawn fails: a node
// restart would neither adopt nor stop it, and it ran on unrecorded.
func TestSpawnUnrecordedWorkerIsStopped(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir, nil, func(c *Config) { c.ReadyTimeout = 500 * time.Millisecond })
	stopAllAtEnd(t, m)
	require.NoError(t, os.Mkdir(filepath.Join(dir, stateFile), 0o700))
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := filepath.Join(t.TempDir(), "worker.sh")
	// No exec: the pid stays the script's, so a pid the kernel handed to
	// another process meanwhile (a busy CI machine) is told apart by its
	// command line.
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho $$ > "+pidFile+"\nsleep 60\n"), 0o755))

	_, err := m.Spawn(context.Background(), SpawnOptions{Binary: script, ModelPath: modelPath, WorkerID: "unrecorded"})
	require.ErrorIs(t, err, ErrNotRecorded)
	assert.Contains(t, err.Error(), stateFile)
	assert.Empty(t, m.List())
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return true // killed before it wrote its pid
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return false
		}
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return !running(pid) || !strings.Contains(string(cl), script)
	}, 10*time.Second, 20*time.Millisecond, "the unrecorded worker still runs")
	// The id is free again once the disk is.
	require.NoError(t, os.Remove(filepath.Join(dir, stateFile)))
	w := spawn(t, m, "unrecorded")
	assert.Len(t, stateEntries(t, dir), 1)
	assert.Equal(t, "unrecorded", w.WorkerID)
}

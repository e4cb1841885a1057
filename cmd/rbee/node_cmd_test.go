package main

import (
	"context"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
)

func TestKeptWorkersNotice(t *testing.T) {
	for _, tc := range []struct {
		count int
		grace time.Duration
		want  []string
	}{
		{0, 5 * time.Minute, []string{"no worker processes"}},
		{2, 5 * time.Minute, []string{"2 worker process(es) keep running", "within 5m0s", "exits 5m0s after", "--stop-workers", "rbee leave"}},
		{1, 0, []string{"1 worker process(es) keep running", "without end", "--stop-workers"}},
	} {
		got := keptWorkersNotice(tc.count, tc.grace)
		for _, w := range tc.want {
			require.Contains(t, got, w, "keptWorkersNotice(%d, %v)", tc.count, tc.grace)
		}
	}
}

// TestNodeFlagValidation: `rbee node` refuses flag values it would
// silently replace by defaults or read as something else, naming the flag
// and what it takes, before anything starts (the data dir stays absent);
// valid values pass.
func TestNodeFlagValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-conns-per-client", "-1"}, "--max-conns-per-client -1: want 1 or more"},
		{[]string{"--max-conns-per-client", "0"}, "--max-conns-per-client 0: want 1 or more"},
		{[]string{"--http-body-timeout", "-5s"}, "--http-body-timeout -5s: want a positive duration"},
		{[]string{"--http-idle-timeout", "0s"}, "--http-idle-timeout 0s: want a positive duration"},
		{[]string{"--http-stall-timeout", "0s"}, "--http-stall-timeout 0s: want a positive duration"},
		{[]string{"--worker-timeout", "-1s"}, "--worker-timeout -1s: want a positive duration"},
		{[]string{"--engine-first-byte-timeout", "0s"}, "--engine-first-byte-timeout 0s: want a positive duration"},
		{[]string{"--max-download-size", "-1"}, "--max-download-size -1: want 1 or more bytes"},
		{[]string{"--worker-orphan-grace", "-1m"}, "--worker-orphan-grace -1m0s: want 0 (never) or a positive duration"},
		{[]string{"--reap-grace", "-1s"}, "--reap-grace -1s: want 0 (the default) or a positive duration"},
		{[]string{"--reconcile-interval", "-1s"}, "--reconcile-interval -1s"},
		{[]string{"--worker-nice", "20"}, "--worker-nice 20: want 0 (the node's priority) to 19"},
		{[]string{"--bootstrap-expect", "-1"}, "--bootstrap-expect -1"},
		{[]string{"--name", "a b/c"}, `--name "a b/c": want a name`},
		{[]string{"--name", "a/b"}, `--name "a/b"`},
		{[]string{"--name", "a b"}, `--name "a b"`},
		{[]string{"--name", "-box"}, `--name "-box"`},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		root := newRootCmd()
		root.SetArgs(append([]string{"node", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
			"--p2p-addr", "/ip4/127.0.0.1/tcp/0", "--blob-addr", "127.0.0.1:0", "--no-mdns"}, tc.args...))
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		require.ErrorContains(t, root.Execute(), tc.want, "%v", tc.args)
		require.NoDirExists(t, dir, "%v: nothing started", tc.args)
	}

	// Valid values, the defaults among them, pass the check (the node is
	// not started: only its flags are parsed and checked).
	for _, args := range [][]string{
		nil,
		{"--name", "gpu-box"},
		{"--name", "box_1.lan"},
		{"--name", "10.0.0.5"},
		{"--name", "lab+one"}, // SSH aliases become hive names
		{"--name", "it's"},
		{"--name", ""}, // the hostname, as before
		{"--worker-orphan-grace", "0"},
		{"--reap-grace", "0", "--reconcile-interval", "0"},
		{"--max-conns-per-client", "1", "--max-download-size", "1", "--http-body-timeout", "1s", "--worker-nice", "0"},
		{"--no-prefix-affinity"},
	} {
		var nodeCmd *cobra.Command
		walk(newRootCmd(), func(c *cobra.Command) {
			if c.CommandPath() == "rbee node" {
				nodeCmd = c
			}
		})
		require.NoError(t, nodeCmd.ParseFlags(args), "%v", args)
		require.NoError(t, nodeCmd.PreRunE(nodeCmd, nil), "%v", args)
	}
}

// TestNodeTokenIsNoCredential: an API key or admin key given where the
// cluster token goes (--token, RBEE_CLUSTER_TOKEN, --token-file) is
// refused with what the cluster token is, instead of becoming the secret
// of a new cluster; RBEE_TOKEN holding an API key, as a client machine
// exports it, is the CLI's credential and is left alone: the node creates
// its own cluster secret.
func TestNodeTokenIsNoCredential(t *testing.T) {
	const apiKey = "rbk_cuv7vpumz7ux6z3skt6y3bdh3rwhmcbkd24jshvmkjh3mxnue7wa"
	const adminKey = "rbeeadm_7togo6vh2bzg56ej5425ej6ajyrjqfizb43kooknw3rrpxyc4tta"
	nodeArgs := func(dir string) []string {
		return []string{"node", "--data-dir", dir, "--name", "n1", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
			"--p2p-addr", "127.0.0.1:0", "--blob-addr", "off", "--no-mdns"}
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(apiKey+"\n"), 0o600))
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"--token", nil, []string{"--token", apiKey}},
		{"--token admin key", nil, []string{"--token", adminKey}},
		{"RBEE_CLUSTER_TOKEN", map[string]string{node.ClusterTokenEnv: apiKey}, nil},
		{"--token-file", nil, []string{"--token-file", tokenFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			dir := filepath.Join(t.TempDir(), "data")
			root := newRootCmd()
			root.SetArgs(append(nodeArgs(dir), tc.args...))
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.Execute()
			require.ErrorIs(t, err, node.ErrTokenIsCredential)
			require.ErrorContains(t, err, "rbee token")
			require.NoFileExists(t, filepath.Join(dir, node.SecretFile))
		})
	}

	t.Setenv("RBEE_TOKEN", apiKey)
	dir := filepath.Join(t.TempDir(), "data")
	root := newRootCmd()
	root.SetArgs(nodeArgs(dir))
	root.SetErr(io.Discard)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() { done <- execute(ctx, root, io.Discard, io.Discard) }()
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, "node.json"))
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "the node starts")
	b, err := os.ReadFile(filepath.Join(dir, node.SecretFile))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), "rbee_"), "the node makes its own cluster secret")
	cancel()
	select {
	case code := <-done:
		require.Zero(t, code)
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not stop")
	}
}

// TestNewSecretNotInLogs: the first node of a new cluster, its output not
// a terminal (a service's journal, a log file), does not print the join
// command, which holds the cluster secret: it names `rbee token`.
func TestNewSecretNotInLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	dir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd()
	root.SetArgs([]string{"node", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--p2p-addr", "127.0.0.1:0", "--blob-addr", "off", "--no-mdns", "--stop-workers"})
	out := &syncBuffer{}
	root.SetOut(out)
	root.SetErr(io.Discard)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	stopped := false
	var runErr error
	require.Eventually(t, func() bool {
		select {
		case runErr = <-done:
			stopped = true
			return true
		default:
		}
		return strings.Contains(out.String(), "rbee token")
	}, 60*time.Second, 50*time.Millisecond)
	require.False(t, stopped, "the node stopped: %v\n%s", runErr, out.String())
	secret, err := os.ReadFile(filepath.Join(dir, "cluster.secret"))
	require.NoError(t, err)
	require.NotContains(t, out.String(), strings.TrimSpace(string(secret)))
	require.NotContains(t, out.String(), "RBEE_CLUSTER_TOKEN=")
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not stop")
	}
}

// TestDataDirWithoutHome: with no $HOME (a service started without one)
// the default data dir is the user database's home, never a directory
// relative to wherever the process runs; and a node given an empty data
// dir refuses to start, saying how to give one.
func TestDataDirWithoutHome(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("HOME", "")
	d := defaultDataDir()
	if u, err := user.Current(); err == nil && filepath.IsAbs(u.HomeDir) && u.HomeDir != "/" {
		require.Equal(t, filepath.Join(u.HomeDir, ".local", "share", "rbee"), d)
	} else {
		require.Empty(t, d)
	}

	root := newRootCmd()
	root.SetArgs([]string{"node", "--data-dir", "", "--http-addr", "127.0.0.1:0"})
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	require.ErrorIs(t, root.Execute(), errNoDataDir)
}

// TestMemProfilingOffUnlessAsked: a node without --mem-profile samples no
// allocation (its profile gains no record however much it allocates); one
// with it keeps Go's sampling.
func TestMemProfilingOffUnlessAsked(t *testing.T) {
	// Go's default rate; an in-process node started by an earlier test
	// of this package has already turned sampling off.
	const goRate = 512 * 1024
	old := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = old })

	runtime.MemProfileRate = goRate
	setMemProfiling(true)
	require.Equal(t, goRate, runtime.MemProfileRate, "--mem-profile keeps the rate")

	// Every sampled allocation counts in its record once published, up to
	// two collections after it was taken: three settle what came before.
	sampled := func() int64 {
		for i := 0; i < 3; i++ {
			runtime.GC()
		}
		recs := make([]runtime.MemProfileRecord, 4096)
		n, ok := runtime.MemProfile(recs, true)
		require.True(t, ok)
		var objs int64
		for _, r := range recs[:n] {
			objs += r.AllocObjects
		}
		return objs
	}
	allocate := func() {
		var keep [][]byte
		for i := 0; i < 64; i++ {
			keep = append(keep, make([]byte, 1<<20))
		}
		runtime.KeepAlive(keep)
	}
	// Each P samples its next allocation after the rate changes (the
	// runtime then reads the new rate): at most GOMAXPROCS samples, where
	// Go's rate takes about one per MB allocated.
	setMemProfiling(false)
	require.Zero(t, runtime.MemProfileRate)
	before := sampled()
	allocate()
	allocate()
	off := sampled() - before
	require.LessOrEqual(t, off, int64(runtime.GOMAXPROCS(0)), "128 MB allocated with profiling off")

	// The check can fail: with Go's rate, the same allocations are
	// sampled.
	runtime.MemProfileRate = goRate
	before = sampled()
	allocate()
	allocate()
	require.Greater(t, sampled()-before, int64(32), "128 MB allocated with Go's sampling")
}

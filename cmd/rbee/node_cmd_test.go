package main

import (
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
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
		{[]string{"--worker-timeout", "-1s"}, "--worker-timeout -1s: want a positive duration"},
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

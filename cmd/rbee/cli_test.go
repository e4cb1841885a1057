package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/localcluster"
)

// TestUnknownSubcommandFails: a typo under any command group is an error
// (non-zero exit), with a suggestion, not a help page and exit 0.
func TestUnknownSubcommandFails(t *testing.T) {
	for _, args := range [][]string{{"hive", "lst"}, {"worker", "binary", "lsit"}, {"model", "nope"}, {"bench", "x"}} {
		root := newRootCmd()
		root.SetArgs(args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		require.Error(t, err, "%v", args)
		require.Contains(t, err.Error(), "unknown command", "%v", args)
	}
	root := newRootCmd()
	root.SetArgs([]string{"hive", "lst"})
	root.SetOut(io.Discard)
	require.ErrorContains(t, root.Execute(), "did you mean")
	// A bare group still prints its help and succeeds.
	root = newRootCmd()
	root.SetArgs([]string{"hive"})
	root.SetOut(io.Discard)
	require.NoError(t, root.Execute())
}

// TestArgumentCountsExplained: a command given too few or too many
// arguments names itself, its usage and, where its group has a list
// command, where to find one; every command with an argument check does.
func TestArgumentCountsExplained(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"hive", "get"}, []string{"rbee hive get: accepts 1 arg(s), received 0", "usage: rbee hive get", "`rbee hive list` lists them"}},
		{[]string{"worker", "binary", "get"}, []string{"rbee worker binary get:", "usage: rbee worker binary get TYPE", "`rbee worker binary list` lists them"}},
		{[]string{"status", "extra"}, []string{"rbee status:", "usage: rbee status"}},
		{[]string{"model", "synth"}, []string{"rbee model synth:", "usage: rbee model synth OUT.gguf"}},
		{[]string{"apikey", "revoke"}, []string{"rbee apikey revoke:", "`rbee apikey list` lists them"}},
	} {
		root := newRootCmd()
		root.SetArgs(tc.args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		require.Error(t, err, "%v", tc.args)
		for _, w := range tc.want {
			require.Contains(t, err.Error(), w, "%v", tc.args)
		}
		if tc.args[0] == "model" && tc.args[1] == "synth" || tc.args[0] == "status" {
			require.NotContains(t, err.Error(), "lists them", "%v names no listed thing", tc.args)
		}
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Args == nil || c.HasSubCommands() {
			return
		}
		// Far more arguments than any command takes.
		if err := c.Args(c, make([]string, 64)); err != nil {
			require.Contains(t, err.Error(), "usage: "+c.UseLine(), c.CommandPath())
		}
	}
	walk(newRootCmd())
}

func TestPromptFrom(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		stdin string
		want  string
		err   string
	}{
		{"args", []string{"Once", "upon"}, "ignored", "Once upon", ""},
		{"dash", []string{"-"}, "from stdin\n", "from stdin", ""},
		{"no args, piped", nil, "piped prompt\n\n", "piped prompt", ""},
		{"empty stdin", []string{"-"}, "  \n", "", "empty"},
		{"too big", []string{"-"}, strings.Repeat("x", maxStdinPrompt+1), "", "over"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := promptFrom(tc.args, strings.NewReader(tc.stdin))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// walk calls fn for c and every command below it.
func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

// TestFlagUsagesHaveNoBackticks: pflag takes the first `backquoted` word of
// a flag's usage as its value placeholder, so a command quoted that way
// turns into one ("--source-dir worker build"). A usage may hold one pair
// of backticks only around a deliberate placeholder: one upper-case word
// ("CA certificate `FILE`" prints "--ca FILE").
func TestFlagUsagesHaveNoBackticks(t *testing.T) {
	placeholder := regexp.MustCompile("^[^`]*`[A-Z][A-Z0-9_]*`[^`]*$")
	var bad []string
	n := 0
	walk(newRootCmd(), func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				n++
				if strings.Contains(f.Usage, "`") && !placeholder.MatchString(f.Usage) {
					bad = append(bad, c.CommandPath()+" --"+f.Name+": "+f.Usage)
				}
			})
		}
	})
	require.Greater(t, n, 50, "the walk reached the commands' flags")
	require.Empty(t, bad)
}

// TestStatusSummaryLine: a cut status (the node's summary) is counted
// under the table; a whole one has no line.
func TestStatusSummaryLine(t *testing.T) {
	st := api.StatusResult{Nodes: make([]api.Hive, 7),
		Summary: &api.StatusSummary{Nodes: map[string]int{"alive": 98, "suspect": 1, "dead": 1}}}
	require.Equal(t, "100 nodes (98 alive, 1 suspect, 1 dead); 93 more alive nodes that do not vote (replicas) not listed: rbee status --all, or rbee hive list", statusNodes(st))
	st.Summary = nil
	require.Empty(t, statusNodes(st))
}

// TestBadShardFlags: shard flags that make no group, and `bench serve
// --nodes` flags that measure nothing, are refused before anything runs
// (no node is asked, no cluster started).
func TestBadShardFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "spawn", "--model", "builtin:stories260k", "--mode", "tensor"}, "--mode splits a group"},
		{[]string{"worker", "spawn", "--model", "builtin:stories260k", "--shards", "-2"}, "--shards -2"},
		{[]string{"worker", "spawn", "--model", "builtin:stories260k", "--shards", "0"}, "--shards 0: a group has 2 or more"},
		{[]string{"worker", "spawn", "--model", "builtin:stories260k", "--shards", "1"}, "--shards 1: a group has 2 or more"},
		{[]string{"bench", "shard", "--model", "m.gguf", "--rounds", "0"}, "--rounds"},
		{[]string{"bench", "shard", "--model", "m.gguf", "--shards", "1"}, "--shards must be 2"},
		{[]string{"bench", "shard", "--model", "m.gguf", "--gen-tokens", "0"}, "--gen-tokens"},
		{[]string{"bench", "shard", "--model", "m.gguf", "--memory-probe", "-1s"}, "--memory-probe must be 0"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "1"}, "--nodes must be 0 (a worker alone) or 2 or more"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "-2"}, "--nodes must be 0"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2", "--chats", "0"}, "--chats 1 or more"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2", "--reuse-words", "-1"}, "--reuse-words must be 1 or more"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2", "--concurrency", "8"}, "--concurrency applies to a worker alone"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2", "--rounds", "3"}, "--rounds applies to a worker alone"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2", "--requests-per-client", "2"}, "--requests-per-client applies"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2", "--max-tokens", "16"}, "--max-tokens applies"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2", "--kv-cache", "f32"}, "--kv-cache applies"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2", "--memory"}, "--memory applies"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--chats", "4"}, "--chats applies to --nodes only"},
		{[]string{"bench", "serve", "--model", "m.gguf", "--nodes", "2"}, "--model m.gguf is not a regular file"},
		{[]string{"bench", "serve", "--model", "m.gguf"}, "--model m.gguf is not a regular file"},
	} {
		root := newRootCmd()
		root.SetArgs(tc.args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		require.ErrorContains(t, root.Execute(), tc.want, "%v", tc.args)
	}
}

// TestBadScaleFlags: `bench scale` and `bench failover` values that
// measure nothing, or that no node starts with, are refused before any
// node process starts (a bad --profile used to start node1, which exited,
// and the bench reported that as a result with exit 0).
func TestBadScaleFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "scale", "--nodes", "2"}, "--nodes must be 3..300"},
		{[]string{"bench", "scale", "--profile", "bogus"}, `--profile: localcluster: unknown timing profile "bogus" (want "lan" or "local")`},
		{[]string{"bench", "scale", "--profile", ""}, "--profile: localcluster: unknown timing profile"},
		{[]string{"bench", "scale", "--idle", "0s"}, "--idle must be 1s or more"},
		{[]string{"bench", "scale", "--idle", "-1s"}, "--idle must be 1s or more"},
		{[]string{"bench", "scale", "--idle", "500ms"}, "--idle must be 1s or more"},
		{[]string{"bench", "scale", "--wave", "-1"}, "--wave must be 0 (all at once) or more"},
		{[]string{"bench", "failover", "--profile", "wan"}, `--profile: localcluster: unknown timing profile "wan"`},
	} {
		root := newRootCmd()
		root.SetArgs(tc.args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
		if strings.Contains(tc.want, "profile") {
			require.ErrorIs(t, err, localcluster.ErrBadProfile, "%v", tc.args)
		}
	}
}

// TestFixedSetArgumentsRefuseOthers: a positional argument from a fixed
// set (a shell, a help topic) that is not in it is an error and exit 1,
// not a help page and exit 0.
func TestFixedSetArgumentsRefuseOthers(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" when the command succeeds
		out  string
	}{
		{[]string{"completion", "nosh"}, "unsupported shell nosh; one of bash, zsh, fish, powershell", ""},
		{[]string{"completion", "bash"}, "", "bash completion"},
		{[]string{"completion", "powershell"}, "", "Register-ArgumentCompleter"},
		{[]string{"completion"}, "", "Generate the autocompletion script"},
		{[]string{"help", "nosuch"}, `unknown help topic "nosuch"`, ""},
		{[]string{"help", "worker", "nosuch"}, `unknown help topic "worker nosuch"`, ""},
		{[]string{"help", "worker", "binary"}, "", "The worker binary catalog"},
		{[]string{"help"}, "", "Available Commands"},
	} {
		root := newRootCmd()
		root.SetArgs(tc.args)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(io.Discard)
		err := root.Execute()
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, "%v", tc.args)
			var stderr bytes.Buffer
			root = newRootCmd()
			root.SetArgs(tc.args)
			require.Equal(t, 1, execute(context.Background(), root, io.Discard, &stderr), "%v exits 1", tc.args)
			require.Contains(t, stderr.String(), "error: "+tc.err)
			continue
		}
		require.NoError(t, err, "%v", tc.args)
		require.Contains(t, out.String(), tc.out, "%v", tc.args)
	}
}

// TestInferMaxTokens: -n 0 or less is refused before anything is sent (0
// would be left out of the request, and the worker would generate its own
// default, 256); without -n the request asks for the 128 the help names;
// bad sampling flags are refused too.
func TestInferMaxTokens(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "0"}, "-n/--max-tokens 0: want 1 or more"},
		{[]string{"--max-tokens", "-5"}, "-n/--max-tokens -5: want 1 or more"},
		{[]string{"--top-p", "1.5"}, "--top-p 1.5: want 0 to 1"},
		{[]string{"--temperature", "-1"}, "--temperature -1: want 0"},
		{[]string{"--top-k", "-1"}, "--top-k -1: want 0"},
	} {
		refusedBeforeSending(t, []string{"infer", "--model", "m", "hi"}, tc.args, tc.want)
	}
	for _, tc := range []struct {
		args []string
		want float64
	}{
		{nil, 128},
		{[]string{"-n", "1"}, 1},
		{[]string{"-n", "300"}, 300},
	} {
		fake := &fakeJobNode{events: []jobs.Event{{Type: jobs.TypeToken, Text: " upon"}}}
		srv := httptest.NewServer(fake)
		root := newRootCmd()
		root.SetArgs(append([]string{"infer", "--node", srv.URL, "--token", "t", "--model", "m", "Once"}, tc.args...))
		var out bytes.Buffer
		root.SetOut(&out)
		require.NoError(t, root.Execute(), "%v", tc.args)
		srv.Close()
		require.Equal(t, " upon\n", out.String())
		require.Len(t, fake.bodies, 1)
		require.Equal(t, tc.want, fake.bodies[0]["max_tokens"], "%v", tc.args)
	}
}

// TestBadSpawnFlags: spawn flags out of range are refused before a node
// is asked; --gpu-layers below -1 would be left out of the request and
// mean "all layers".
func TestBadSpawnFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--gpu-layers", "-5"}, "--gpu-layers -5: want -1 (all with --gpu, none without) or 0 or more"},
		{[]string{"--type", "llama-server", "--gpu-layers", "-2"}, "--gpu-layers -2"},
		{[]string{"--threads", "-1"}, "--threads -1: want 0"},
		{[]string{"--slots", "-3"}, "--slots -3"},
		{[]string{"--ctx", "-1"}, "--ctx -1"},
		{[]string{"--type", "llama-server", "--gpu", "-1"}, "--gpu -1: want a GPU index"},
	} {
		refusedBeforeSending(t, []string{"worker", "spawn", "--model", "builtin:stories260k"}, tc.args, tc.want)
	}
	// -1 (the default) and 0 are what they were: left out, and none.
	for _, tc := range []struct {
		args []string
		want any
	}{
		{nil, nil},
		{[]string{"--gpu-layers", "-1"}, nil},
		{[]string{"--gpu-layers", "0"}, 0.0},
	} {
		fake := &fakeJobNode{events: []jobs.Event{{Type: jobs.TypeResult, Result: []byte(`{"worker_id":"w"}`)}}}
		srv := httptest.NewServer(fake)
		root := newRootCmd()
		root.SetArgs(append([]string{"worker", "spawn", "--node", srv.URL, "--token", "t", "--model", "builtin:stories260k"}, tc.args...))
		root.SetOut(io.Discard)
		require.NoError(t, root.Execute(), "%v", tc.args)
		srv.Close()
		require.Len(t, fake.bodies, 1)
		require.Equal(t, tc.want, fake.bodies[0]["gpu_layers"], "%v", tc.args)
	}
}

// refusedBeforeSending runs cmd with args against a fake node and checks
// it fails with want and sends the node nothing.
func refusedBeforeSending(t *testing.T, cmd, args []string, want string) {
	t.Helper()
	fake := &fakeJobNode{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	root := newRootCmd()
	root.SetArgs(append(append(append([]string{}, cmd...), "--node", srv.URL, "--token", "t"), args...))
	root.SetOut(io.Discard)
	require.ErrorContains(t, root.Execute(), want, "%v", args)
	require.Empty(t, fake.requests, "%v: nothing is sent", args)
}

// TestNodeURLMustBeAURL: a --node that is not http(s)://HOST[:PORT] (the
// scheme left out, an OpenAI-style base URL ending in /v1) is refused
// with what was meant, before anything is sent, instead of "unsupported
// protocol scheme" under "is `rbee node` running?" or the node's 404 for
// /v1/v1/jobs. A trailing slash is fine.
func TestNodeURLMustBeAURL(t *testing.T) {
	fake := &fakeJobNode{events: []jobs.Event{{Type: jobs.TypeResult, Result: []byte(`{"worker_id":"w"}`)}}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		node, want string
	}{
		{hostPort, "did you mean " + srv.URL + "?"},
		{"localhost:7833", "did you mean http://localhost:7833?"},
		{srv.URL + "/v1", "did you mean " + srv.URL + "?"},
		{srv.URL + "/v1/", "did you mean " + srv.URL + "?"},
		{"ftp://" + hostPort, "not a node URL"},
		{"http://", "not a node URL"},
		{"", "not a node URL"},
	} {
		root := newRootCmd()
		root.SetArgs([]string{"worker", "spawn", "--model", "builtin:stories260k", "--token", "t", "--node", tc.node})
		root.SetOut(io.Discard)
		err := root.Execute()
		require.ErrorContains(t, err, tc.want, "%q", tc.node)
		require.NotContains(t, err.Error(), "rbee node` running", "%q", tc.node)
	}
	require.Empty(t, fake.requests, "nothing is sent")
	root := newRootCmd()
	root.SetArgs([]string{"worker", "spawn", "--model", "builtin:stories260k", "--token", "t", "--node", srv.URL + "/"})
	root.SetOut(io.Discard)
	require.NoError(t, root.Execute())
}

// TestVersionAgrees: `rbee version` (which did not exist: "unknown
// command"), `rbee --version` and `rbee node --version` print the same
// line; -o json is one JSON document with the version.
func TestVersionAgrees(t *testing.T) {
	out := func(args ...string) string {
		root := newRootCmd()
		root.SetArgs(args)
		var b bytes.Buffer
		root.SetOut(&b)
		root.SetErr(io.Discard)
		require.NoError(t, root.Execute(), "%v", args)
		return b.String()
	}
	want := "rbee version " + version + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}, {"node", "--version"}} {
		require.Equal(t, want, out(args...), "%v", args)
	}
	var v struct {
		Version string `json:"version"`
	}
	require.NoError(t, json.Unmarshal([]byte(out("version", "-o", "json")), &v))
	require.Equal(t, version, v.Version)
}

// TestJoinAddressGetsThePort: a join address without a port gets the
// default gossip port, IPv6 literals too (::1 and [::1] were sent on
// without one and refused: "too many colons", "missing port").
func TestJoinAddressGetsThePort(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.10":      "192.168.1.10:7834",
		"gpu-box.lan":       "gpu-box.lan:7834",
		"192.168.1.10:9000": "192.168.1.10:9000",
		"::1":               "[::1]:7834",
		"[::1]":             "[::1]:7834",
		"fe80::1":           "[fe80::1]:7834",
		"[::1]:9000":        "[::1]:9000",
	} {
		require.Equal(t, want, withGossipPort(in), in)
	}
}

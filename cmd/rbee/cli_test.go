package main

import (
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
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
	require.Equal(t, "100 nodes (98 alive, 1 suspect, 1 dead); 93 more alive non-voters not listed: rbee status --all, or rbee hive list", statusNodes(st))
	st.Summary = nil
	require.Empty(t, statusNodes(st))
}

// TestBadShardFlags: shard flags that make no group are refused before
// anything runs (no node is asked, no cluster started).
func TestBadShardFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "spawn", "--model", "builtin:stories260k", "--mode", "tensor"}, "--mode splits a group"},
		{[]string{"worker", "spawn", "--model", "builtin:stories260k", "--shards", "-2"}, "--shards -2"},
		{[]string{"bench", "shard", "--model", "m.gguf", "--rounds", "0"}, "--rounds"},
		{[]string{"bench", "shard", "--model", "m.gguf", "--shards", "1"}, "--shards must be 2"},
		{[]string{"bench", "shard", "--model", "m.gguf", "--gen-tokens", "0"}, "--gen-tokens"},
	} {
		root := newRootCmd()
		root.SetArgs(tc.args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		require.ErrorContains(t, root.Execute(), tc.want, "%v", tc.args)
	}
}

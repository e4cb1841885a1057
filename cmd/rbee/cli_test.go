package main

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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

package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/nodetest"
)

// complete runs cobra's hidden __complete command as a shell does and
// returns the offered words (without the directive line).
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs(append([]string{"__complete"}, args...))
	require.NoError(t, root.Execute())
	var words []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l != "" && !strings.HasPrefix(l, ":") {
			words = append(words, l)
		}
	}
	return words
}

func TestDynamicCompletion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	c := nodetest.New(t, 1)
	c.WaitLeader()
	url := c.Nodes[0].URL()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"hive flag", []string{"worker", "spawn", "--node", url, "--hive", ""}, []string{"node0"}},
		{"hive flag prefix", []string{"model", "list", "--node", url, "--hive", "no"}, []string{"node0"}},
		{"hive flag no match", []string{"model", "list", "--node", url, "--hive", "x"}, nil},
		{"hive argument", []string{"hive", "status", "--node", url, ""}, []string{"node0"}},
		{"second argument", []string{"hive", "status", "--node", url, "node0", ""}, nil},
		{"spawn model", []string{"worker", "spawn", "--node", url, "--model", "b"}, []string{"builtin:stories260k"}},
		{"worker ids (none yet)", []string{"worker", "retire", "--node", url, ""}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, complete(t, tc.args...))
		})
	}

	// A node that does not answer: nothing is offered, quickly.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	require.Empty(t, complete(t, "hive", "get", "--node", "http://"+addr, ""))
	require.Empty(t, complete(t, "worker", "spawn", "--node", "http://"+addr, "--model", ""))
}

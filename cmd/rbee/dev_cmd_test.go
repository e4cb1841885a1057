package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/localcluster"
)

func TestDevTry(t *testing.T) {
	nodes := []*localcluster.Node{
		{Name: "node0", HTTPAddr: "127.0.0.1:7001", GossipAddr: "127.0.0.1:7101", P2PAddr: "/ip4/127.0.0.1/tcp/7201", LogPath: "/tmp/rbee-dev-1/node0.log"},
		{Name: "node1", HTTPAddr: "127.0.0.1:7002", GossipAddr: "127.0.0.1:7102", P2PAddr: "/ip4/127.0.0.1/tcp/7202", LogPath: "/tmp/rbee-dev-1/node1.log"},
	}
	for _, tc := range []struct{ bin, cmd string }{
		{"/home/u/rbee/bin/rbee", "/home/u/rbee/bin/rbee"},
		{"/home/u/my rbee/bin/rbee", "'/home/u/my rbee/bin/rbee'"},
	} {
		var out bytes.Buffer
		devTry(&out, tc.bin, "/tmp/rbee-dev-1", nodes, "node1")
		s := out.String()
		for _, want := range []string{
			tc.cmd + " status\n", tc.cmd + " worker list\n", tc.cmd + " hive status node1\n",
			"export RBEE_NODE=http://127.0.0.1:7001\n",
			"api http://127.0.0.1:7002", "gossip 127.0.0.1:7102", "p2p /ip4/127.0.0.1/tcp/7202", "/tmp/rbee-dev-1/node1.log",
			"Logs: /tmp/rbee-dev-1/node*.log (kept after exit)",
		} {
			require.Contains(t, s, want)
		}
		require.NotContains(t, s, "\n  rbee ", "every command names the binary by its path")
	}
}

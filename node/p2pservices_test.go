package node_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// TestP2PStreamsJoinTheirServices: every rbee protocol a node serves has a
// resource-manager service, and live streams are accounted to it with the
// memory of their buffers.
func TestP2PStreamsJoinTheirServices(t *testing.T) {
	c := nodetest.New(t, 2)
	c.WaitLeader()
	want := map[string]string{
		"/rbee/ping/1.0.0":         "rbee.ping",
		"/rbee/info/1.0.0":         "rbee.info",
		"/rbee/job/1.0.0":          "rbee.job",
		"/rbee/job/1.1.0":          "rbee.job-1.1",
		"/rbee/worker-http/1.0.0":  "rbee.worker-http",
		"/rbee/worker-http/1.1.0":  "rbee.worker-http-1.1",
		"/rbee/blob/1.0.0":         "rbee.blob",
		"/rbee/raft/1.0.0":         "rbee.raft",
		"/rbee/raft-forward/1.0.0": "rbee.raft-forward",
		"/rbee/shard-link/1.0.0":   "rbee.shard-link",
	}
	for _, n := range c.Nodes {
		require.Equal(t, want, n.P2PServices(), "%s: a protocol without its service", n.Name())
	}
	// Raft keeps streams open between the two servers: on both ends they
	// are in rbee.raft, each with its connection buffers reserved.
	for _, n := range c.Nodes {
		require.Eventually(t, func() bool {
			st := n.P2PServiceStat("rbee.raft")
			streams := st.NumStreamsInbound + st.NumStreamsOutbound
			return streams > 0 && st.Memory == int64(streams)*nodeRaftConnMemory
		}, nodetest.WaitTimeout, 20*time.Millisecond, "%s: %+v", n.Name(), n.P2PServiceStat("rbee.raft"))
	}
}

const nodeRaftConnMemory = int64(node.RaftConnMemory)

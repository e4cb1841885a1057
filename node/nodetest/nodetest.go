// Package nodetest is an in-process cluster harness: N real nodes (real
// memberlist, Raft and libp2p) on 127.0.0.1 with tight timings, for tests of
// this and other packages.
package nodetest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/worker/process"
)

// Token is the cluster secret every harness node uses.
const Token = "rbee_nodetest_secret_0123456789"

// WaitTimeout bounds every wait of the harness: generous for a loaded 2-core
// CI machine, far above the sub-second elections of the local profile.
const WaitTimeout = 30 * time.Second

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	dir   string
	Nodes []*node.Node
	cfgs  []node.Config
}

// Option changes the config of every node before it starts.
type Option func(i int, cfg *node.Config)

// New starts n nodes: node 0 creates the cluster, the others join it. It
// waits until every node sees one leader and n alive voters (up to 5).
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, dir: t.TempDir()}
	t.Cleanup(c.Close)
	for i := 0; i < n; i++ {
		cfg := node.DefaultConfig()
		cfg.Name = fmt.Sprintf("node%d", i)
		cfg.DataDir = filepath.Join(c.dir, cfg.Name)
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.GossipAddr = "127.0.0.1:0"
		cfg.P2PAddr = "127.0.0.1:0"
		cfg.BlobAddr = "127.0.0.1:0"
		cfg.Token = Token
		cfg.MDNS = false
		cfg.Profile = "local"
		cfg.ReconcileInterval = time.Second
		cfg.Logger = logger(t, cfg.Name)
		if i > 0 {
			cfg.Join = []string{c.Nodes[0].GossipAddr()}
		}
		for _, o := range opts {
			o(i, &cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
		c.Nodes = append(c.Nodes, c.start(cfg))
	}
	c.WaitConverged(min(n, 5))
	return c
}

func logger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("RBEE_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

func (c *Cluster) start(cfg node.Config) *node.Node {
	c.t.Helper()
	nd, err := node.New(cfg)
	require.NoError(c.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	require.NoError(c.t, nd.Start(ctx))
	return nd
}

// Close stops every node and every worker process the nodes started (also
// those of killed nodes, which a crash leaves running).
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		if n != nil {
			_ = n.Close()
		}
	}
	for _, cfg := range c.cfgs {
		m, err := process.New(process.Config{Dir: node.ProcessesDir(cfg.DataDir), Host: "127.0.0.1", PollInterval: time.Second})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_ = m.StopAll(ctx, 5*time.Second)
		cancel()
		_ = m.Close()
	}
}

// WorkerSecret returns the secret of a worker process one of the nodes
// started (read from the node's data dir), for tests that call a worker's
// port as its node does.
func (c *Cluster) WorkerSecret(workerID string) string {
	c.t.Helper()
	for _, cfg := range c.cfgs {
		if s, err := process.ReadSecrets(node.ProcessesDir(cfg.DataDir)); err == nil && s[workerID] != "" {
			return s[workerID]
		}
	}
	c.t.Fatalf("no node of the cluster started worker %s", workerID)
	return ""
}

// Leader returns the node that leads, or nil.
func (c *Cluster) Leader() *node.Node {
	for _, n := range c.Nodes {
		if n != nil && n.IsLeader() {
			return n
		}
	}
	return nil
}

// Running returns the nodes that are not killed.
func (c *Cluster) Running() []*node.Node {
	var out []*node.Node
	for _, n := range c.Nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// WaitLeader waits until a running node leads and every running node
// agrees on it.
func (c *Cluster) WaitLeader() *node.Node {
	c.t.Helper()
	var leader *node.Node
	require.Eventually(c.t, func() bool {
		leader = c.Leader()
		if leader == nil {
			return false
		}
		for _, n := range c.Running() {
			if n.LeaderID() != leader.ID() {
				return false
			}
		}
		return true
	}, WaitTimeout, 20*time.Millisecond, "no agreed leader")
	return leader
}

// WaitConverged waits for one agreed leader and voters alive voters in
// every running node's view.
func (c *Cluster) WaitConverged(voters int) *node.Node {
	c.t.Helper()
	c.WaitLeader()
	require.Eventually(c.t, func() bool {
		for _, n := range c.Running() {
			servers, err := n.Consensus().Servers()
			if err != nil {
				return false
			}
			v := 0
			for _, s := range servers {
				if s.Suffrage == "voter" {
					v++
				}
			}
			if v != voters {
				return false
			}
		}
		return true
	}, WaitTimeout, 20*time.Millisecond, "raft configuration did not reach %d voters", voters)
	return c.WaitLeader()
}

// Kill stops node i without leaving (a crash as far as the others see).
// A restart reuses its API and gossip addresses, as a real node's fixed
// ports would be: its worker processes keep sending heartbeats there, and
// the other nodes know it there.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	require.NotNil(c.t, c.Nodes[i], "node %d already killed", i)
	c.cfgs[i].HTTPAddr = c.Nodes[i].HTTPAddr()
	c.cfgs[i].GossipAddr = c.Nodes[i].GossipAddr()
	c.cfgs[i].P2PAddr = c.Nodes[i].P2PAddr()
	require.NoError(c.t, c.Nodes[i].Close())
	c.Nodes[i] = nil
}

// Restart starts node i again on its data dir, with no join flags: it must
// rejoin from what it persisted.
func (c *Cluster) Restart(i int) *node.Node {
	c.t.Helper()
	return c.RestartWith(i, nil)
}

// RestartWith is Restart with mod applied to the node's configuration
// first (and kept for later restarts): a new build, another flag.
func (c *Cluster) RestartWith(i int, mod func(*node.Config)) *node.Node {
	c.t.Helper()
	require.Nil(c.t, c.Nodes[i], "node %d is running", i)
	if mod != nil {
		mod(&c.cfgs[i])
	}
	cfg := c.cfgs[i]
	cfg.Join = nil
	cfg.Token = ""
	c.Nodes[i] = c.start(cfg)
	return c.Nodes[i]
}

// ForgetPeers deletes a killed node's peers.json: restarted, it knows no
// member to rejoin and waits for the others to reach it.
func (c *Cluster) ForgetPeers(i int) {
	c.t.Helper()
	require.Nil(c.t, c.Nodes[i], "node %d is running", i)
	err := os.Remove(filepath.Join(c.cfgs[i].DataDir, "peers.json"))
	require.True(c.t, err == nil || os.IsNotExist(err), "remove peers.json: %v", err)
}

// Index returns the index of a node.
func (c *Cluster) Index(n *node.Node) int {
	for i, m := range c.Nodes {
		if m == n {
			return i
		}
	}
	return -1
}

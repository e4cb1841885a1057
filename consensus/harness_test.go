package consensus_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/consensus/consensustest"
	"github.com/rbee-project/rbee/fsm"
)

// cluster is an in-process set of real consensus.Consensus servers on 127.0.0.1 TCP,
// with a gossip view the test controls.
type cluster struct {
	t   *testing.T
	reg *consensustest.Registry

	members *consensustest.Membership
	// replicas: members announce that they follow the registry by feed
	// (Member.Replica), as current nodes do.
	replicas bool
	// wrap, when set, wraps each started server's network (for tests
	// that lose messages).
	wrap func(id string, nw consensus.Network) consensus.Network

	mu    sync.Mutex
	nodes map[string]*testNode
	dirs  map[string]string
}

type testNode struct {
	id  string
	fsm *fsm.FSM
	c   *consensus.Consensus
}

func newCluster(t *testing.T) *cluster {
	cl := &cluster{t: t, reg: consensustest.NewRegistry(),
		members: consensustest.NewMembership(), nodes: map[string]*testNode{}, dirs: map[string]string{}}
	t.Cleanup(func() {
		cl.mu.Lock()
		nodes := cl.nodes
		cl.mu.Unlock()
		for _, n := range nodes {
			n.c.Close()
		}
	})
	return cl
}

func (cl *cluster) Members() []consensus.Member { return cl.members.Members() }

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("RBEE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// config returns the test config of server id; its data dir survives
// restarts of the same id.
func (cl *cluster) config(id string) consensus.Config {
	cl.mu.Lock()
	dir, ok := cl.dirs[id]
	if !ok {
		dir = cl.t.TempDir()
		cl.dirs[id] = dir
	}
	cl.mu.Unlock()
	cfg := consensus.DefaultConfig()
	cfg.DataDir = dir
	cfg.LocalID = id
	cfg.LocalName = "name-" + id
	cfg.Profile = consensus.ProfileLocal
	cfg.Members = cl.Members
	cfg.ReconcileInterval = time.Second
	cfg.ApplyTimeout = 5 * time.Second
	cfg.ReapGrace = 300 * time.Millisecond
	cfg.Logger = testLogger(cl.t)
	return cfg
}

// start starts server id with cfg (from config, possibly modified) and
// announces it alive in the gossip view.
func (cl *cluster) start(cfg consensus.Config) *testNode {
	cl.t.Helper()
	nw, err := cl.reg.Listen(cfg.LocalID)
	require.NoError(cl.t, err)
	f := fsm.New(nil)
	cfg.Network, cfg.FSM = nw, f
	if cl.wrap != nil {
		cfg.Network = cl.wrap(cfg.LocalID, nw)
	}
	c, err := consensus.New(cfg)
	require.NoError(cl.t, err)
	require.NoError(cl.t, c.Start(context.Background()))
	n := &testNode{id: cfg.LocalID, fsm: f, c: c}
	cl.mu.Lock()
	cl.nodes[n.id] = n
	cl.mu.Unlock()
	cl.members.Set(consensus.Member{
		ID: n.id, Name: cfg.LocalName, HTTPAddr: "127.0.0.1:1/" + n.id,
		P2PAddrs: []string{"/ip4/127.0.0.1/tcp/1/" + n.id}, Version: "test",
		State: consensus.MemberAlive, BootstrapExpect: cfg.BootstrapExpect, Replica: cl.replicas,
	})
	cl.kick()
	return n
}

// stop closes server id and marks it failed in the gossip view.
func (cl *cluster) stop(id string) {
	cl.mu.Lock()
	n := cl.nodes[id]
	delete(cl.nodes, id)
	cl.mu.Unlock()
	require.NoError(cl.t, n.c.Close())
	cl.setState(id, consensus.MemberFailed)
}

func (cl *cluster) setState(id string, st consensus.MemberState) {
	require.True(cl.t, cl.members.SetState(id, st), "unknown member %s", id)
	cl.kick()
}

func (cl *cluster) forget(id string) {
	cl.members.Remove(id)
	cl.kick()
}

func (cl *cluster) kick() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, n := range cl.nodes {
		n.c.MembershipChanged()
	}
}

func (cl *cluster) running() []*testNode {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []*testNode
	for _, n := range cl.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// waitLeader waits until exactly one running server leads and every running
// server agrees on it.
func (cl *cluster) waitLeader() *testNode {
	cl.t.Helper()
	var leader *testNode
	require.Eventually(cl.t, func() bool {
		leader = nil
		nodes := cl.running()
		for _, n := range nodes {
			if n.c.IsLeader() {
				if leader != nil {
					return false
				}
				leader = n
			}
		}
		if leader == nil {
			return false
		}
		for _, n := range nodes {
			if n.c.LeaderID() != leader.id {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond, "no single agreed leader: %s", cl.leaderViews())
	return leader
}

// leaderViews says which leader each running server knows.
func (cl *cluster) leaderViews() string {
	var out []string
	for _, n := range cl.running() {
		out = append(out, fmt.Sprintf("%s→%q (leads %v)", n.id, n.c.LeaderID(), n.c.IsLeader()))
	}
	return fmt.Sprint(out)
}

func (cl *cluster) followers(leader *testNode) []*testNode {
	var out []*testNode
	for _, n := range cl.running() {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

func apply(t *testing.T, n *testNode, cmd fsm.Command) fsm.Result {
	t.Helper()
	b, err := fsm.Encode(cmd)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := n.c.Apply(ctx, b)
	require.NoError(t, err)
	r, ok := res.(fsm.Result)
	require.True(t, ok, "result %T", res)
	return r
}

func host(name string) fsm.Command {
	return fsm.UpsertHost{Host: fsm.Host{Name: name, Host: "10.0.0.1", State: fsm.HostKnown}}
}

// waitHost waits until every given server's registry has the host.
func waitHost(t *testing.T, name string, nodes ...*testNode) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			if _, ok := n.fsm.Host(name); !ok {
				return false
			}
		}
		return true
	}, 15*time.Second, 10*time.Millisecond, "host %s not replicated", name)
}

// suffrages returns voters and non-voters of n's configuration.
func suffrages(t *testing.T, n *testNode) (voters, nonvoters []string) {
	servers, err := n.c.Servers()
	require.NoError(t, err)
	for _, s := range servers {
		if s.Suffrage == "voter" {
			voters = append(voters, s.ID)
		} else {
			nonvoters = append(nonvoters, s.ID)
		}
	}
	return voters, nonvoters
}

func ids(prefix string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

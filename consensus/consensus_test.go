package consensus_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/consensus/consensustest"
	"github.com/rbee-project/rbee/fsm"
)

func TestConfigValidation(t *testing.T) {
	reg := consensustest.NewRegistry()
	nw, err := reg.Listen("a")
	require.NoError(t, err)
	defer nw.Close()
	good := func() consensus.Config {
		c := consensus.DefaultConfig()
		c.DataDir, c.LocalID, c.Network, c.FSM = t.TempDir(), "a", nw, fsm.New(nil)
		return c
	}
	tests := []struct {
		name string
		mod  func(*consensus.Config)
	}{
		{"no data dir", func(c *consensus.Config) { c.DataDir = "" }},
		{"no id", func(c *consensus.Config) { c.LocalID = "" }},
		{"id mismatch", func(c *consensus.Config) { c.LocalID = "b" }},
		{"no network", func(c *consensus.Config) { c.Network = nil }},
		{"no fsm", func(c *consensus.Config) { c.FSM = nil }},
		{"bad profile", func(c *consensus.Config) { c.Profile = "wan" }},
		{"negative expect", func(c *consensus.Config) { c.BootstrapExpect = -1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good()
			tc.mod(&cfg)
			_, err := consensus.New(cfg)
			require.ErrorIs(t, err, consensus.ErrConfig)
		})
	}
	held := good()
	c, err := consensus.New(held)
	require.NoError(t, err)
	// A second server on the same data dir fails fast (bolt file lock).
	second := good()
	second.DataDir = held.DataDir
	_, err = consensus.New(second)
	require.Error(t, err)
	_, err = c.Apply(context.Background(), []byte{1})
	require.Error(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	require.ErrorIs(t, c.Start(context.Background()), consensus.ErrClosed)
}

func TestSingleNodeBootstrapAndRestart(t *testing.T) {
	cl := newCluster(t)
	cfg := cl.config("solo")
	n := cl.start(cfg)
	cl.waitLeader()
	require.Equal(t, consensus.BootstrapDone, n.c.Stats()["bootstrap"])

	// The leader loop registers itself in the registry.
	require.Eventually(t, func() bool {
		node, ok := n.fsm.Node("solo")
		return ok && node.State == fsm.NodeAlive && node.Name == "name-solo"
	}, 10*time.Second, 10*time.Millisecond)

	res := apply(t, n, host("h1"))
	require.True(t, res.Changed)
	require.NotZero(t, res.Index)
	again, err := n.c.ApplyCommand(context.Background(), host("h1"))
	require.NoError(t, err)
	require.False(t, again.Changed, "identical upsert is a no-op")
	require.Greater(t, again.Index, res.Index)
	_, err = n.c.ApplyCommand(context.Background(), fsm.UpsertHost{})
	require.ErrorIs(t, err, fsm.ErrInvalid)
	require.NoError(t, n.c.Barrier(context.Background()))

	// Restart on the same data dir: existing state, no bootstrap, same data.
	cl.stop("solo")
	require.Equal(t, "Shutdown", n.c.State())
	_, err = n.c.Apply(context.Background(), mustEncode(t, host("x")))
	require.ErrorIs(t, err, consensus.ErrClosed)
	cl.setState("solo", consensus.MemberAlive)
	n2 := cl.start(cfg)
	require.Equal(t, consensus.BootstrapExistingState, n2.c.Stats()["bootstrap"])
	cl.waitLeader()
	waitHost(t, "h1", n2)
	apply(t, n2, host("h2"))
}

func mustEncode(t *testing.T, cmd fsm.Command) []byte {
	b, err := fsm.Encode(cmd)
	require.NoError(t, err)
	return b
}

func TestThreeNodeExpectLifecycle(t *testing.T) {
	cl := newCluster(t)
	names := ids("n", 3)
	cfgs := map[string]consensus.Config{}
	for _, id := range names {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cfg.TrailingLogs = 4 // a server that was away must catch up by snapshot
		cfgs[id] = cfg
	}
	// Start all three at once: a bootstrap race.
	var wg sync.WaitGroup
	for _, id := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl.start(cfgs[id])
		}()
	}
	wg.Wait()
	cl.kick()
	leader := cl.waitLeader()
	for _, n := range cl.running() {
		// A server that joined the others' bootstrap (instead of
		// bootstrapping itself) may know the leader from its first
		// heartbeat before the configuration entry has reached it.
		require.Eventually(t, func() bool {
			voters, nonvoters := suffrages(t, n)
			return slices.Equal(names, voters) && len(nonvoters) == 0
		}, 10*time.Second, 10*time.Millisecond, "on %s", n.id)
		require.Contains(t, []string{consensus.BootstrapDone, consensus.BootstrapJoinedExisting}, n.c.Stats()["bootstrap"])
	}

	// Every member gets a registry entry.
	require.Eventually(t, func() bool {
		for _, n := range cl.running() {
			if len(n.fsm.Nodes()) != 3 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)

	// A write from a follower lands everywhere.
	f := cl.followers(leader)
	apply(t, f[0], host("from-follower"))
	waitHost(t, "from-follower", cl.running()...)

	// Rejected commands come back typed, through the forward path too.
	_, err := f[1].c.Apply(context.Background(), mustEncode(t, fsm.SetNodeState{ID: "ghost", State: fsm.NodeLeft}))
	require.ErrorIs(t, err, consensus.ErrRejected)
	require.ErrorIs(t, err, fsm.ErrNotFound)
	_, err = f[1].c.Apply(context.Background(), []byte{250, '{', '}'})
	require.ErrorIs(t, err, fsm.ErrUnknownCommand)

	// Kill the leader: a new one takes over and writes resume.
	require.Eventually(t, func() bool { return f[0].c.LeaderChanges() >= 1 }, 10*time.Second, 10*time.Millisecond)
	changes := f[0].c.LeaderChanges()
	old := leader.id
	cl.stop(old)
	leader = cl.waitLeader()
	require.NotEqual(t, old, leader.id)
	require.Eventually(t, func() bool { return f[0].c.LeaderChanges() > changes }, 10*time.Second, 10*time.Millisecond)
	survivors := cl.running()
	for i := 0; i < 10; i++ {
		apply(t, survivors[i%2], host("while-down"))
	}
	waitHost(t, "while-down", survivors...)
	// The gossip view says the old leader failed; the registry follows.
	require.Eventually(t, func() bool {
		n, ok := leader.fsm.Node(old)
		return ok && n.State == fsm.NodeFailed
	}, 10*time.Second, 10*time.Millisecond)
	// Failed servers stay in the configuration until reaped.
	voters, _ := suffrages(t, leader)
	require.Contains(t, voters, old)
	require.NoError(t, leader.c.Snapshot())

	// Restart it on its data dir: it rejoins and catches up.
	cl.setState(old, consensus.MemberAlive)
	back := cl.start(cfgs[old])
	require.Equal(t, consensus.BootstrapExistingState, back.c.Stats()["bootstrap"])
	waitHost(t, "while-down", back)
	cl.waitLeader()
	apply(t, back, host("after-restart"))
	waitHost(t, "after-restart", cl.running()...)
	require.Eventually(t, func() bool {
		n, ok := back.fsm.Node(old)
		return ok && n.State == fsm.NodeAlive
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, cl.running()[0].fsm.Nodes(), back.fsm.Nodes())

	// Determinism through raft: once every replica applied the same index,
	// their registries encode to identical snapshot bytes.
	apply(t, back, host("final"))
	require.Eventually(t, func() bool {
		nodes := cl.running()
		idx := nodes[0].fsm.Index()
		for _, n := range nodes {
			if n.fsm.Index() != idx {
				return false
			}
		}
		return idx > 0
	}, 10*time.Second, 10*time.Millisecond)
	var want []byte
	for _, n := range cl.running() {
		var buf bytes.Buffer
		require.NoError(t, fsm.WriteSnapshot(&buf, n.fsm.State()))
		if want == nil {
			want = buf.Bytes()
		}
		require.Equal(t, want, buf.Bytes(), "replica %s differs", n.id)
	}
}

func TestCloseReleasesHeldApplyAndGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	cl := newCluster(t)
	cfg := cl.config("lonely")
	cfg.Join = true
	n := cl.start(cfg)
	done := make(chan error, 1)
	go func() {
		_, err := n.c.Apply(context.Background(), mustEncode(t, host("never")))
		done <- err
	}()
	cl.stop("lonely")
	require.ErrorIs(t, <-done, consensus.ErrClosed)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+1 }, 10*time.Second, 20*time.Millisecond,
		"goroutines leaked: %d before, %d after", base, runtime.NumGoroutine())
}

func TestBootstrapExpectMismatchRefused(t *testing.T) {
	cl := newCluster(t)
	var nodes []*testNode
	for i, id := range ids("m", 3) {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		if i == 2 {
			cfg.BootstrapExpect = 2
		}
		nodes = append(nodes, cl.start(cfg))
	}
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			if n.c.Stats()["bootstrap"] != consensus.BootstrapConflict {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	// The conflict is detected before any bootstrap: no configuration at all.
	for _, n := range nodes {
		servers, err := n.c.Servers()
		require.NoError(t, err)
		require.Empty(t, servers)
		require.False(t, n.c.IsLeader())
	}

	// Once the odd one is gone, the other two still wait for a third.
	cl.stop("m2")
	cl.forget("m2")
	require.Eventually(t, func() bool {
		return nodes[0].c.Stats()["bootstrap"] == consensus.BootstrapWaiting
	}, 10*time.Second, 10*time.Millisecond)
	// A third with the right expect completes the cluster.
	cfg := cl.config("m3")
	cfg.BootstrapExpect = 3
	cl.start(cfg)
	cl.waitLeader()
	// A leader can be elected before m0 holds the configuration (raft
	// bootstraps each server on its own, and m0 may learn it from the
	// leader's first append): poll for it.
	require.Eventually(t, func() bool {
		voters, _ := suffrages(t, nodes[0])
		return slices.Equal([]string{"m0", "m1", "m3"}, voters)
	}, 10*time.Second, 10*time.Millisecond, "m0's configuration lists m0, m1, m3 as voters")
}

func TestJoinNeverBootstrapsAlone(t *testing.T) {
	cl := newCluster(t)
	cfg := cl.config("joiner")
	cfg.Join = true
	n := cl.start(cfg)
	require.Equal(t, consensus.BootstrapJoin, n.c.Stats()["bootstrap"])
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := n.c.Apply(ctx, mustEncode(t, host("h")))
	require.ErrorIs(t, err, consensus.ErrNoLeader)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, n.c.IsLeader())
	servers, err := n.c.Servers()
	require.NoError(t, err)
	require.Empty(t, servers)
	require.ErrorIs(t, n.c.Barrier(context.Background()), consensus.ErrNotLeader)

	// A write issued while there is no leader is held, then lands once a
	// leader appears and adds this server.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := n.c.Apply(ctx, mustEncode(t, host("held")))
		done <- err
	}()
	seed := cl.start(cl.config("seed"))
	require.NoError(t, <-done)
	waitHost(t, "held", n, seed)
}

func TestSixNodesNonVotersLeftAndReaped(t *testing.T) {
	cl := newCluster(t)
	names := ids("s", 6)
	cl.start(cl.config(names[0]))
	cl.waitLeader()
	for _, id := range names[1:] {
		cfg := cl.config(id)
		cfg.Join = true
		cl.start(cfg)
	}
	leader := cl.waitLeader()
	require.Eventually(t, func() bool {
		voters, nonvoters := suffrages(t, leader)
		return len(voters) == 5 && len(nonvoters) == 1
	}, 20*time.Second, 20*time.Millisecond)
	_, nonvoters := suffrages(t, leader)
	nv := cl.nodes[nonvoters[0]]
	// A non-voter runs with longer timeouts (the leader heartbeats it
	// less often); voters keep the profile's.
	ht := leader.c.HeartbeatTimeout()
	require.Eventually(t, func() bool { return nv.c.HeartbeatTimeout() > 2*ht }, 10*time.Second, 20*time.Millisecond)

	// The non-voter replicates and forwards writes.
	apply(t, nv, host("via-nonvoter"))
	waitHost(t, "via-nonvoter", cl.running()...)
	require.Eventually(t, func() bool { return len(nv.fsm.Nodes()) == 6 }, 10*time.Second, 10*time.Millisecond)

	// A voter leaves: removed from raft, marked left, the non-voter promoted.
	var leaving string
	voters, _ := suffrages(t, leader)
	for _, v := range voters {
		if v != leader.id {
			leaving = v
			break
		}
	}
	cl.setState(leaving, consensus.MemberLeft)
	require.Eventually(t, func() bool {
		voters, nonvoters := suffrages(t, leader)
		n, ok := leader.fsm.Node(leaving)
		return len(voters) == 5 && len(nonvoters) == 0 && !contains(voters, leaving) &&
			contains(voters, nv.id) && ok && n.State == fsm.NodeLeft
	}, 20*time.Second, 20*time.Millisecond)
	// Promoted: back to a voter's timeouts.
	require.Eventually(t, func() bool { return nv.c.HeartbeatTimeout() == ht }, 10*time.Second, 20*time.Millisecond)

	// Gossip forgets it: the registry drops it.
	cl.stop(leaving)
	cl.forget(leaving)
	require.Eventually(t, func() bool {
		_, ok := leader.fsm.Node(leaving)
		return !ok
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, leader.fsm.Nodes(), 5)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestLeaveTransfersAndRemoves(t *testing.T) {
	cl := newCluster(t)
	names := ids("l", 3)
	for _, id := range names {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cl.start(cfg)
	}
	leader := cl.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(t, leader.c.Leave(ctx))
	require.False(t, leader.c.IsLeader())
	var other *testNode
	for _, n := range cl.running() {
		if n != leader {
			other = n
		}
	}
	require.Eventually(t, func() bool {
		voters, _ := suffrages(t, other)
		return len(voters) == 2 && !contains(voters, leader.id)
	}, 10*time.Second, 20*time.Millisecond)
	// The leader does not re-add it although gossip still says alive.
	cl.kick()
	cl.stop(leader.id)
	cl.setState(leader.id, consensus.MemberLeft)
	newLeader := cl.waitLeader()
	apply(t, newLeader, host("after-leave"))
	voters, _ := suffrages(t, newLeader)
	require.Len(t, voters, 2)
}

func TestLeadershipSubscription(t *testing.T) {
	cl := newCluster(t)
	for _, id := range ids("sub", 3) {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cl.start(cfg)
	}
	leader := cl.waitLeader()
	f := cl.followers(leader)[0]
	require.Eventually(t, func() bool { return f.c.LeaderChanges() >= 1 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		return leader.c.State() == "Leader" && f.c.State() == "Follower" && f.c.Stats()["leader_id"] == leader.id
	}, 10*time.Second, 10*time.Millisecond)

	ch, cancel := f.c.SubscribeLeadership()
	defer cancel()
	before := f.c.LeaderChanges()
	cl.stop(leader.id)
	next := cl.waitLeader()
	timeout := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case ev := <-ch: // "" events mark the interregnum
			if ev.LeaderID == next.id {
				require.Equal(t, next.id == f.id, ev.IsLeader)
				got = true
			}
		case <-timeout:
			t.Fatal("no leadership event for the new leader")
		}
	}
	require.Eventually(t, func() bool { return f.c.LeaderChanges() > before }, 10*time.Second, 10*time.Millisecond)

	cl.stop(f.id)
	for range ch { // closed by Close
	}
	_, err := f.c.Servers()
	require.True(t, errors.Is(err, consensus.ErrClosed))
}

// A fresh server configured with the same bootstrap-expect as a running
// cluster must not bootstrap a second cluster: its peers report existing
// state, so it waits and is added by the leader.
func TestLateExpectServerJoinsExistingCluster(t *testing.T) {
	cl := newCluster(t)
	for _, id := range ids("e", 3) {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cl.start(cfg)
	}
	leader := cl.waitLeader()
	apply(t, leader, host("before-late"))

	cfg := cl.config("e9")
	cfg.BootstrapExpect = 3
	late := cl.start(cfg)
	require.Eventually(t, func() bool {
		return late.c.BootstrapState() == consensus.BootstrapJoinedExisting
	}, 10*time.Second, 10*time.Millisecond)
	waitHost(t, "before-late", late)
	require.Eventually(t, func() bool {
		voters, _ := suffrages(t, leader)
		return len(voters) == 4 && contains(voters, "e9")
	}, 10*time.Second, 10*time.Millisecond)
	cl.waitLeader()
}

// A member announced in gossip before its raft server runs is added as a
// voter at once; the one-voter cluster that became two cannot commit until
// the new server is up, and then recovers by itself.
func TestVoterAddedBeforeItsRaftRuns(t *testing.T) {
	cl := newCluster(t)
	a := cl.start(cl.config("r0"))
	cl.waitLeader()
	cl.members.Set(consensus.Member{ID: "r1", Name: "name-r1", State: consensus.MemberAlive})
	a.c.MembershipChanged()
	require.Eventually(t, func() bool {
		voters, _ := suffrages(t, a)
		return contains(voters, "r1")
	}, 10*time.Second, 10*time.Millisecond)

	cfg := cl.config("r1")
	cfg.Join = true
	b := cl.start(cfg)
	leader := cl.waitLeader()
	apply(t, b, host("recovered"))
	waitHost(t, "recovered", a, b)
	voters, _ := suffrages(t, leader)
	require.Equal(t, []string{"r0", "r1"}, voters)
}

// The forward protocol refuses a request to remove another server when the
// connection knows who the caller is (consensustest conns do, as libp2p
// streams do).
func TestRemoveRequestOnlyForCaller(t *testing.T) {
	cl := newCluster(t)
	for _, id := range ids("v", 3) {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cl.start(cfg)
	}
	leader := cl.waitLeader()
	victim := cl.followers(leader)[0].id

	outsider, err := cl.reg.Listen("outsider")
	require.NoError(t, err)
	defer outsider.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := outsider.Dial(ctx, leader.id, consensus.ConnForward)
	require.NoError(t, err)
	defer conn.Close()
	req := append([]byte{0, 0, 0, 0, 3}, victim...)
	binary.BigEndian.PutUint32(req, uint32(1+len(victim)))
	_, err = conn.Write(req)
	require.NoError(t, err)
	var hdr [4]byte
	_, err = io.ReadFull(conn, hdr[:])
	require.NoError(t, err)
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err = io.ReadFull(conn, body)
	require.NoError(t, err)
	var resp struct{ Code, Message string }
	require.NoError(t, json.Unmarshal(body, &resp))
	require.Equal(t, "error", resp.Code)
	require.Contains(t, resp.Message, "only remove itself")

	voters, _ := suffrages(t, leader)
	require.Contains(t, voters, victim)
}

// TestWritesWithoutQuorumFailFast: on a server that lost the majority, a
// write fails with ErrNoQuorum once no leader has been reachable for
// NoLeaderTimeout (not when the caller's context ends), naming the
// unreachable voters.
func TestWritesWithoutQuorumFailFast(t *testing.T) {
	cl := newCluster(t)
	names := ids("q", 3)
	var wg sync.WaitGroup
	for _, id := range names {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cfg.NoLeaderTimeout = 2 * time.Second
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl.start(cfg)
		}()
	}
	wg.Wait()
	cl.kick()
	leader := cl.waitLeader()
	apply(t, leader, host("before"))
	survivor := cl.followers(leader)[0]
	for _, n := range cl.running() {
		if n != survivor {
			cl.stop(n.id)
		}
	}
	start := time.Now()
	_, err := survivor.c.Apply(context.Background(), mustEncode(t, host("after")))
	took := time.Since(start)
	require.ErrorIs(t, err, consensus.ErrNoQuorum)
	t.Logf("no quorum after %s: %v", took, err)
	require.Less(t, took, 30*time.Second, "bounded by NoLeaderTimeout plus the election timeouts, not the context")
	require.Contains(t, err.Error(), "2 of 3 voters unreachable")
	for _, id := range names {
		if id != survivor.id {
			require.Contains(t, err.Error(), "name-"+id)
		}
	}
}

// TestNoQuorumWhileGossipSeesVoters: when raft finds no leader although
// gossip sees a majority of the voters alive (their p2p port blocked,
// gossip fine), the no_quorum error says that raft's path fails instead
// of "0 of 3 voters unreachable ()".
func TestNoQuorumWhileGossipSeesVoters(t *testing.T) {
	cl := newCluster(t)
	names := ids("g", 3)
	var wg sync.WaitGroup
	for _, id := range names {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cfg.NoLeaderTimeout = 2 * time.Second
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl.start(cfg)
		}()
	}
	wg.Wait()
	cl.kick()
	leader := cl.waitLeader()
	apply(t, leader, host("before"))
	survivor := cl.followers(leader)[0]
	for _, n := range cl.running() {
		if n != survivor {
			cl.stop(n.id)
			cl.setState(n.id, consensus.MemberAlive) // gossip still sees it
		}
	}
	_, err := survivor.c.Apply(context.Background(), mustEncode(t, host("after")))
	require.ErrorIs(t, err, consensus.ErrNoQuorum)
	t.Logf("no quorum: %v", err)
	require.Contains(t, err.Error(), "gossip sees 3 of 3 voters alive")
	require.Contains(t, err.Error(), "p2p port")
	require.NotContains(t, err.Error(), "0 of 3 voters unreachable")
}

// TestCloseAnswersPendingWaits: barriers and writes in flight on a leader
// that closes all return (raft itself leaves a future unanswered when its
// entry was queued for the FSM at shutdown, hashicorp/raft#498). Before the
// fix a Barrier racing Close could block its caller forever.
func TestCloseAnswersPendingWaits(t *testing.T) {
	cl := newCluster(t)
	for round := range 5 {
		id := fmt.Sprintf("race%d", round)
		n := cl.start(cl.config(id))
		cl.waitLeader()
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					if w%2 == 0 {
						err = n.c.Barrier(context.Background())
					} else {
						_, err = n.c.Apply(context.Background(), mustEncode(t, host(fmt.Sprintf("w%d-%d", w, i))))
					}
					if errors.Is(err, consensus.ErrClosed) || errors.Is(err, consensus.ErrNotLeader) {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(20+round*7) * time.Millisecond) // let the writers fill raft's queues
		cl.stop(id)
		close(stop)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: a barrier or write did not return after Close", round)
		}
	}
}

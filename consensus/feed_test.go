package consensus_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/fsm"
)

// startReplicaCluster starts n servers that follow the registry by feed
// once the voters (maxVoters) are full, s0 bootstrapping, and waits until
// the leader's configuration holds only the voters.
func startReplicaCluster(t *testing.T, n, maxVoters int, tune func(*consensus.Config)) (*cluster, *testNode) {
	t.Helper()
	return startReplicas(t, newCluster(t), n, maxVoters, tune)
}

// startReplicas is startReplicaCluster on a cluster the caller made (to
// wrap its networks).
func startReplicas(t *testing.T, cl *cluster, n, maxVoters int, tune func(*consensus.Config)) (*cluster, *testNode) {
	t.Helper()
	cl.replicas = true
	names := ids("s", n)
	for i, id := range names {
		cfg := cl.config(id)
		cfg.MaxVoters = maxVoters
		cfg.Join = i > 0
		if tune != nil {
			tune(&cfg)
		}
		cl.start(cfg)
		if i == 0 {
			cl.waitLeader()
		}
	}
	leader := cl.waitLeader()
	require.Eventually(t, func() bool {
		voters, nonvoters := suffrages(t, leader)
		return len(voters) == maxVoters && len(nonvoters) == 0
	}, 20*time.Second, 20*time.Millisecond, "the leader's configuration holds the voters only")
	return cl, leader
}

// replicasOf returns the running servers outside the leader's configuration.
func replicasOf(t *testing.T, cl *cluster, leader *testNode) []*testNode {
	t.Helper()
	voters, _ := suffrages(t, leader)
	var out []*testNode
	for _, n := range cl.running() {
		if !contains(voters, n.id) {
			out = append(out, n)
		}
	}
	return out
}

func TestReplicasFollowByFeed(t *testing.T) {
	cl, leader := startReplicaCluster(t, 6, 3, nil)
	replicas := replicasOf(t, cl, leader)
	require.Len(t, replicas, 3)

	// Writes through the leader and through a replica reach every server.
	apply(t, leader, host("via-leader"))
	apply(t, replicas[0], host("via-replica"))
	waitHost(t, "via-leader", cl.running()...)
	waitHost(t, "via-replica", cl.running()...)
	voters, _ := suffrages(t, leader)
	for _, r := range replicas {
		require.Equal(t, leader.id, r.c.LeaderID())
		require.False(t, r.c.Stale(), "replica %s", r.id)
		// A voter learns the configuration from its log and reads it
		// every suffrageCheckEvery; its feed sends what it knows at least
		// every feedKeepalive: the replica's list catches up within
		// those.
		want := slices.Sorted(slices.Values(voters))
		listed := func() []string {
			servers, _ := r.c.Servers()
			var ids []string
			for _, s := range servers {
				ids = append(ids, s.ID)
			}
			slices.Sort(ids)
			return ids
		}
		ok := assert.Eventually(t, func() bool { return slices.Equal(want, listed()) }, 10*time.Second, 20*time.Millisecond)
		require.True(t, ok, "replica %s lists the voters its feed names: %v, want %v", r.id, listed(), want)
	}
	// The replicas move off the leader's feed to the other voters'.
	require.Eventually(t, func() bool {
		var fed int64
		for _, n := range cl.running() {
			fed += int64(n.c.FeedStats().Serving)
		}
		return fed == int64(len(replicas)) && int64(leader.c.FeedStats().Serving) == 0
	}, 30*time.Second, 50*time.Millisecond, "the leader feeds no replica")

	// A replica writes through the voter that feeds it, which relays to
	// the leader: the leader needs no connection to the replicas.
	relayed := func() (n int64) {
		for _, s := range cl.running() {
			n += s.c.FeedStats().Relayed
		}
		return n
	}
	before := relayed()
	for _, r := range replicas {
		apply(t, r, host("relayed-"+r.id))
	}
	require.GreaterOrEqual(t, relayed()-before, int64(len(replicas)), "every replica's write went through its voter")
	require.Zero(t, leader.c.FeedStats().Relayed, "the leader relays nothing")
	for _, r := range replicas {
		waitHost(t, "relayed-"+r.id, cl.running()...)
	}

	// The leader dies: the replicas learn the new one, their writes
	// commit, and a replica takes the dead voter's seat.
	cl.stop(leader.id)
	next := cl.waitLeader()
	require.NotEqual(t, leader.id, next.id)
	apply(t, replicas[1], host("after-failover"))
	waitHost(t, "after-failover", cl.running()...)
	cl.forget(leader.id) // gossip forgets it: reaped
	require.Eventually(t, func() bool {
		voters, nonvoters := suffrages(t, next)
		return len(voters) == 3 && len(nonvoters) == 0 && !contains(voters, leader.id)
	}, 20*time.Second, 20*time.Millisecond, "a replica is promoted into the dead voter's seat")
	voters, _ = suffrages(t, next)
	var promoted *testNode
	for _, r := range replicas {
		if contains(voters, r.id) {
			promoted = r
		}
	}
	require.NotNil(t, promoted)
	apply(t, next, host("after-promotion"))
	waitHost(t, "after-promotion", cl.running()...)
	require.Eventually(t, func() bool { return next.fsm.Index() == promoted.fsm.Index() }, 10*time.Second, 10*time.Millisecond)
}

func TestReplicaCatchesUpBySnapshot(t *testing.T) {
	cl, leader := startReplicaCluster(t, 4, 3, nil)
	for _, n := range cl.running() {
		consensus.SetFeedRing(n.c, 4)
	}
	replica := replicasOf(t, cl, leader)[0]
	apply(t, leader, host("before"))
	waitHost(t, "before", replica)
	before := replica.c.FeedStats().Snapshots

	// Away for more commands than the voters keep: back by snapshot.
	cfg := cl.config(replica.id)
	cfg.MaxVoters, cfg.Join = 3, true
	cl.stop(replica.id)
	for i := range 12 {
		apply(t, leader, host(fmt.Sprintf("away-%d", i)))
	}
	back := cl.start(cfg)
	for i := range 12 {
		waitHost(t, fmt.Sprintf("away-%d", i), back)
	}
	require.Greater(t, back.c.FeedStats().Snapshots, before)
	require.Eventually(t, func() bool { return leader.fsm.Index() == back.fsm.Index() }, 10*time.Second, 10*time.Millisecond)

	// Then by entries again.
	apply(t, leader, host("after"))
	waitHost(t, "after", back)
}

func TestReplicaStaleWithoutVoters(t *testing.T) {
	cl, leader := startReplicaCluster(t, 4, 3, nil)
	replica := replicasOf(t, cl, leader)[0]
	require.Eventually(t, func() bool { return !replica.c.Stale() }, 10*time.Second, 20*time.Millisecond)
	for _, n := range cl.running() {
		if n != replica {
			cl.stop(n.id)
		}
	}
	require.Eventually(t, replica.c.Stale, 20*time.Second, 50*time.Millisecond)
	require.Empty(t, replica.c.LeaderID())
}

// A voter away for longer than the reap grace is removed and its seat
// given to a replica; it never gets the entry that removed it, so its own
// configuration still names it a voter. Back, it follows the registry as a
// replica: the voters it asks leave it out of their list.
func TestReapedVoterComesBackAsReplica(t *testing.T) {
	cl, leader := startReplicaCluster(t, 4, 3, nil)
	voters, _ := suffrages(t, leader)
	var gone string
	for _, v := range voters {
		if v != leader.id {
			gone = v
			break
		}
	}
	cfg := cl.config(gone)
	cfg.MaxVoters, cfg.Join = 3, true
	cl.stop(gone)
	cl.forget(gone)
	require.Eventually(t, func() bool {
		voters, _ := suffrages(t, leader)
		return len(voters) == 3 && !contains(voters, gone)
	}, 20*time.Second, 20*time.Millisecond, "a replica takes the reaped voter's seat")
	apply(t, leader, host("while-away"))

	back := cl.start(cfg)
	apply(t, leader, host("after-return"))
	waitHost(t, "while-away", back)
	waitHost(t, "after-return", back)
	require.Eventually(t, func() bool {
		servers, err := back.c.Servers()
		if err != nil || len(servers) != 3 {
			return false
		}
		for _, s := range servers {
			if s.ID == gone {
				return false
			}
		}
		return back.c.LeaderID() == leader.id && !back.c.Stale() && back.c.Replica()
	}, 20*time.Second, 20*time.Millisecond, "back as a replica: %s", cl.leaderViews())
	require.Equal(t, int64(0), int64(back.c.FeedStats().Serving), "it serves no feed of its own")
}

// TestRelayedWriteOnceAfterLostAnswer: a replica's write goes through its
// voter, the leader commits it, and the leader's answer to the voter is
// lost. The voter answers "sent", the replica retries through it, and the
// registry applies the write once: a later write to the same entry stays.
func TestRelayedWriteOnceAfterLostAnswer(t *testing.T) {
	cl := newCluster(t)
	var nets lossyNets
	cl.wrap = nets.wrap
	cl, leader := startReplicas(t, cl, 4, 3, nil)
	apply(t, leader, fsm.SetRegistryVersion{Version: fsm.Version})
	replica := replicasOf(t, cl, leader)[0]
	waitVersion(t, replica, fsm.Version)
	var voter string
	require.Eventually(t, func() bool {
		voter = replica.c.FeedStats().Source
		return voter != "" && voter != leader.id
	}, 30*time.Second, 20*time.Millisecond, "the replica moves off the leader's feed")

	// The voter's forward to the leader loses its answer.
	lossy := nets.get(voter)
	done := applyLosingAnswer(t, replica, lossy)
	first, ok := leader.fsm.Host("h")
	require.True(t, ok, "the leader applied the write before answering")
	require.Equal(t, 1, first.Port)
	firstIndex := leader.fsm.Index()
	apply(t, leader, hostPort("h", 2))
	close(lossy.release)

	o := awaitOutcome(t, done)
	require.NoError(t, o.err)
	require.Equal(t, firstIndex, o.res.(fsm.Result).Index, "the retry answers with the first attempt's Result")
	for _, n := range cl.running() {
		if n.id == voter {
			require.Positive(t, n.c.FeedStats().Relayed, "the retry went through the voter")
		}
	}
	require.NoError(t, leader.c.Barrier(context.Background()))
	h, _ := leader.fsm.Host("h")
	require.Equal(t, 2, h.Port, "the write applied once")
}

// TestReplicasReturnToTheirVoter: replicas spread over the voters by a
// hash, the leader last. When a voter is away its replicas follow
// another; once it is back they return to it, so that no voter is left
// feeding the share of two (at 100 nodes one fed 80 replicas after an
// early leader change).
func TestReplicasReturnToTheirVoter(t *testing.T) {
	tune := func(cfg *consensus.Config) {
		cfg.FeedRebalance = 300 * time.Millisecond
		cfg.ReapGrace = time.Hour // the voter comes back to its seat
	}
	cl, leader := startReplicaCluster(t, 8, 3, tune)
	replicas := replicasOf(t, cl, leader)
	onTheirVoter := func() bool {
		for _, r := range replicas {
			if src := r.c.FeedStats().Source; src == "" || src != consensus.PreferredVoter(r.c) {
				return false
			}
		}
		return true
	}
	require.Eventually(t, onTheirVoter, 30*time.Second, 50*time.Millisecond, "every replica on its first voter")

	// A voter that some replica prefers goes away.
	var away string
	for _, r := range replicas {
		if v := consensus.PreferredVoter(r.c); v != leader.id {
			away = v
			break
		}
	}
	require.NotEmpty(t, away)
	cl.stop(away)
	require.Eventually(t, func() bool {
		for _, r := range replicas {
			if src := r.c.FeedStats().Source; src == "" || src == away {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "the away voter's replicas follow another")

	cfg := cl.config(away)
	cfg.MaxVoters, cfg.Join = 3, true
	tune(&cfg)
	cl.start(cfg)
	require.Eventually(t, onTheirVoter, 30*time.Second, 50*time.Millisecond, "the replicas return to the voter that is back")
	fed := 0
	for _, r := range replicas {
		if r.c.FeedStats().Source == away {
			fed++
		}
	}
	require.Positive(t, fed)
}

package consensus_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
)

// A server restarted while the others are down serves the registry it last
// knew (newest snapshot plus the committed log after it) as soon as Start
// returns, marked stale; once a quorum is back it catches up without
// applying anything twice and snapshots again.
func TestRestartWithoutQuorumServesLastRegistry(t *testing.T) {
	cl := newCluster(t)
	names := ids("r", 3)
	cfgs := map[string]consensus.Config{}
	for _, id := range names {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cfgs[id] = cfg
	}
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
	apply(t, leader, host("before-snapshot"))
	waitHost(t, "before-snapshot", cl.running()...)
	for _, n := range cl.running() {
		require.NoError(t, n.c.Snapshot())
	}
	for i := 0; i < 5; i++ {
		apply(t, leader, host(fmt.Sprintf("after-snapshot-%d", i)))
	}
	waitHost(t, "after-snapshot-4", cl.running()...)
	target := cl.followers(leader)[0]
	want := target.fsm.Index()
	require.NotZero(t, want)

	for _, n := range cl.running() {
		if n != target {
			cl.stop(n.id)
		}
	}
	cl.stop(target.id)

	start := time.Now()
	n := cl.start(cfgs[target.id])
	elapsed := time.Since(start)
	// Served at once: nothing waits for a leader.
	for _, h := range []string{"before-snapshot", "after-snapshot-0", "after-snapshot-4"} {
		_, ok := n.fsm.Host(h)
		require.True(t, ok, "host %s missing right after restart", h)
	}
	require.Equal(t, want, n.fsm.Index())
	require.True(t, n.c.Stale())
	lc := n.c.LastLeaderContact()
	require.False(t, lc.IsZero(), "last leader contact survives the restart")
	require.WithinDuration(t, start, lc, time.Minute)
	t.Logf("registry at index %d served %v after the restart began", want, elapsed)

	// The others come back: one cluster again, nothing applied twice, new
	// writes land and snapshots work again.
	for _, id := range names {
		if id != target.id {
			cl.start(cfgs[id])
		}
	}
	leader = cl.waitLeader()
	apply(t, leader, host("after-restart"))
	waitHost(t, "after-restart", cl.running()...)
	require.Eventually(t, func() bool { return !n.c.Stale() }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, n.c.Snapshot())
	ref := leader.fsm.State()
	require.Eventually(t, func() bool { return n.fsm.Index() == ref.Index() }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, len(leader.fsm.Hosts()), len(n.fsm.Hosts()))
}

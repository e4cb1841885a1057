package consensus_test

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
)

// startThree starts a three-server cluster (ids prefix-0…2, bootstrap
// expecting 3) and returns it with its ids, configs and leader.
func startThree(t *testing.T, prefix string) (*cluster, []string, map[string]consensus.Config, *testNode) {
	cl := newCluster(t)
	names := ids(prefix, 3)
	cfgs := map[string]consensus.Config{}
	for _, id := range names {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cfgs[id] = cfg
	}
	var wg sync.WaitGroup
	for _, id := range names {
		wg.Add(1)
		go func() { defer wg.Done(); cl.start(cfgs[id]) }()
	}
	wg.Wait()
	cl.kick()
	return cl, names, cfgs, cl.waitLeader()
}

// A server restarted while the others are down serves the registry it last
// knew (newest snapshot plus the committed log after it) as soon as Start
// returns, marked stale; once a quorum is back it catches up without
// applying anything twice and snapshots again.
func TestRestartWithoutQuorumServesLastRegistry(t *testing.T) {
	cl, names, cfgs, leader := startThree(t, "r")
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

// A server killed before the stable store's applied index caught up (it is
// written at most every persistInterval) still serves every
// change it applied at restart, from the applied hint written after each
// apply; a hint that is missing, damaged or names another entry (term)
// is ignored and the registry is the one the stable store vouches for.
func TestRestartReplaysFromAppliedHint(t *testing.T) {
	for _, tc := range []struct {
		name string
		hint func(t *testing.T, dir string, index, term uint64)
		all  bool // every change served, not only the snapshot's
	}{
		{"intact", func(*testing.T, string, uint64, uint64) {}, true},
		{"missing", func(t *testing.T, dir string, _, _ uint64) {
			require.NoError(t, os.Remove(consensus.AppliedHintPath(dir)))
		}, false},
		{"damaged", func(t *testing.T, dir string, _, _ uint64) {
			b, err := os.ReadFile(consensus.AppliedHintPath(dir))
			require.NoError(t, err)
			b[3] ^= 0x40
			require.NoError(t, os.WriteFile(consensus.AppliedHintPath(dir), b, 0o600))
		}, false},
		{"other term", func(t *testing.T, dir string, index, term uint64) {
			require.NoError(t, consensus.WriteAppliedHint(dir, index, term+1))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, _, cfgs, leader := startThree(t, "h")
			apply(t, leader, host("snapshotted"))
			waitHost(t, "snapshotted", cl.running()...)
			for _, n := range cl.running() {
				require.NoError(t, n.c.Snapshot())
			}
			target := cl.followers(leader)[0]
			atSnapshot := target.fsm.Index()
			for i := range 3 {
				apply(t, leader, host(fmt.Sprintf("later-%d", i)))
			}
			waitHost(t, "later-2", cl.running()...)
			want := target.fsm.Index()
			for _, n := range cl.running() {
				cl.stop(n.id)
			}
			dir := cfgs[target.id].DataDir
			hi, term, err := consensus.ReadAppliedHint(dir)
			require.NoError(t, err)
			require.Equal(t, want, hi, "the hint names the last entry applied")
			// As a crash right after the changes leaves it: the stable
			// store still at the snapshot.
			require.NoError(t, consensus.SetPersistedApplied(dir, atSnapshot))
			tc.hint(t, dir, hi, term)

			n := cl.start(cfgs[target.id])
			_, later := n.fsm.Host("later-2")
			_, snap := n.fsm.Host("snapshotted")
			require.True(t, snap)
			if tc.all {
				require.True(t, later, "a change after the stable store's index is served at once")
				require.Equal(t, want, n.fsm.Index())
			} else {
				require.False(t, later, "a hint that does not hold is not trusted")
				require.Equal(t, atSnapshot, n.fsm.Index())
			}
		})
	}
}

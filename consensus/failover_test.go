package consensus_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
)

// TestLANFailoverTime measures, with the production "lan" timings, how long
// the survivors of a 3-server cluster take to agree on a new leader after
// the leader stops. It logs the numbers (no timing assertion: the machine
// may be loaded); the DESIGN.md figures come from here.
func TestLANFailoverTime(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	cl := newCluster(t)
	cfgs := map[string]consensus.Config{}
	for _, id := range ids("lan", 3) {
		cfg := cl.config(id)
		cfg.Profile = consensus.ProfileLAN
		cfg.BootstrapExpect = 3
		cfgs[id] = cfg
		cl.start(cfg)
	}
	leader := cl.waitLeader()
	const rounds = 3
	var total time.Duration
	for i := 0; i < rounds; i++ {
		old := leader.id
		start := time.Now()
		cl.stop(old)
		leader = cl.waitLeader()
		took := time.Since(start)
		total += took
		require.NotEqual(t, old, leader.id)
		t.Logf("round %d: new leader %s after %v", i+1, leader.id, took.Round(time.Millisecond))
		apply(t, leader, host("round"))
		cl.setState(old, consensus.MemberAlive)
		back := cl.start(cfgs[old])
		waitHost(t, "round", back)
	}
	t.Logf("mean failover %v over %d rounds", (total / rounds).Round(time.Millisecond), rounds)
}

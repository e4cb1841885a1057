package gossip

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSettleFor(t *testing.T) {
	for _, tc := range []struct {
		name          string
		base, minWin  time.Duration
		n             int
		exchange      uint64
		every, window time.Duration
	}{
		{"off", 0, settleWindowLAN, 100, 0, 0, 0},
		{"lan small", settleBaseLAN, settleWindowLAN, 3, 0, 2 * time.Second, 30 * time.Second},
		{"lan 100: under the byte budget", settleBaseLAN, settleWindowLAN, 100, 0, 2 * time.Second, 30 * time.Second},
		{"lan 1000: stretched", settleBaseLAN, settleWindowLAN, 1000, 0, time.Duration(2*1000*settleStateBytes) * time.Second / settleBytesPerSec, 3 * time.Duration(2*1000*settleStateBytes) * time.Second / settleBytesPerSec},
		// 100 members whose last exchange sent 64 KB (metadata and load
		// reports): stretched by what was measured, not the estimate.
		{"lan 100: measured exchange", settleBaseLAN, settleWindowLAN, 100, 64000, 128000 * time.Second / settleBytesPerSec, settleWindowLAN},
		{"local", settleBaseLocal, settleWindowLocal, 10, 0, 500 * time.Millisecond, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := settleFor(tc.base, tc.minWin, tc.n, tc.exchange)
			require.Equal(t, tc.every, st.every)
			require.Equal(t, tc.window, st.window)
			if tc.every > 0 {
				// Bytes a member sends and receives settling stay under the budget
				// once the interval is stretched.
				perSec := float64(2*max(uint64(tc.n*settleStateBytes), tc.exchange)) / st.every.Seconds()
				require.LessOrEqual(t, perSec, float64(settleBytesPerSec)*1.01)
			}
		})
	}
}

func TestSettleDue(t *testing.T) {
	st := settleTiming{every: 2 * time.Second, window: 30 * time.Second}
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name  string
		st    settleTiming
		after time.Duration
		due   bool
	}{
		{"just changed", st, 0, true},
		{"within the window", st, 29 * time.Second, true},
		{"at the window's end", st, 30 * time.Second, true},
		{"quiet since", st, 31 * time.Second, false},
		{"off", settleTiming{}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.due, tc.st.due(t0.Add(tc.after), t0))
		})
	}
}

// TestSettlingAfterJoin: members that saw a join exchange state with a
// peer on their own, and Close ends the loop.
func TestSettlingAfterJoin(t *testing.T) {
	gs := cluster(t, "a", "b", "c")
	for _, g := range gs {
		require.Eventually(t, func() bool { return g.settles.Load() > 0 }, waitFor, tick, "%s never settled", g.LocalMember().ID)
	}
	for _, g := range gs {
		require.NoError(t, g.Close())
	}
	for _, g := range gs {
		require.Eventually(t, func() bool {
			select {
			case <-g.settled:
				return true
			default:
				return false
			}
		}, waitFor, tick, "settle loop still running after Close")
	}
}

// TimeScale slows every timing of the profile, settling included, and
// leaves counts and multipliers alone.
func TestTimeScale(t *testing.T) {
	newG := func(k float64) *Gossip {
		cfg := DefaultConfig()
		cfg.NodeID = "m"
		cfg.Secret = []byte("s")
		cfg.TimeScale = k
		g, err := New(cfg)
		require.NoError(t, err)
		return g
	}
	base, slow := newG(0), newG(10)
	require.Equal(t, newG(1).mlCfg.ProbeInterval, base.mlCfg.ProbeInterval)
	for name, d := range map[string][2]time.Duration{
		"probe interval": {base.mlCfg.ProbeInterval, slow.mlCfg.ProbeInterval},
		"probe timeout":  {base.mlCfg.ProbeTimeout, slow.mlCfg.ProbeTimeout},
		"gossip":         {base.mlCfg.GossipInterval, slow.mlCfg.GossipInterval},
		"push/pull":      {base.mlCfg.PushPullInterval, slow.mlCfg.PushPullInterval},
		"tcp timeout":    {base.mlCfg.TCPTimeout, slow.mlCfg.TCPTimeout},
		"settle every":   {base.settleTiming(0).every, slow.settleTiming(0).every},
		"settle window":  {base.settleTiming(0).window, slow.settleTiming(0).window},
		"settle budget":  {base.settleTiming(1 << 20).every, slow.settleTiming(1 << 20).every},
	} {
		require.Positive(t, d[0], name)
		require.Equal(t, 10*d[0], d[1], name)
	}
	require.Equal(t, base.mlCfg.RetransmitMult, slow.mlCfg.RetransmitMult)
	require.Equal(t, base.mlCfg.SuspicionMult, slow.mlCfg.SuspicionMult)
	require.Equal(t, base.mlCfg.GossipNodes, slow.mlCfg.GossipNodes)
}

package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// ProfileForSize returns the timing profile for a cluster of about n
// members: ProfileLAN for every n. memberlist's LAN defaults already
// scale with the member count where it matters (suspicion timeout ∝
// log10 n, retransmits ∝ log10 n, push/pull interval stretched above 32
// members), gossip's own settling interval is computed from n within the
// profile (settle.go), and what made convergence collapse past a few
// dozen members was not a timing (DESIGN.md, Scale). What the defaults do
// not give, the reach of a broadcast (about 12 members), needs relaying
// or deltas, not other timings.
func ProfileForSize(n int) string {
	_ = n
	return ProfileLAN
}

// scaleTimings multiplies every timing of mc by k (Config.TimeScale):
// intervals, timeouts and the windows derived from them. Multipliers
// (retransmits, suspicion) and counts stay, so the protocol runs the same
// rounds, k times slower.
func scaleTimings(mc *memberlist.Config, k float64) {
	for _, d := range []*time.Duration{
		&mc.ProbeInterval, &mc.ProbeTimeout, &mc.GossipInterval,
		&mc.PushPullInterval, &mc.TCPTimeout, &mc.GossipToTheDeadTime,
		&mc.DeadNodeReclaimTime, &mc.QueueCheckInterval,
	} {
		*d = scaleDuration(*d, k)
	}
}

// scaleDuration returns d×k.
func scaleDuration(d time.Duration, k float64) time.Duration {
	return time.Duration(float64(d) * k)
}

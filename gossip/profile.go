package gossip

// ProfileForSize returns the timing profile for a cluster of about n
// members. memberlist's LAN defaults already scale with the member count
// where it matters (suspicion timeout ∝ log10 n, retransmits ∝ log10 n,
// push/pull interval stretched above 32 members), and the in-process
// simulation (TestScaleSimulation, figures in DESIGN.md) found them
// fitting to 300 members: idle traffic per member flat, load-report
// traffic bounded by the retransmit limit. So ProfileLAN; what the
// defaults do not give, the reach of a broadcast (about 12 members),
// needs relaying or deltas, not other timings.
func ProfileForSize(n int) string {
	_ = n
	return ProfileLAN
}

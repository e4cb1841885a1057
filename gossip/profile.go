package gossip

// ProfileForSize returns the timing profile for a cluster of about n
// members. memberlist's LAN defaults already scale with the member count
// where it matters (suspicion timeout ∝ log10 n, retransmits ∝ log10 n,
// push/pull interval × (log2 n − 5) above 32 members), and the in-process
// simulation to 1,000 members (TestScaleSimulation, figures in DESIGN.md)
// found them fitting: ProfileLAN for every size measured.
func ProfileForSize(n int) string {
	_ = n
	return ProfileLAN
}

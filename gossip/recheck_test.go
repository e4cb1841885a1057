package gossip

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSuspectRecheckedAlive: a member suspect here that answers is alive
// again after a recheck, without waiting for memberlist's next probe of
// it in turn. (memberlist's own probe may clear it between the two steps:
// then the next attempt.)
func TestSuspectRecheckedAlive(t *testing.T) {
	gs := cluster(t, "a", "b", "c")
	a := gs[0]
	require.Eventually(t, func() bool {
		a.table.suspect("c")
		n, err := a.recheckOnce(context.Background())
		require.NoError(t, err)
		return n == 1
	}, waitFor, tick, "c stays suspect")
	st, ok := stateOf(a, "c")
	require.True(t, ok)
	require.Equal(t, StateAlive, st)
}

// TestRecheckLeavesDeadSuspect: a suspect that does not answer stays
// suspect (memberlist declares it dead in time).
func TestRecheckLeavesDeadSuspect(t *testing.T) {
	gs := cluster(t, "a", "b")
	a := gs[0]
	require.NoError(t, gs[1].Close())
	if !a.table.suspect("b") {
		t.Skip("b already declared dead") // nothing to recheck
	}
	n, err := a.recheckOnce(context.Background())
	require.NoError(t, err)
	require.Zero(t, n)
}

package node

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNarrateEvery: a long wait (a spawn whose engine loads for minutes)
// is narrated every interval with the time waited; after stop returns
// nothing more is said, and a cancelled context ends it too.
func TestNarrateEvery(t *testing.T) {
	var calls atomic.Int32
	var last atomic.Int64
	stop := narrateEvery(context.Background(), 10*time.Millisecond, func(waited time.Duration) {
		calls.Add(1)
		last.Store(int64(waited))
	})
	require.Eventually(t, func() bool { return calls.Load() >= 3 }, 10*time.Second, 5*time.Millisecond)
	stop()
	n := calls.Load()
	require.GreaterOrEqual(t, time.Duration(last.Load()), 30*time.Millisecond, "the time waited so far")
	stop() // twice is fine; stop returned once the goroutine ended
	require.Equal(t, n, calls.Load(), "nothing said after stop")

	ctx, cancel := context.WithCancel(context.Background())
	var after atomic.Int32
	stop = narrateEvery(ctx, 10*time.Millisecond, func(time.Duration) { after.Add(1) })
	cancel()
	stop() // returns: the goroutine ended with ctx
}

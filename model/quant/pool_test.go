package quant

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPoolHandOffs runs jobs through every hand-off path: workers found
// polling, workers parked (no spin at all), jobs that leave some workers
// out, pauses that outlast the spin, and Close with workers in each state.
// Every job must cover its range exactly once and Run must not return
// before its last worker is done.
func TestPoolHandOffs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spin  time.Duration
		pause time.Duration // between jobs, now and then
	}{
		{"polling", spinFor, 0},
		{"parked", 0, 0},
		{"parked after a pause", 0, 300 * time.Microsecond},
		{"polling then parked", 50 * time.Microsecond, 200 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			p := newPool(4, tc.spin)
			for i := range 400 {
				used, n := 1+i%4, 1+i%37
				c := &countTask{hits: make([]atomic.Int32, n)}
				var running atomic.Int32
				p.mu.Lock()
				p.runLockedN(n, used, i%3, funcTask(func(w, s, e int) {
					running.Add(1)
					if w > 0 && i%5 == 0 {
						time.Sleep(20 * time.Microsecond) // a late worker
					}
					c.run(w, s, e)
					running.Add(-1)
				}))
				p.mu.Unlock()
				require.Zero(t, running.Load(), "job %d returned with a worker still running", i)
				for k := range c.hits {
					require.EqualValues(t, 1, c.hits[k].Load(), "job %d (%d workers) index %d", i, used, k)
				}
				if tc.pause > 0 && i%50 == 0 {
					time.Sleep(tc.pause)
				}
			}
			p.Close()
			p.Close()
			// Not require.Eventually: its ticker is a goroutine of its own.
			for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > base; {
				require.True(t, time.Now().Before(deadline), "the workers did not stop")
				time.Sleep(time.Millisecond)
			}
		})
	}
}

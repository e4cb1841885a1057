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

// TestPoolLateLastWorker: the last worker of a job is held up between its
// count and its wake-up of the caller, long enough for the caller (which
// polled the count to 0) to publish the next job and park. Its wake-up
// must not end the next job, which it has not run yet.
func TestPoolLateLastWorker(t *testing.T) {
	p := newPool(2, 500*time.Microsecond)
	defer p.Close()
	var late atomic.Bool
	p.afterLast = func() {
		if late.CompareAndSwap(true, false) {
			time.Sleep(3 * time.Millisecond) // past the caller's next poll
		}
	}
	for i := range 40 {
		late.Store(i%2 == 0)
		work := 100 * time.Microsecond // within the caller's poll: it sees the count reach 0
		if i%2 == 1 {
			work = time.Millisecond // visibly unfinished if the caller wakes early
		}
		const n = 64
		c := &countTask{hits: make([]atomic.Int32, n)}
		p.mu.Lock()
		p.runLockedN(n, 2, 0, funcTask(func(w, s, e int) {
			if w > 0 {
				time.Sleep(work)
			}
			c.run(w, s, e)
		}))
		p.mu.Unlock()
		for k := range c.hits {
			require.EqualValues(t, 1, c.hits[k].Load(), "job %d index %d", i, k)
		}
	}
}

// TestPoolLateWakeUp: the caller is held up between publishing a job and
// waking its workers, long enough for a worker to find the job by itself,
// run it and park again. The late wake-up must not make it run the job a
// second time.
func TestPoolLateWakeUp(t *testing.T) {
	p := newPool(2, 0)
	defer p.Close()
	var late atomic.Bool
	p.beforeWake = func() {
		if late.Load() {
			time.Sleep(2 * time.Millisecond) // the worker runs the job and parks
		}
	}
	for i := range 40 {
		late.Store(i%2 == 0)
		const n = 64
		c := &countTask{hits: make([]atomic.Int32, n)}
		p.mu.Lock()
		p.runLockedN(n, 2, 0, c)
		p.mu.Unlock()
		time.Sleep(200 * time.Microsecond) // a second run would show here
		for k := range c.hits {
			require.EqualValues(t, 1, c.hits[k].Load(), "job %d index %d", i, k)
		}
	}
}

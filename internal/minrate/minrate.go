// Package minrate ends a transfer that moves too few bytes. An idle timer
// restarted by every byte never fires for a source that sends a byte every
// few seconds; a minimum over a window does.
package minrate

import (
	"sync/atomic"
	"time"
)

const (
	// DefaultWindow and DefaultMinBytes: fewer than 64 KiB in 30 s (about
	// 2 KiB/s) is slower than any link a download can usefully come over
	// (1 GiB would take six days), so such a source is as good as stalled
	// and a new request (another server, another peer) is cheap. 30 s
	// smooths over the pauses of a congested but working link.
	DefaultWindow   = 30 * time.Second
	DefaultMinBytes = 64 << 10
)

// Watch checks, every window, how many bytes the counter n grew by; the
// first time it grew by fewer than min it calls fail, from its own
// goroutine, with that number, and stops. stop ends the watch (fail is
// not called after stop returns, unless it had already started).
// min <= 0 watches nothing.
func Watch(n *atomic.Int64, min int64, window time.Duration, fail func(moved int64)) (stop func()) {
	if min <= 0 || window <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(window)
		defer tick.Stop()
		last := n.Load()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			now := n.Load()
			if now-last < min {
				select {
				case <-done:
				default:
					fail(now - last)
				}
				return
			}
			last = now
		}
	}()
	return func() { close(done) }
}

package worker

import (
	"context"
	"sync"
)

// minReusePrefix is the shortest cached prefix worth steering a request to
// a slot for: every prompt shares its first tokens (BOS, the chat
// template's header) with every other, and evicting another conversation's
// cache to save a handful of prompt tokens is a bad trade.
const minReusePrefix = 16

// slot is one concurrent generation: an engine session whose KV cache is
// reused from request to request.
type slot struct {
	id      int
	session Session
}

// slotPool hands out slots first come, first served. A request that finds
// every slot busy waits in a FIFO queue of bounded length; when the queue is
// full acquire fails at once with ErrQueueFull. A released slot goes straight
// to the oldest waiter, so waiters cannot be overtaken by newcomers.
//
// All methods are safe for concurrent use.
type slotPool struct {
	mu       sync.Mutex
	free     []*slot
	waiters  []chan *slot // FIFO; each has capacity 1
	maxQueue int
	total    int
}

func newSlotPool(slots []*slot, maxQueue int) *slotPool {
	return &slotPool{free: slots, maxQueue: maxQueue, total: len(slots)}
}

// acquire returns a free slot, waiting in the queue if needed. It returns
// ErrQueueFull when the queue is full, or ctx.Err() if ctx ends first.
func (p *slotPool) acquire(ctx context.Context) (*slot, error) { return p.acquireFor(ctx, nil) }

// acquireFor is acquire for a generation of prompt. Of the free slots it
// takes the one whose cache holds the longest prefix of prompt (earlier
// turns of the same chat: that prefix is not evaluated again), if that
// prefix is at least minReusePrefix tokens; otherwise the slot released
// longest ago, so that the caches of recent conversations live longest. A
// slot handed to a waiter is whichever was released.
func (p *slotPool) acquireFor(ctx context.Context, prompt []int32) (*slot, error) {
	p.mu.Lock()
	if len(p.free) > 0 && len(p.waiters) == 0 {
		best, bestN := 0, 0
		for i, s := range p.free {
			if len(prompt) == 0 {
				break
			}
			if n := s.session.CachedPrefix(prompt); n >= minReusePrefix && n > bestN {
				best, bestN = i, n
			}
		}
		s := p.free[best]
		p.free = append(p.free[:best], p.free[best+1:]...)
		p.mu.Unlock()
		return s, nil
	}
	if len(p.waiters) >= p.maxQueue {
		p.mu.Unlock()
		return nil, ErrQueueFull
	}
	ch := make(chan *slot, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()

	select {
	case s := <-ch:
		return s, nil
	case <-ctx.Done():
		p.mu.Lock()
		for i, w := range p.waiters {
			if w == ch {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				p.mu.Unlock()
				return nil, ctx.Err()
			}
		}
		p.mu.Unlock()
		// A release handed us a slot between ctx ending and the lock: pass it on.
		p.release(<-ch)
		return nil, ctx.Err()
	}
}

// release returns s to the pool or hands it to the oldest waiter.
func (p *slotPool) release(s *slot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		ch <- s
		return
	}
	p.free = append(p.free, s)
}

// stats reports the slots in use and the requests waiting.
func (p *slotPool) stats() (busy, queued int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total - len(p.free), len(p.waiters)
}

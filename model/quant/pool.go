package quant

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// task is what a Pool runs: run is called once per worker with a disjoint
// [start, end) range. Using an interface (implemented by pointer types the
// Pool owns) instead of a closure keeps MatMul free of per-call allocations.
type task interface {
	run(worker, start, end int)
}

type funcTask func(worker, start, end int)

func (f funcTask) run(worker, start, end int) { f(worker, start, end) }

// Pool is a fixed set of persistent worker goroutines that run parallel-for
// loops, plus per-worker scratch memory that MatMul reuses between calls.
//
// A Pool runs one Run/MatMul at a time: concurrent calls on the same Pool
// are serialised by an internal mutex. Use one Pool per concurrently running
// computation (for example one per inference session) to run them in parallel.
type Pool struct {
	threads int

	mu    sync.Mutex // serialises Run and MatMul callers
	start []chan struct{}
	wg    sync.WaitGroup

	// Current job, valid while mu is held and workers run.
	cur   task
	n     int
	used  int          // workers taking part in the current job
	chunk int          // > 0: workers take chunks of this size from next
	next  atomic.Int64 // next unclaimed index in chunked mode

	closeOnce sync.Once

	// Scratch owned by MatMul (guarded by mu).
	mm   matmulJob
	qj   quantJob
	xq   []byte                  // quantised activations
	outs [][4 * RowGroup]float32 // per-worker results of batch kernels (128 bytes each: no false sharing)
}

// NewPool starts a pool of threads workers (threads <= 0 means
// runtime.NumCPU()). The calling goroutine of Run counts as worker 0, so
// threads-1 goroutines are started. Close stops them.
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	p := &Pool{threads: threads, start: make([]chan struct{}, threads)}
	p.outs = make([][4 * RowGroup]float32, threads)
	for w := 1; w < threads; w++ {
		ch := make(chan struct{}, 1)
		p.start[w] = ch
		go p.worker(w, ch)
	}
	return p
}

// Threads returns the number of workers (including the caller of Run).
func (p *Pool) Threads() int { return p.threads }

// Close stops the worker goroutines. It must not be called concurrently with
// Run or MatMul; calling it twice is harmless. A closed Pool must not be used.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		for w := 1; w < p.threads; w++ {
			close(p.start[w])
		}
	})
}

func (p *Pool) worker(w int, ch chan struct{}) {
	for range ch {
		p.work(w)
		p.wg.Done()
	}
}

// work runs worker w's part of the current job: its static share, or in
// chunked mode chunks claimed from p.next until none are left.
func (p *Pool) work(w int) {
	if p.chunk == 0 {
		if s, e := split(p.n, p.used, w); s < e {
			p.cur.run(w, s, e)
		}
		return
	}
	c := int64(p.chunk)
	for {
		s := p.next.Add(c) - c
		if s >= int64(p.n) {
			return
		}
		p.cur.run(w, int(s), int(min(s+c, int64(p.n))))
	}
}

// split returns worker w's share [s, e) of n items over t workers.
func split(n, t, w int) (int, int) {
	return n * w / t, n * (w + 1) / t
}

// Run calls fn(worker, start, end) on the workers with disjoint, non-empty
// ranges that together cover [0, n), and returns when all calls have
// returned. fn must be safe to call concurrently with itself; worker is in
// [0, Threads()). fn must not call Run or MatMul on the same Pool (the Pool
// is busy until Run returns: that would deadlock).
func (p *Pool) Run(n int, fn func(worker, start, end int)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runLocked(n, funcTask(fn))
}

// runLocked runs t over [0, n) on all workers, one static share each;
// p.mu must be held.
func (p *Pool) runLocked(n int, t task) { p.runLockedN(n, p.threads, 0, t) }

// runLockedN runs t over [0, n) on at most used workers (the caller is
// worker 0 and the others are not woken); p.mu must be held. With chunk > 0
// the workers claim chunks of that many items dynamically, so a worker that
// the OS delays does not hold up the others; with chunk == 0 each worker
// gets one contiguous share.
func (p *Pool) runLockedN(n, used, chunk int, t task) {
	if n <= 0 {
		return
	}
	used = max(1, min(used, p.threads, n))
	if used == 1 {
		t.run(0, 0, n)
		return
	}
	p.cur, p.n, p.used, p.chunk = t, n, used, chunk
	p.next.Store(0)
	p.wg.Add(used - 1)
	for w := 1; w < used; w++ {
		p.start[w] <- struct{}{}
	}
	p.work(0)
	p.wg.Wait()
	p.cur = nil
}

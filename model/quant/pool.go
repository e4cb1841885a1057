package quant

import (
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
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
//
// Hand-offs spin before they sleep. A decode step is a chain of small
// parallel ops (a few to a hundred microseconds each); waking a parked
// goroutine, and parking the caller until the last worker is done, costs
// 5-50 µs each time on a busy machine, which made a second thread add
// nothing to generation. So a worker that finished a job polls for the next
// one for up to spinFor before it parks, and the caller polls for the
// workers to finish for as long before it parks; both yield their P
// (runtime.Gosched) while they poll, so other goroutines still run. An idle
// Pool costs nothing after spinFor.
type Pool struct {
	threads int
	spin    time.Duration // how long a hand-off polls before it parks

	mu sync.Mutex // serialises Run and MatMul callers

	// job is the current job's generation (high bits) and how many workers
	// take part in it (low jobUsedBits); workers poll it for a change.
	job     atomic.Uint64
	_       [56]byte      // job alone on its cache line: workers poll it
	left    atomic.Int32  // workers other than 0 that have not finished the job
	asleep  []atomic.Bool // worker w is parked (or about to park) on wake[w]
	wake    []chan struct{}
	waiting atomic.Uint64 // the job word the caller is parked (or about to park) on done for; 0: none
	done    chan struct{} // the last worker to finish wakes a parked caller
	closed  atomic.Bool
	// fault is the first memory fault a worker met in the current job
	// (see workGuarded); the caller panics with it once all are done.
	fault atomic.Pointer[runtime.Error]

	// Current job, valid while mu is held and workers run.
	cur   task
	n     int
	chunk int          // > 0: workers take chunks of this size from next
	next  atomic.Int64 // next unclaimed index in chunked mode

	closeOnce sync.Once

	// afterLast, when set (tests), runs on the worker that finished a job
	// last, between its count and its wake-up of the caller; beforeWake
	// runs on the caller between publishing a job and waking workers.
	afterLast, beforeWake func()

	// Scratch owned by MatMul (guarded by mu).
	mms   [MaxProducts]matmulJob
	multi multiJob
	qj    quantJob
	xq    [MaxProducts][]byte      // quantised activations, per product of MatMuls
	outs  [][16 * RowGroup]float32 // per-worker results of batch kernels (512 bytes each: no false sharing)
}

const (
	// spinFor is how long a hand-off polls before it parks: longer than
	// the gaps between the ops of one decode step (norms, attention set-up
	// and sampling run on the caller alone, tens of microseconds), shorter
	// than anything a user would see as a busy idle worker.
	spinFor = 200 * time.Microsecond
	// spinChecks is how many polls run between Gosched calls and clock
	// reads.
	spinChecks = 64
	// jobUsedBits holds the worker count of a job (a Pool has at most
	// 2^16-1 workers).
	jobUsedBits = 16
)

// NewPool starts a pool of threads workers (threads <= 0 means
// runtime.NumCPU()). The calling goroutine of Run counts as worker 0, so
// threads-1 goroutines are started. Close stops them.
func NewPool(threads int) *Pool { return newPool(threads, spinFor) }

// newPool is NewPool with hand-offs that poll for spin before they park.
func newPool(threads int, spin time.Duration) *Pool {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	threads = min(threads, 1<<jobUsedBits-1)
	p := &Pool{threads: threads, spin: spin, asleep: make([]atomic.Bool, threads),
		wake: make([]chan struct{}, threads), done: make(chan struct{}, 1)}
	p.outs = make([][16 * RowGroup]float32, threads)
	for w := 1; w < threads; w++ {
		p.wake[w] = make(chan struct{}, 1)
		go p.worker(w)
	}
	return p
}

// Threads returns the number of workers (including the caller of Run).
func (p *Pool) Threads() int { return p.threads }

// Close stops the worker goroutines. It must not be called concurrently with
// Run or MatMul; calling it twice is harmless. A closed Pool must not be used.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.job.Add(1 << jobUsedBits)
		for w := 1; w < p.threads; w++ {
			if p.asleep[w].CompareAndSwap(true, false) {
				p.wake[w] <- struct{}{}
			}
		}
	})
}

// worker runs the jobs it takes part in until the Pool is closed.
func (p *Pool) worker(w int) {
	// A read of a memory-mapped file that shrank faults (SIGBUS): make it
	// a panic that workGuarded recovers, not the end of the process.
	debug.SetPanicOnFault(true)
	var seen uint64 // the job word before the first job: the worker may start after it
	for {
		seen = p.awaitJob(w, seen)
		if p.closed.Load() {
			return
		}
		if w >= int(seen&(1<<jobUsedBits-1)) {
			continue // not part of this job
		}
		p.workGuarded(w)
		if p.left.Add(-1) == 0 {
			if p.afterLast != nil {
				p.afterLast()
			}
			// Only a caller waiting for this job: one that saw left reach
			// 0 may already have published the next job and be waiting
			// for that.
			if p.waiting.CompareAndSwap(seen, 0) {
				p.done <- struct{}{}
			}
		}
	}
}

// awaitJob returns the job word once it differs from seen: polling for up
// to p.spin, then parked on wake[w] until a caller sees it asleep. A
// caller's wake-up can come late: one that published a job, was held up
// before it looked at this worker, and found it asleep again after it had
// run that very job. Such a wake-up finds the word unchanged, and the
// worker waits again.
func (p *Pool) awaitJob(w int, seen uint64) uint64 {
	for {
		for s := (spinner{d: p.spin}); s.more(); {
			if j := p.job.Load(); j != seen {
				return j
			}
		}
		p.asleep[w].Store(true)
		if j := p.job.Load(); j != seen && p.asleep[w].CompareAndSwap(true, false) {
			return j // the job came before anyone saw this worker asleep
		}
		<-p.wake[w] // whoever cleared asleep sends (or has sent) exactly once
		if j := p.job.Load(); j != seen {
			return j
		}
	}
}

// awaitWorkers returns once every worker of job j is done.
func (p *Pool) awaitWorkers(j uint64) {
	for s := (spinner{d: p.spin}); s.more(); {
		if p.left.Load() == 0 {
			return
		}
	}
	p.waiting.Store(j)
	if p.left.Load() == 0 && p.waiting.CompareAndSwap(j, 0) {
		return
	}
	<-p.done // the last worker sends (or has sent) exactly once
}

// spinner bounds a polling loop: more reports whether to poll again,
// yielding the P and reading the clock every spinChecks polls, until d
// has passed since the first such read.
type spinner struct {
	d     time.Duration
	n     int
	start time.Time
}

func (s *spinner) more() bool {
	if s.n++; s.n%spinChecks != 0 {
		return true
	}
	if s.start.IsZero() {
		s.start = time.Now()
	} else if time.Since(s.start) >= s.d {
		return false
	}
	runtime.Gosched()
	return true
}

// work runs worker w's part of the current job: its static share, or in
// chunked mode chunks claimed from p.next until none are left.
func (p *Pool) work(w int) {
	if p.chunk == 0 {
		if s, e := split(p.n, int(p.job.Load()&(1<<jobUsedBits-1)), w); s < e {
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

// workGuarded is work that recovers a memory fault (a runtime.Error with
// an address: weights in a mapped file that was truncated under the
// process) and keeps the first one for the caller of the job; other panics
// go on.
func (p *Pool) workGuarded(w int) {
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(runtime.Error)
			if !ok || !IsFault(e) {
				panic(r)
			}
			p.fault.CompareAndSwap(nil, &e)
		}
	}()
	p.work(w)
}

// IsFault reports whether err, a value recovered from a panic, is a memory
// fault: a goroutine that called debug.SetPanicOnFault(true) read an
// address it may not, such as a page of a memory-mapped file past the
// file's end after the file was truncated. A Pool runs its jobs with
// faults turned into panics and re-panics on the caller of Run or MatMul
// with the first fault of the job, after every worker has finished it, so
// the Pool stays usable.
func IsFault(err any) bool {
	e, ok := err.(runtime.Error)
	if !ok {
		return false
	}
	_, ok = e.(interface{ Addr() uintptr })
	return ok
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
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	used = max(1, min(used, p.threads, n))
	if used == 1 {
		t.run(0, 0, n)
		return
	}
	p.cur, p.n, p.chunk = t, n, chunk
	p.next.Store(0)
	p.left.Store(int32(used - 1))
	j := (p.job.Load()>>jobUsedBits+1)<<jobUsedBits | uint64(used)
	p.job.Store(j)
	if p.beforeWake != nil {
		p.beforeWake()
	}
	for w := 1; w < used; w++ {
		if p.asleep[w].CompareAndSwap(true, false) {
			p.wake[w] <- struct{}{}
		}
	}
	p.workGuarded(0)
	p.awaitWorkers(j)
	p.cur = nil
	if f := p.fault.Swap(nil); f != nil {
		panic(*f)
	}
}

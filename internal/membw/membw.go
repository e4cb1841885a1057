// Package membw measures how fast a machine streams memory with one
// thread and with several at once, for benchmarks whose result depends on
// it.
//
// A sharded group's generation speed rests on memory bandwidth adding up
// across the shards' processes: each shard streams its share of the
// weights once per token. Whether it does depends on the machine at that
// moment, not on rbee: on the project's 2-vCPU VM, two threads streaming
// at once got 1.9–2.1× one thread's rate at times and 1.2–1.4× at others,
// minutes apart, in the same process (noisy neighbours or vCPU placement
// on the host), and 1.0–2.2× over ten probes a few seconds apart. `rbee
// bench shard` runs a Probe before each round and reports them beside the
// rounds' ratios: the spread says how far the machine itself moved during
// the run (it can move within a round, so a round and the probe before it
// need not agree).
package membw

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"
)

// DefaultBytes is each thread's buffer: twice the last level cache of
// the VM above (32 MiB), so that every pass reads memory, not cache,
// while the probe's threads together hold far less than a model's
// weights (a probe lives as long as the benchmark that runs it).
const DefaultBytes = 64 << 20

// minBytes: below this a pass is too short to time and may sit in cache.
const minBytes = 1 << 20

// ErrBadConfig: threads or bytes out of range.
var ErrBadConfig = errors.New("membw: threads must be 1 or more and bytes at least 1 MiB")

// Probe owns one buffer per thread; it is reused across measurements (a
// probe costs threads × bytes of memory for its lifetime). A Probe is not
// safe for concurrent use.
type Probe struct {
	bufs [][]uint64
}

// New returns a probe for up to threads threads, each streaming bytes
// (rounded down to 64 bytes). The buffers are written once here, so that
// every page is backed before anything is timed.
func New(threads, bytes int) (*Probe, error) {
	if threads < 1 || bytes < minBytes {
		return nil, ErrBadConfig
	}
	p := &Probe{bufs: make([][]uint64, threads)}
	for i := range p.bufs {
		b := make([]uint64, bytes/64*8)
		for j := range b {
			b[j] = uint64(j)
		}
		p.bufs[i] = b
	}
	return p, nil
}

// Result is one measurement.
type Result struct {
	Threads int `json:"threads"`
	// Bytes is what all threads read; each reads its whole buffer at
	// least once.
	Bytes int64 `json:"bytes"`
	// BytesPerSecond is all threads together.
	BytesPerSecond float64 `json:"bytes_per_second"`
}

// Measure streams with threads threads at once (at most the probe's) for
// about d and returns their total rate. Each is locked to an OS thread;
// they run at the same time only as far as GOMAXPROCS and the machine's
// cores allow, so threads beyond those measure shared CPU time, not
// memory. It returns early with ctx's error when ctx ends.
func (p *Probe) Measure(ctx context.Context, threads int, d time.Duration) (Result, error) {
	if threads < 1 || threads > len(p.bufs) {
		return Result{}, ErrBadConfig
	}
	type out struct {
		bytes int64
		took  time.Duration
		sum   uint64 // what was read, kept so that the reads are not optimised away
	}
	outs := make([]out, threads)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < threads; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b := p.bufs[i]
			<-start
			t0 := time.Now()
			var n int64
			var sum uint64
			for n == 0 || time.Since(t0) < d && ctx.Err() == nil {
				sum ^= xorAll(b)
				n += int64(len(b)) * 8
			}
			outs[i] = out{n, time.Since(t0), sum}
		}(i)
	}
	close(start)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	r := Result{Threads: threads}
	for _, o := range outs {
		r.Bytes += o.bytes
		if o.took > 0 {
			r.BytesPerSecond += float64(o.bytes) / o.took.Seconds()
		}
	}
	return r, nil
}

// Scaling compares a few threads streaming at once with more.
type Scaling struct {
	From Result `json:"from"`
	To   Result `json:"to"`
	// Ratio is To's rate over From's: To.Threads/From.Threads when the
	// memory keeps up with every thread, about 1 when the extra threads
	// only share what the first ones had.
	Ratio float64 `json:"ratio"`
}

// Scale measures from threads at once, then to threads at once, for d
// each.
func (p *Probe) Scale(ctx context.Context, from, to int, d time.Duration) (Scaling, error) {
	a, err := p.Measure(ctx, from, d)
	if err != nil {
		return Scaling{}, err
	}
	b, err := p.Measure(ctx, to, d)
	if err != nil {
		return Scaling{}, err
	}
	s := Scaling{From: a, To: b}
	if a.BytesPerSecond > 0 {
		s.Ratio = b.BytesPerSecond / a.BytesPerSecond
	}
	return s, nil
}

// xorAll reads all of b, eight words at a time, in two chains so that
// the loads, not the XORs, set the pace.
func xorAll(b []uint64) uint64 {
	var s0, s1 uint64
	for i := 0; i+8 <= len(b); i += 8 {
		s0 ^= b[i] ^ b[i+1] ^ b[i+2] ^ b[i+3]
		s1 ^= b[i+4] ^ b[i+5] ^ b[i+6] ^ b[i+7]
	}
	return s0 ^ s1
}

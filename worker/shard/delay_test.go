package shard

import (
	"context"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// delayed wraps a Dialer's connections so that every byte the dialing
// side writes reaches the other side d later, and every byte it reads
// arrived d earlier: a link with d of one-way latency each way, as a LAN
// adds (the kernel here has no netem). Writes keep their order. added
// sums the delay actually added to each chunk (timers overshoot), for the
// report.
type delayed struct {
	d     time.Duration
	added atomic.Int64 // nanoseconds over all chunks
	n     atomic.Int64 // chunks
}

func (dl *delayed) wrap(inner Dialer) Dialer {
	return func(ctx context.Context) (io.ReadWriteCloser, error) {
		c, err := inner(ctx)
		if err != nil {
			return nil, err
		}
		return dl.conn(c), nil
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

type delayedConn struct {
	io.ReadWriteCloser
	dl     *delayed
	out    chan chunk
	in     chan chunk
	rest   []byte
	once   sync.Once
	closed chan struct{}
	rerr   error
}

func (dl *delayed) conn(c io.ReadWriteCloser) *delayedConn {
	dc := &delayedConn{ReadWriteCloser: c, dl: dl, out: make(chan chunk, 1024), in: make(chan chunk, 1024), closed: make(chan struct{})}
	go dc.send()
	go dc.receive()
	return dc
}

// wait returns at at+d and records how late it was. It polls, yielding
// (runtime.Gosched), instead of sleeping: a timer here wakes about a
// millisecond late, five times the delay. The polling runs while an
// exchange is in flight, when both shards wait for it anyway.
func (dl *delayed) wait(at time.Time) {
	until := at.Add(dl.d)
	for time.Now().Before(until) {
		runtime.Gosched()
	}
	dl.added.Add(int64(time.Since(at)))
	dl.n.Add(1)
}

func (dc *delayedConn) send() {
	for {
		select {
		case c := <-dc.out:
			dc.dl.wait(c.at)
			if _, err := dc.ReadWriteCloser.Write(c.b); err != nil {
				return
			}
		case <-dc.closed:
			return
		}
	}
}

func (dc *delayedConn) receive() {
	defer close(dc.in)
	for {
		b := make([]byte, 64<<10)
		k, err := dc.ReadWriteCloser.Read(b)
		if k > 0 {
			dc.in <- chunk{b: b[:k], at: time.Now()}
		}
		if err != nil {
			dc.rerr = err
			return
		}
	}
}

func (dc *delayedConn) Write(b []byte) (int, error) {
	select {
	case dc.out <- chunk{b: append([]byte(nil), b...), at: time.Now()}:
		return len(b), nil
	case <-dc.closed:
		return 0, io.ErrClosedPipe
	}
}

func (dc *delayedConn) Read(b []byte) (int, error) {
	if len(dc.rest) == 0 {
		c, ok := <-dc.in
		if !ok {
			return 0, dc.rerr
		}
		dc.dl.wait(c.at)
		dc.rest = c.b
	}
	k := copy(b, dc.rest)
	dc.rest = dc.rest[k:]
	return k, nil
}

func (dc *delayedConn) Close() error {
	dc.once.Do(func() { close(dc.closed) })
	return dc.ReadWriteCloser.Close()
}

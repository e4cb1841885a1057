package hf

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// pipe writes and hashes the copy loop's buffers on two goroutines of
// their own, so reading the source (for a peer copy: decrypting the
// libp2p stream), writing the partial and hashing it overlap instead of
// taking turns. Buffers go reader → writer → hasher → free; written counts
// the bytes that are both in the file and in the hash. A third goroutine
// flushes what the writer has written to the device every flushEvery
// bytes, so the final fsync finds little left to flush.
type pipe struct {
	f       *os.File
	h       hash.Hash
	toWrite chan []byte
	toHash  chan []byte
	free    chan []byte
	failed  chan struct{} // closed when a write fails; werr says why
	done    chan struct{} // closed when the hasher has finished
	werr    error         // written by the writer before it closes failed
	written int64         // read after done is closed
	// flushEvery is how many bytes the writer writes between flushes.
	flushEvery int64
	kick       chan int64           // the writer asks for a flush of the file up to this offset; close stops the flusher
	flushed    chan struct{}        // closed when the flusher has finished
	flushFail  chan struct{}        // closed when a flush fails; ferr says why
	ferr       error                // the first failed flush
	durable    atomic.Int64         // offset up to which a flush succeeded (the pipe's start before any)
	start      int64                // where the pipe's first buffer went
	sync       func(*os.File) error // flushData; tests inject failures
}

// newPipe starts the writer and the hasher; f must be positioned where
// the first buffer goes. close stops them.
func newPipe(f *os.File, h hash.Hash, off int64) *pipe {
	return newPipeFlushing(f, h, off, flushEvery)
}

// newPipeFlushing is newPipe with its own flush interval.
func newPipeFlushing(f *os.File, h hash.Hash, off, every int64) *pipe {
	p := &pipe{f: f, h: h, flushEvery: every, toWrite: make(chan []byte, copyBuffers), toHash: make(chan []byte, copyBuffers),
		free: make(chan []byte, copyBuffers), failed: make(chan struct{}), done: make(chan struct{}),
		kick: make(chan int64, 1), flushed: make(chan struct{}), flushFail: make(chan struct{}), start: off, sync: flushData}
	p.durable.Store(off)
	for range copyBuffers {
		p.free <- make([]byte, copyBuffer)
	}
	go p.write(off)
	go p.hash()
	go p.flush()
	return p
}

func (p *pipe) write(off int64) {
	defer close(p.toHash)
	since, unflushed := int64(0), int64(0)
	for b := range p.toWrite {
		if p.werr != nil || p.flushFailed() {
			p.free <- b[:cap(b)]
			continue
		}
		if err := writeInPieces(p.f, b); err != nil {
			p.werr = err
			close(p.failed)
			p.free <- b[:cap(b)]
			continue
		}
		since += int64(len(b))
		end := off + since // what is written so far
		if since >= writebackEvery {
			startWriteback(p.f, off, since)
			off, since = off+since, 0
		}
		if unflushed += int64(len(b)); unflushed >= p.flushEvery {
			unflushed = 0
			select {
			case p.kick <- end:
			default: // a flush is still due: the next one covers these bytes
			}
		}
		p.toHash <- b
	}
}

func (p *pipe) hash() {
	defer close(p.done)
	for b := range p.toHash {
		p.h.Write(b)
		p.written += int64(len(b))
		p.free <- b[:cap(b)]
	}
}

// flush runs a data flush (fdatasync) each time the writer asks, off the
// writer's path: the copy goes on while the device flushes. A failed flush
// stops the copy at the next buffer (get, the writer) and close cuts the
// file back to what the last good flush covered: Linux reports a
// write-back error to one fsync only, so the final one might not see it,
// and the pages after it may not hold what was written.
func (p *pipe) flush() {
	defer close(p.flushed)
	for end := range p.kick {
		if p.ferr != nil {
			continue
		}
		if err := p.sync(p.f); err != nil {
			p.ferr = err
			close(p.flushFail)
			continue
		}
		p.durable.Store(end)
	}
}

// flushFailed reports whether a flush has failed.
func (p *pipe) flushFailed() bool {
	select {
	case <-p.flushFail:
		return true
	default:
		return false
	}
}

// get returns an empty buffer, or nil when a write or a flush failed.
func (p *pipe) get() []byte {
	select {
	case b := <-p.free:
		return b
	case <-p.failed:
		return nil
	case <-p.flushFail:
		return nil
	}
}

// close hands b (possibly empty) to the writer, waits until everything
// handed over is written and hashed, and returns the bytes that are and
// the write error, if any. After a failed flush the file is cut back to
// what the last good flush covered, and the count says so; the hash then
// covers more than the file, so the caller must not go on with it (a later
// Transfer hashes the partial again).
func (p *pipe) close(b []byte) (int64, error) {
	if len(b) > 0 {
		p.toWrite <- b
	}
	close(p.toWrite)
	<-p.done // the writer has exited before the hasher: no more kicks
	close(p.kick)
	<-p.flushed
	if p.werr != nil {
		return p.written, p.werr
	}
	if p.ferr != nil {
		durable := p.durable.Load()
		if err := p.f.Truncate(durable); err != nil {
			return 0, fmt.Errorf("flushing: %w; cutting the partial back to %d bytes: %w", p.ferr, durable, err)
		}
		return durable - p.start, fmt.Errorf("flushing: %w (the partial is cut back to the %d bytes flushed before)", p.ferr, durable)
	}
	return p.written, nil
}

// copyBody copies body into the partial from t.n on, through a pipe, and
// checks the size limits on every read. Whatever arrived intact before an
// error is written and hashed (t.n counts it), so a retry resumes there;
// bytes that break a limit are not written.
func (t *transfer) copyBody(ctx context.Context, body io.Reader, idle *time.Timer) error {
	p := newPipe(t.f, t.h, t.n)
	buf, fill := p.get(), 0
	got := t.n // bytes received: in the partial, in the pipe or in buf
	finish := func(keep bool) error {
		if !keep {
			fill = 0
		}
		w, werr := p.close(buf[:fill])
		t.n += w
		if werr != nil {
			return fmt.Errorf("hf: writing %s: %w", t.spec.Partial, werr)
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return firstErr(finish(true), err)
		}
		k, rerr := body.Read(buf[fill:])
		if k > 0 {
			idle.Reset(t.spec.IdleTimeout)
			t.recv.Add(int64(k))
			next := got + int64(k)
			if t.total > 0 && next > t.total {
				return firstErr(finish(false), fmt.Errorf("%w: source sent more than %d bytes", ErrChecksum, t.total))
			}
			if t.spec.MaxSize > 0 && next > t.spec.MaxSize {
				werr := finish(false)
				t.discard()
				return firstErr(werr, fmt.Errorf("%w: the source sent more than %d bytes; partial deleted", ErrTooLarge, t.spec.MaxSize))
			}
			if t.total == 0 && got/spaceCheckEvery != next/spaceCheckEvery {
				// Of unknown size: keep the reserve free as it grows.
				if free, ok, err := freeBytes(filepath.Dir(t.spec.Partial)); err == nil && ok && free < uint64(k)+spaceReserve {
					werr := finish(false)
					t.discard()
					return firstErr(werr, fmt.Errorf("%w: %d bytes free in %s after %d bytes of a download of unknown size; partial deleted", ErrNoSpace, free, filepath.Dir(t.spec.Partial), got))
				}
			}
			got, fill = next, fill+k
			if fill == len(buf) {
				p.toWrite <- buf
				if buf, fill = p.get(), 0; buf == nil {
					return finish(false)
				}
			}
			t.report(got, false)
		}
		if rerr == io.EOF {
			if err := finish(true); err != nil {
				return err
			}
			if t.total > 0 && t.n < t.total {
				return Retryable(fmt.Errorf("hf: source ended at %d of %d bytes: %w", t.n, t.total, io.ErrUnexpectedEOF))
			}
			return nil
		}
		if rerr != nil {
			var ne net.Error
			if errors.As(rerr, &ne) && ne.Timeout() && ctx.Err() == nil {
				// The source's own read deadline (a peer stream's idle
				// bound): it stalled.
				rerr = fmt.Errorf("%w: %w", ErrStalled, rerr)
			}
			return firstErr(finish(true), Retryable(fmt.Errorf("hf: reading body at %d bytes: %w", got, rerr)))
		}
	}
}

// firstErr returns a when it is not nil, else b.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// writeInPieces writes b to f in writes of at most writePiece bytes.
func writeInPieces(f *os.File, b []byte) error {
	for len(b) > 0 {
		k := min(len(b), writePiece)
		if _, err := f.Write(b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}

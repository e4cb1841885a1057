package supervisor

import (
	"context"
	"errors"
	"io"
	"sync"
)

// ErrWorkerSilent is the cause of the calls to a worker that stopped
// heartbeating: a process that is frozen (stopped, swapping, wedged)
// keeps its connections open and answers nothing, and a stream to it
// would wait for ever. Cancelled, the call fails like a worker that died,
// and the request goes on on another worker.
var ErrWorkerSilent = errors.New("supervisor: the worker stopped heartbeating")

// calls are the requests in flight to this node's workers, by worker id,
// so that a worker's expiry can end them. Safe for concurrent use.
type calls struct {
	mu  sync.Mutex
	per map[string]map[*call]struct{}
}

type call struct{ cancel context.CancelCauseFunc }

// track returns ctx for a call to workerID, ended when the worker
// expires (cause ErrWorkerSilent), and release, which the call must run
// when it is finished with (its response body closed).
func (c *calls) track(ctx context.Context, workerID string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	k := &call{cancel: cancel}
	c.mu.Lock()
	if c.per == nil {
		c.per = map[string]map[*call]struct{}{}
	}
	if c.per[workerID] == nil {
		c.per[workerID] = map[*call]struct{}{}
	}
	c.per[workerID][k] = struct{}{}
	c.mu.Unlock()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			c.mu.Lock()
			if m := c.per[workerID]; m != nil {
				delete(m, k)
				if len(m) == 0 {
					delete(c.per, workerID)
				}
			}
			c.mu.Unlock()
			cancel(nil)
		})
	}
}

// end cancels every call in flight to workerID with cause.
func (c *calls) end(workerID string, cause error) int {
	c.mu.Lock()
	m := c.per[workerID]
	delete(c.per, workerID)
	c.mu.Unlock()
	for k := range m {
		k.cancel(cause)
	}
	return len(m)
}

// inFlight is how many calls to workerID are in flight (tests).
func (c *calls) inFlight(workerID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.per[workerID])
}

// releaseBody runs release when the response body is closed.
type releaseBody struct {
	io.ReadCloser
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

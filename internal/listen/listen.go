// Package listen holds what rbee's TCP listeners share: an accept that
// survives transient failures, and the set of connections a listener's
// Close must cut.
package listen

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// The pause after a failed accept (out of file descriptors, say) doubles
// from retryMin to retryMax, as net/http's does: short enough that a
// burst elsewhere costs little, long enough not to spin.
const (
	retryMin = 5 * time.Millisecond
	retryMax = time.Second
)

// Accept returns ln's next connection. A failed accept other than the
// listener's close is reported to warn (when set) and retried after a
// pause; Accept returns net.ErrClosed once ln is closed or stop is.
func Accept(ln net.Listener, stop <-chan struct{}, warn func(err error, retryIn time.Duration)) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		delay = min(max(2*delay, retryMin), retryMax)
		if warn != nil {
			warn(err, delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

// Conns is the set of connections a listener has open, so that its Close
// can cut them. Its zero value is empty and open; it is safe for
// concurrent use.
type Conns struct {
	mu     sync.Mutex
	m      map[io.Closer]struct{}
	closed bool
}

// Add registers c; false once Close was called (c is then not closed).
func (s *Conns) Add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.m == nil {
		s.m = map[io.Closer]struct{}{}
	}
	s.m[c] = struct{}{}
	return true
}

// Remove forgets c.
func (s *Conns) Remove(c io.Closer) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// Close closes every registered connection and refuses later ones.
func (s *Conns) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		_ = c.Close()
	}
}

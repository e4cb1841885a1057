// Package recent is a set whose members expire: what a component
// remembers having done for a while (a server that asked to leave, a
// process stopped for a retire), bounded by age rather than by count.
package recent

import (
	"sync"
	"time"
)

// Set holds keys for TTL after each was added. Safe for concurrent use;
// expired keys are dropped when another is added, so its size is bounded
// by what is added within TTL.
type Set[K comparable] struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[K]time.Time
}

// New returns an empty Set whose keys last ttl.
func New[K comparable](ttl time.Duration) *Set[K] {
	return &Set[K]{ttl: ttl, now: time.Now, m: map[K]time.Time{}}
}

// Add records k now (again, if it was there).
func (s *Set[K]) Add(k K) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for old, at := range s.m {
		if now.Sub(at) > s.ttl {
			delete(s.m, old)
		}
	}
	s.m[k] = now
}

// Has reports whether k was added within the last ttl.
func (s *Set[K]) Has(k K) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.m[k]
	return ok && s.now().Sub(at) <= s.ttl
}

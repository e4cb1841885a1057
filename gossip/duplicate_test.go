package gossip

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDuplicateIdentity: a member started with the id of a live member (its
// data dir copied to another machine) learns so from the conflict
// memberlist only logs: OnDuplicate gets ErrDuplicateIdentity, while the
// original hears nothing and the cluster keeps it at its address. A
// member that comes back under the id at a new address, its old one gone,
// is no duplicate.
func TestDuplicateIdentity(t *testing.T) {
	tests := []struct {
		name         string
		originalRuns bool
		wantDup      bool
	}{
		{"a copy of a live member", true, true},
		{"the same member at a new address", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []error
			report := func(err error) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, err)
			}
			errs := func() []error {
				mu.Lock()
				defer mu.Unlock()
				return append([]error(nil), got...)
			}
			originalDup := make(chan error, 1)
			// The original is the seed (it never joins: a member in the
			// cluster for longer than the window is the same).
			b := newMember(t, "b", func(c *Config) { c.OnDuplicate = func(err error) { originalDup <- err } })
			a := newMember(t, "a")
			_, err := a.Join(ctxT(t), []string{b.Addr()})
			require.NoError(t, err)
			waitState(t, a, 2, StateAlive)
			bAddr := b.Addr()
			if !tc.originalRuns {
				require.NoError(t, b.Close())
			}
			c := newMember(t, "b", func(c *Config) { c.OnDuplicate = report })
			_, _ = c.Join(ctxT(t), []string{a.Addr()})
			if tc.wantDup {
				require.Eventually(t, func() bool { return len(errs()) > 0 }, waitFor, 20*time.Millisecond)
				require.Len(t, errs(), 1)
				require.ErrorIs(t, errs()[0], ErrDuplicateIdentity)
				require.Contains(t, errs()[0].Error(), bAddr)
				m, ok := a.Member("b")
				require.True(t, ok)
				require.Equal(t, bAddr, m.Addr, "the cluster keeps the member it knew")
				require.Equal(t, StateAlive, m.State)
			} else {
				require.Never(t, func() bool { return len(errs()) > 0 }, 3*time.Second, 50*time.Millisecond)
			}
			select {
			case err := <-originalDup:
				t.Fatalf("the original was told it is a duplicate: %v", err)
			default:
			}
		})
	}
}

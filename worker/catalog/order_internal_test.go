package catalog

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSortEntriesIsATotalOrder: entries whose OS and architecture names
// concatenate alike (a+bc, ab+c) still sort one way, whatever order they
// come in (the order List returns must not depend on map iteration).
func TestSortEntriesIsATotalOrder(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 1, d, 0, 0, 0, 0, time.UTC) }
	es := []Entry{
		{Type: "cpu", OS: "a", Arch: "bc", Added: day(1)},
		{Type: "cpu", OS: "ab", Arch: "c", Added: day(2)},
		{Type: "cpu", OS: "a", Arch: "c", Added: day(3)},
		{Type: "cpu", OS: "a", Arch: "c", Added: day(4)},
		{Type: "cuda", OS: "a", Arch: "a", Added: day(5)},
	}
	want := []Entry{es[0], es[3], es[2], es[1], es[4]}
	perm := []int{0, 1, 2, 3, 4}
	var permute func(k int)
	permute = func(k int) {
		if k == len(perm) {
			in := make([]Entry, len(perm))
			for i, p := range perm {
				in[i] = es[p]
			}
			sortEntries(in)
			require.Equal(t, want, in, "from order %v", perm)
			return
		}
		for i := k; i < len(perm); i++ {
			perm[k], perm[i] = perm[i], perm[k]
			permute(k + 1)
			perm[k], perm[i] = perm[i], perm[k]
		}
	}
	permute(0)
}

package process

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A spawn that would bring the user's threads within the node's reserve
// of RLIMIT_NPROC is refused with a message saying what to do: at the
// limit the node's Go runtime could not start a thread and died
// ("failed to create new OS thread"), taking the cluster node down.
func TestProcessRoom(t *testing.T) {
	for _, tc := range []struct {
		name         string
		limit        uint64
		used, worker int
		refused      bool
	}{
		{"plenty", 4096, 100, 8, false},
		{"exactly enough", 40, 20, 4, false},
		{"one short", 40, 21, 4, true},
		{"already over", 40, 60, 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := processRoom(tc.limit, tc.used, tc.worker)
			if !tc.refused {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrProcessLimit)
			require.ErrorContains(t, err, "ulimit -u")
		})
	}
}

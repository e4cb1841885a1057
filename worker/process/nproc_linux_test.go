package process

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// userThreads counts this process's threads among its user's.
func TestUserThreadsCountsThisProcess(t *testing.T) {
	require.GreaterOrEqual(t, userThreads(os.Getuid()), 2, "a Go test binary runs several threads")
	require.Zero(t, userThreads(1<<30), "no process has that uid")
}

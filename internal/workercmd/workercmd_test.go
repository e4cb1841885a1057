package workercmd

import (
	"log/slog"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConfineToThreads: fewer threads than the runtime's processors
// lowers GOMAXPROCS to the threads; all cores (0), as many threads or
// more (never raised), or GOMAXPROCS in the environment leave it.
func TestConfineToThreads(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	log := slog.New(slog.DiscardHandler)
	const procs = 4 // whatever the machine: the runtime is set to it first
	cases := []struct {
		threads int
		env     string
		want    int
	}{
		{0, "", procs},
		{procs, "", procs},
		{procs + 4, "", procs},
		{1, "3", procs},
		{1, "", 1},
		{3, "", 3},
	}
	for _, c := range cases {
		runtime.GOMAXPROCS(procs)
		t.Setenv("GOMAXPROCS", c.env)
		confineToThreads(c.threads, log)
		require.Equal(t, c.want, runtime.GOMAXPROCS(0), "threads %d, GOMAXPROCS=%q", c.threads, c.env)
	}
}

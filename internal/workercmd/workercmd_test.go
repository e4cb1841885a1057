package workercmd

import (
	"log/slog"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConfineToThreads: fewer threads than cores sets GOMAXPROCS to the
// threads; all cores (0), as many threads as cores, or GOMAXPROCS in the
// environment leave it.
func TestConfineToThreads(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 cores")
	}
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	log := slog.New(slog.DiscardHandler)
	cases := []struct {
		threads int
		env     string
		want    int
	}{
		{0, "", before},
		{runtime.NumCPU(), "", before},
		{runtime.NumCPU() + 4, "", before},
		{1, "3", before},
		{1, "", 1},
	}
	for _, c := range cases {
		runtime.GOMAXPROCS(before)
		t.Setenv("GOMAXPROCS", c.env)
		confineToThreads(c.threads, log)
		require.Equal(t, c.want, runtime.GOMAXPROCS(0), "threads %d, GOMAXPROCS=%q", c.threads, c.env)
	}
}

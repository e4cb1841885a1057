package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestKeptWorkersNotice(t *testing.T) {
	for _, tc := range []struct {
		count int
		grace time.Duration
		want  []string
	}{
		{0, 5 * time.Minute, []string{"no worker processes"}},
		{2, 5 * time.Minute, []string{"2 worker process(es) keep running", "within 5m0s", "exits 5m0s after", "--stop-workers", "rbee leave"}},
		{1, 0, []string{"1 worker process(es) keep running", "without end", "--stop-workers"}},
	} {
		got := keptWorkersNotice(tc.count, tc.grace)
		for _, w := range tc.want {
			require.Contains(t, got, w, "keptWorkersNotice(%d, %v)", tc.count, tc.grace)
		}
	}
}

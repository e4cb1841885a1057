package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFitRows(t *testing.T) {
	header := []string{"NAME", "STATE", "HARDWARE"}
	rows := [][]string{{"node1", "alive", strings.Repeat("x", 100)}, {"a-rather-long-node-name", "suspect", "2 cores"}}
	cases := []struct {
		width int
		fits  bool
	}{{200, true}, {60, true}, {30, true}, {10, false}}
	for _, tc := range cases {
		out := fitRows(header, rows, tc.width)
		require.Len(t, out, len(rows))
		total := 0
		for j := range header {
			w := len([]rune(header[j]))
			for _, r := range out {
				w = max(w, len([]rune(r[j])))
			}
			total += w + 2
		}
		if tc.fits {
			require.LessOrEqual(t, total, tc.width, "width %d", tc.width)
		}
		require.Equal(t, "alive", out[0][1], "short cells are never cut")
	}
	require.Equal(t, rows[0][2], fitRows(header, rows, 500)[0][2], "nothing is cut when it fits")
	require.True(t, strings.HasSuffix(fitRows(header, rows, 60)[0][2], "…"))
}

func TestColorizeKeepsWidthsEqual(t *testing.T) {
	for _, s := range []string{"alive", "dead", "suspect"} {
		require.Equal(t, len(s)+9, len(colorize(s)))
	}
	require.Equal(t, "node1", colorize("node1"))
}

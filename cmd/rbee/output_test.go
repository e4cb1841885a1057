package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
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

// TestTableEscapesCells: cells come from elsewhere (a GGUF's architecture
// in `rbee model get`, names in lists) and were printed as they were, so a
// downloaded model could clear the screen, retitle the terminal or fake
// rows. Control characters, newlines, tabs and bidi overrides are escaped.
func TestTableEscapesCells(t *testing.T) {
	hostile := []string{"\x1b[2J\x1b]0;pwned\x07llama", "two\nlines", "tab\there", "\u202eevil", "\x9bc1"}
	for _, c := range hostile {
		var b strings.Builder
		table(&b, []string{"FIELD", "VALUE"}, [][]string{{"architecture", c}, {"state", "ready"}})
		out := b.String()
		require.Equal(t, 3, strings.Count(out, "\n"), "%q: one line per row: %q", c, out)
		require.NotContains(t, out, "\x1b", c)
		require.NotContains(t, out, "\x07", c)
		require.NotContains(t, out, "\u202e", c)
		require.NotContains(t, out, "\x9b", c)
	}
}

// TestInspectEscapesFileStrings: `rbee model inspect` printed a GGUF's
// metadata keys and tensor names as they were (values were quoted).
func TestInspectEscapesFileStrings(t *testing.T) {
	w := gguf.NewWriter()
	require.NoError(t, w.AddKV("\x1b]0;pwned\x07key\nfake", "v"))
	require.NoError(t, w.AddTensor("\x1b[2Jt\u202e", quant.F32, []uint64{4}, make([]byte, 16)))
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, w.WriteFile(path))
	root := newRootCmd()
	root.SetArgs([]string{"model", "inspect", path})
	var out strings.Builder
	root.SetOut(&out)
	root.SetErr(io.Discard)
	require.NoError(t, root.Execute())
	require.NotContains(t, out.String(), "\x1b")
	require.NotContains(t, out.String(), "\u202e")
	require.Contains(t, out.String(), `\x1b]0;pwned\akey\nfake`)
	require.Contains(t, out.String(), `\x1b[2Jt\u202e`)
}

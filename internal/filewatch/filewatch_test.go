package filewatch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCheck: a truncation, a write in place of the same size and a
// changed modification time are changes; a rename over the name, a
// deletion and a read are not.
func TestCheck(t *testing.T) {
	old := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	cases := []struct {
		name    string
		do      func(p string) error
		changed bool
	}{
		{"nothing", func(string) error { return nil }, false},
		{"read", func(p string) error { _, err := os.ReadFile(p); return err }, false},
		{"deleted", os.Remove, false},
		{"renamed over", func(p string) error {
			q := p + ".new"
			if err := os.WriteFile(q, []byte("other"), 0o644); err != nil {
				return err
			}
			return os.Rename(q, p)
		}, false},
		{"truncated", func(p string) error { return os.Truncate(p, 3) }, true},
		{"rewritten in place", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("XY"), 2)
			return err
		}, true},
		{"touched", func(p string) error { return os.Chtimes(p, old, old.Add(time.Hour)) }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			require.NoError(t, os.WriteFile(p, []byte("0123456789"), 0o644))
			// An old modification time: a write now changes it whatever
			// the clock's granularity.
			require.NoError(t, os.Chtimes(p, old, old))
			f, err := os.Open(p)
			require.NoError(t, err)
			w, err := New(f, "")
			require.NoError(t, err)
			defer w.Close()
			require.NoError(t, w.Check())
			require.NoError(t, c.do(p))
			if c.changed {
				require.ErrorIs(t, w.Check(), ErrChanged)
			} else {
				require.NoError(t, w.Check())
			}
		})
	}
	var none *Watch
	require.NoError(t, none.Check())
	require.NoError(t, none.Close())
}

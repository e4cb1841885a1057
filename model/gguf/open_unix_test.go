//go:build unix

package gguf

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestOpenRefusesNonRegular: Open refuses what is no regular file with
// what it is, at once: a named pipe blocked Open (rbee model inspect,
// model run, bench engine) until a writer came, and Ctrl-C did not end
// it; a directory or device failed with "mmap: no such device".
func TestOpenRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "m.gguf")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	for _, tc := range []struct {
		path, want string
	}{
		{fifo, "a FIFO"},
		{dir, "a directory"},
		{"/dev/null", "a device"},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Open(tc.path)
			done <- err
		}()
		select {
		case err := <-done:
			require.ErrorIs(t, err, ErrInvalid, tc.path)
			require.ErrorContains(t, err, "not a regular file ("+tc.want+")", tc.path)
		case <-time.After(10 * time.Second):
			t.Fatalf("Open(%s) blocks", tc.path)
		}
	}
}

// TestParseMappedTruncated: a file truncated while its mapping is parsed
// (rewritten in place during a model import or /api/show) made the read
// past its new end a SIGBUS that ended the node; it is ErrTruncated.
func TestParseMappedTruncated(t *testing.T) {
	w := NewWriter()
	require.NoError(t, w.AddKV("general.architecture", "llama"))
	require.NoError(t, w.AddKV("big", make([]uint8, 3<<20)))
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, w.WriteFile(path))
	fd, err := os.Open(path)
	require.NoError(t, err)
	defer fd.Close()
	st, err := fd.Stat()
	require.NoError(t, err)
	data, err := unix.Mmap(int(fd.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer unix.Munmap(data)
	require.NoError(t, os.Truncate(path, 4096))
	_, err = parseMapped(data)
	require.ErrorIs(t, err, ErrTruncated)
	require.ErrorContains(t, err, "shrank")
}

// TestChanged: File.Changed reports a change in place of the file Open
// mapped (ErrChanged) and not a rename over its name (what counts as a
// change is internal/filewatch's, tested there); Parse's File and a
// closed one have nothing to report.
func TestChanged(t *testing.T) {
	raw, err := os.ReadFile(stories)
	require.NoError(t, err)
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name    string
		change  func(p string) error
		changed bool
	}{
		{"truncated in its last page", func(p string) error { return os.Truncate(p, int64(len(raw)-1)) }, true},
		{"renamed over", func(p string) error {
			q := p + ".new"
			if err := os.WriteFile(q, raw[:100], 0o644); err != nil {
				return err
			}
			return os.Rename(q, p)
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "m.gguf")
			require.NoError(t, os.WriteFile(p, raw, 0o644))
			require.NoError(t, os.Chtimes(p, old, old))
			f, err := Open(p)
			require.NoError(t, err)
			defer f.Close()
			require.NoError(t, f.Changed())
			require.NoError(t, c.change(p))
			if c.changed {
				require.ErrorIs(t, f.Changed(), ErrChanged)
			} else {
				require.NoError(t, f.Changed())
			}
			require.NoError(t, f.Close())
			require.NoError(t, f.Changed())
		})
	}
	p, err := Parse(raw)
	require.NoError(t, err)
	require.NoError(t, p.Changed())
}

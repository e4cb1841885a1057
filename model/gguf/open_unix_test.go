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

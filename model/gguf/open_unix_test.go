//go:build unix

package gguf

import (
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
		{fifo, "a named pipe"},
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
			require.ErrorContains(t, err, "is not a regular file ("+tc.want+")", tc.path)
		case <-time.After(10 * time.Second):
			t.Fatalf("Open(%s) blocks", tc.path)
		}
	}
}

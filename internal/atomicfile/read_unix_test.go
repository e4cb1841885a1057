//go:build unix

package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ReadFile refuses what is not a regular file at once; on a FIFO os.ReadFile
// waits for a writer.
func TestReadFileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, []byte("content"), 0o600))
	for _, tc := range []struct {
		name, path, want string
	}{
		{"fifo", fifo, "a FIFO"},
		{"directory", dir, "a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := ReadFile(tc.path); done <- err }()
			select {
			case err := <-done:
				require.ErrorIs(t, err, ErrNotRegular)
				require.ErrorContains(t, err, tc.path)
				require.ErrorContains(t, err, tc.want)
			case <-time.After(10 * time.Second):
				t.Fatalf("ReadFile(%s) blocks", tc.path)
			}
		})
	}
	b, err := ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, "content", string(b))
	_, err = ReadFile(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

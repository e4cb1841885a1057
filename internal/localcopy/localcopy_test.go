package localcopy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCopy(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	data := make([]byte, 3<<20+5)
	for i := range data {
		data[i] = byte(i * 7)
	}
	require.NoError(t, os.WriteFile(src, data, 0o644))
	require.NoError(t, Copy(src, dst))
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.Equal(t, data, got)

	require.Error(t, Copy(src, dst), "an existing dst is not overwritten")
	require.Error(t, Copy(filepath.Join(dir, "missing"), filepath.Join(dir, "c")))
	_, err = os.Stat(filepath.Join(dir, "c"))
	require.ErrorIs(t, err, os.ErrNotExist, "nothing is created when the source is missing")
}

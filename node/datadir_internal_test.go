package node

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckDataDir(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no modes or owners")
	}
	dir := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.Chmod(dir, 0o777))
	require.NoError(t, checkDataDir(dir, nil))
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "made private")

	// In a directory anyone may write: refused; with the sticky bit
	// (/tmp's), fine.
	open := filepath.Join(t.TempDir(), "open")
	require.NoError(t, os.Mkdir(open, 0o777))
	require.NoError(t, os.Chmod(open, 0o777))
	inOpen := filepath.Join(open, "data")
	require.NoError(t, os.Mkdir(inOpen, 0o700))
	require.ErrorContains(t, checkDataDir(inOpen, nil), "other users may write")
	require.NoError(t, os.Chmod(open, 0o777|os.ModeSticky))
	require.NoError(t, checkDataDir(inOpen, nil))

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	require.ErrorContains(t, checkDataDir(file, nil), "not a directory")

	if os.Geteuid() != 0 {
		t.Log("not root: the other-owner part needs a directory of another user")
		return
	}
	theirs := filepath.Join(t.TempDir(), "theirs")
	require.NoError(t, os.Mkdir(theirs, 0o777))
	require.NoError(t, os.Chown(theirs, 65534, 65534))
	require.ErrorContains(t, checkDataDir(theirs, nil), "belongs to uid 65534")

	// Our directory through another user's link.
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(dir, link))
	require.NoError(t, os.Lchown(link, 65534, 65534))
	require.ErrorContains(t, checkDataDir(link, nil), "symbolic link of uid 65534")
}

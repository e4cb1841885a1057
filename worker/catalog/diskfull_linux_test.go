package catalog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDeleteOnAFullDisk: deleting a worker binary frees space, yet the
// catalog wrote its index first, and on a full disk that write failed.
// Delete now removes the files first there; the binary is gone, also
// after a reopen, and the space is free.
func TestDeleteOnAFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs (a disk that fills) needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", 4<<20)); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })

	c := newCatalog(t, dir, nil)
	e, err := c.Add(context.Background(), AddOptions{Type: TypeCPU, Version: "v1"}, writeTemp(t, make([]byte, 1<<20)))
	require.NoError(t, err)
	f, err := os.Create(filepath.Join(dir, "filler"))
	require.NoError(t, err)
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	require.NoError(t, f.Close())

	gone, err := c.Delete(TypeCPU, "v1")
	require.NoError(t, err, "deleting frees space, even on a full disk")
	require.Len(t, gone, 1)
	require.Empty(t, c.List())
	_, err = os.Stat(e.Path)
	require.True(t, os.IsNotExist(err), "its file is gone: %v", err)
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(dir, &st))
	require.NotZero(t, st.Bavail, "space was freed")

	require.Empty(t, newCatalog(t, dir, nil).List(), "not listed after a reopen")
}

package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/quant"
)

// TestDeleteOnAFullDisk: deleting a model is how a user frees space (the
// download error says so), yet the catalog wrote its index first, and on
// a full disk that write failed: the model could not be deleted until
// something else freed space. Delete now removes the files first there;
// the model is gone, also after a reopen, and the space is free.
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
	e, err := c.Add(writeTemp(t, c, "a.part", ggufBytes(t, quant.F32, 1)), NewEntry{ID: "local--big", FileName: "big.gguf", Source: SourceLocal})
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
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(dir, &st))
	require.Zero(t, st.Bavail, "the disk is full")

	require.NoError(t, c.Delete(e.ID), "deleting frees space, even on a full disk")
	_, err = c.Get(e.ID)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = os.Stat(filepath.Dir(e.Path))
	require.True(t, os.IsNotExist(err), "its files are gone: %v", err)
	require.NoError(t, syscall.Statfs(dir, &st))
	require.NotZero(t, st.Bavail, "space was freed")

	c2 := newCatalog(t, dir, nil)
	list, err := c2.List()
	require.NoError(t, err)
	require.Empty(t, list, "not listed after a reopen")
}

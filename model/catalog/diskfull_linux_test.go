package catalog

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/tmpfstest"

	"github.com/rbee-project/rbee/model/quant"
)

// TestDeleteOnAFullDisk: deleting a model is how a user frees space (the
// download error says so), yet the catalog wrote its index first, and on
// a full disk that write failed: the model could not be deleted until
// something else freed space. Delete now removes the files first there;
// the model is gone, also after a reopen, and the space is free.
func TestDeleteOnAFullDisk(t *testing.T) {
	dir := tmpfstest.Mount(t, 4<<20)

	c := newCatalog(t, dir, nil)
	e, err := c.Add(writeTemp(t, c, "a.part", ggufBytes(t, quant.F32, 1)), NewEntry{ID: "local--big", FileName: "big.gguf", Source: SourceLocal})
	require.NoError(t, err)
	tmpfstest.Fill(t, dir)
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

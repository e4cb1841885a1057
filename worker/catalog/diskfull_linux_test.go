package catalog

import (
	"context"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/tmpfstest"
)

// TestDeleteOnAFullDisk: deleting a worker binary frees space, yet the
// catalog wrote its index first, and on a full disk that write failed.
// Delete now removes the files first there; the binary is gone, also
// after a reopen, and the space is free.
func TestDeleteOnAFullDisk(t *testing.T) {
	dir := tmpfstest.Mount(t, 4<<20)

	c := newCatalog(t, dir, nil)
	e, err := c.Add(context.Background(), AddOptions{Type: TypeCPU, Version: "v1"}, writeTemp(t, make([]byte, 1<<20)))
	require.NoError(t, err)
	tmpfstest.Fill(t, dir)

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

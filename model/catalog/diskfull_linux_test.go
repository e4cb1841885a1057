package catalog

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/tmpfstest"
	"github.com/rbee-project/rbee/model/hf"

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

// TestSplitFetchAsksForOneModelAndOnePart: a split model downloads onto a
// disk with room for the merged file and its largest part (and the
// downloads' reserve), not for the parts and the merged file together;
// on a disk without that room the fetch stops before its first byte with
// ErrNoSpace saying what it needs, and stores nothing.
func TestSplitFetchAsksForOneModelAndOnePart(t *testing.T) {
	const n = 4
	for _, tc := range []struct {
		name  string
		spare int64 // bytes beyond the merged file, its largest part and the reserve
		ok    bool
	}{{"room for one model and one part", (n-1)*headFirstRead + 64<<10, true}, {"short of it", -64 << 10, false}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "")
			parts := splitHub(t, f, n)
			var total, largest int64
			for _, b := range parts {
				total += int64(len(b))
				largest = max(largest, int64(len(b)))
			}
			dir := tmpfstest.Mount(t, 64<<20)
			f.cat = newCatalog(t, dir, nil)
			require.NoError(t, os.MkdirAll(filepath.Join(dir, PartialDir), 0o755))
			// Leave free what the merge needs (the merged file is about
			// the parts' sum) and tc.spare: (n-1)*headFirstRead for the
			// first reads of the other parts' headers, and some slack.
			filler := tmpfstest.Fill(t, dir)
			var st syscall.Statfs_t
			require.NoError(t, syscall.Statfs(dir, &st))
			free := func() int64 {
				require.NoError(t, syscall.Statfs(dir, &st))
				return int64(st.Bavail) * st.Bsize
			}
			want := total + largest + 16<<20 + tc.spare
			fi, err := os.Stat(filler)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(filler, max(0, fi.Size()-(want-free()))))
			require.InDelta(t, want, free(), 8<<10)
			require.Less(t, free(), 2*total+16<<20, "not room for the parts and the merged file together")

			e, err := f.fetch(t, "hf:org/big:Q8_0", FetchOptions{})
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, stories260KSHA, e.SHA256)
				return
			}
			require.ErrorIs(t, err, hf.ErrNoSpace)
			require.ErrorContains(t, err, "the merged file")
			require.ErrorContains(t, err, "the largest still to come")
			require.Empty(t, f.cdnGets(), "stopped before the first byte")
			require.NoError(t, os.Remove(filler))
			requireNothingStored(t, f.cat)
		})
	}
}

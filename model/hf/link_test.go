package hf_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/hf"
)

// TestTransferNeverWritesThroughAHardLink: the catalog hard-links a file
// it already holds to the partial of a fetch of the same sha256; a source
// (or a tree listing) that disagrees about the size, or a server that
// ignores ranges, must not truncate or append to that other file through
// the shared inode. The transfer goes on in a file of its own.
func TestTransferNeverWritesThroughAHardLink(t *testing.T) {
	served := bigBlob(3, 700<<10)
	for _, tc := range []struct {
		name    string
		other   []byte // the file the partial is a hard link to
		size    int64  // Spec.Size
		sha     string
		noRange bool
		wantErr bool
	}{
		// The listing says the file is smaller than the linked copy: it
		// used to truncate the other file to nothing.
		{name: "linked file longer than the size", other: served, size: int64(len(served)) - 100, wantErr: true},
		// A prefix: the rest used to be appended to the other file.
		{name: "linked file shorter than the size", other: served[:300<<10], size: int64(len(served)), sha: sum(served)},
		// Size unknown and the range ignored: the restart used to truncate it.
		{name: "size unknown, range ignored", other: served[:300<<10], noRange: true, sha: sum(served)},
		// The whole file: nothing to write, the link is kept.
		{name: "linked file complete", other: served, size: int64(len(served)), sha: sum(served)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.noRange {
					r.Header.Del("Range")
				}
				http.ServeContent(w, r, "m.gguf", time.Time{}, bytes.NewReader(served))
			}))
			t.Cleanup(srv.Close)
			dir := t.TempDir()
			other := filepath.Join(dir, "entry", "m.gguf")
			require.NoError(t, os.MkdirAll(filepath.Dir(other), 0o755))
			require.NoError(t, os.WriteFile(other, tc.other, 0o644))
			partial := filepath.Join(dir, ".partial", "m.part")
			require.NoError(t, os.MkdirAll(filepath.Dir(partial), 0o755))
			require.NoError(t, os.Link(other, partial))

			c := newClient(t, srv.URL, "")
			res, err := hf.Transfer(context.Background(), c.URLOpener(srv.URL+"/m.gguf"),
				hf.Spec{Partial: partial, Size: tc.size, SHA256: tc.sha, RetryBackoff: time.Millisecond})
			if tc.wantErr {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
				got, rerr := os.ReadFile(res.Path)
				require.NoError(t, rerr)
				require.True(t, bytes.Equal(served, got), "the transfer's file is the served one")
			}
			kept, err := os.ReadFile(other)
			require.NoError(t, err)
			require.True(t, bytes.Equal(tc.other, kept), "the linked file is unchanged (%d bytes, was %d)", len(kept), len(tc.other))
		})
	}
}

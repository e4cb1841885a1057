package hf_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/hf"
)

// TestListFilesCapsTheEntries: a tree API that pages through endless
// files (each page under the page size cap, a next link on every one)
// is refused once the listing passes 100,000 entries, with a hint to name
// the file, instead of holding every page's files in memory up to the
// page cap (100 pages).
func TestListFilesCapsTheEntries(t *testing.T) {
	const perPage = 5000
	var pages atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := pages.Add(1)
		var b strings.Builder
		b.WriteString("[")
		for i := range perPage {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"type":"file","oid":"x","size":1,"path":"f-%d-%d.txt"}`, n, i)
		}
		b.WriteString("]")
		w.Header().Set("Link", fmt.Sprintf(`<%s/api/models/org/repo/tree/main?cursor=%d>; rel="next"`, srv.URL, n))
		_, _ = w.Write([]byte(b.String()))
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, "")
	_, err := c.ListFiles(context.Background(), "org/repo", "main")
	require.ErrorIs(t, err, hf.ErrHTTP)
	require.Contains(t, err.Error(), "more than 100000 entries")
	require.Contains(t, err.Error(), "hf:org/repo/FILE.gguf")
	require.LessOrEqual(t, pages.Load(), int64(100_000/perPage+1))
}

// TestListFilesCapsTheBytes: a tree API whose pages are padding (no
// entries, each under the page cap, a next link on every one) is refused
// once the listing has taken 64 MiB, not after 100 pages of up to 16 MiB.
func TestListFilesCapsTheBytes(t *testing.T) {
	page := "[" + strings.Repeat(" ", 4<<20) + "]"
	var served atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", fmt.Sprintf(`<%s/api/models/org/repo/tree/main?cursor=%d>; rel="next"`, srv.URL, served.Load()))
		n, _ := w.Write([]byte(page))
		served.Add(int64(n))
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, "")
	_, err := c.ListFiles(context.Background(), "org/repo", "main")
	require.ErrorIs(t, err, hf.ErrHTTP)
	require.ErrorContains(t, err, "more than 67108864 bytes in all")
	require.ErrorContains(t, err, "hf:org/repo/FILE.gguf")
	require.Less(t, served.Load(), int64(72<<20), "stopped at the budget (and a page in flight)")
}

// TestListFilesCapsTheTime: a tree API that answers every page just within
// the API timeout (a next link on each) fails the listing after ten API
// timeouts in all, not after 100 pages.
func TestListFilesCapsTheTime(t *testing.T) {
	var pages atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := pages.Add(1)
		time.Sleep(40 * time.Millisecond)
		w.Header().Set("Link", fmt.Sprintf(`<%s/api/models/org/repo/tree/main?cursor=%d>; rel="next"`, srv.URL, n))
		_, _ = w.Write([]byte("[]"))
	}))
	t.Cleanup(srv.Close)
	c := newClientWith(t, srv.URL, func(cfg *hf.Config) { cfg.APITimeout = 200 * time.Millisecond })
	_, err := c.ListFiles(context.Background(), "org/repo", "main")
	require.ErrorIs(t, err, hf.ErrHTTP)
	require.ErrorContains(t, err, "took more than 2s")
	require.Less(t, pages.Load(), int64(100))
}

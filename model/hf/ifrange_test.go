package hf_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/hf"
)

// versionedServer serves one file whose content can change, through
// http.ServeContent (the standard library's Range and If-Range handling),
// with an ETag (strong, weak or none) and a Last-Modified per version. cutAt > 0
// aborts the next response after that many body bytes; ignoreIfRange
// answers every Range with 206 of the current file, If-Range or not.
type versionedServer struct {
	mu            sync.Mutex
	data          []byte
	version       int
	weak, noETag  bool
	cutAt         int
	ignoreIfRange bool
	ifRanges      []string
}

func (s *versionedServer) set(data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data, s.version = data, s.version+1
}

func (s *versionedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	data, version, cut, ignore := s.data, s.version, s.cutAt, s.ignoreIfRange
	s.cutAt = 0
	s.ifRanges = append(s.ifRanges, r.Header.Get("If-Range"))
	s.mu.Unlock()
	etag := `"v` + strconv.Itoa(version) + `"`
	if s.weak {
		etag = "W/" + etag
	}
	if !s.noETag {
		w.Header().Set("ETag", etag)
	}
	modified := time.Date(2026, 1, version, 0, 0, 0, 0, time.UTC)
	if ignore && r.Header.Get("Range") != "" {
		from := rangeStart(r.Header.Get("Range"))
		w.Header().Set("Content-Range", "bytes "+strconv.Itoa(from)+"-"+strconv.Itoa(len(data)-1)+"/"+strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(data[from:])
		return
	}
	if cut > 0 {
		w = &cutWriter{ResponseWriter: w, left: cut}
	}
	http.ServeContent(w, r, "m.gguf", modified, bytes.NewReader(data))
}

// rangeStart is N of the "bytes=N-" that Transfer sends.
func rangeStart(rng string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rng, "bytes="), "-"))
	return n
}

// cutWriter aborts the response after left bytes of body.
type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if len(b) > c.left {
		_, _ = c.ResponseWriter.Write(b[:c.left])
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	c.left -= len(b)
	return c.ResponseWriter.Write(b)
}

// TestResumeOfAChangedURLStartsOver: a download of a URL with no known
// sha256 is cut, the file on the server changes, and the resume must not
// append the new file's tail to the old file's head: the partial keeps
// the first response's validator and sends it as If-Range, so the server
// answers with the whole new file (or, where it ignores If-Range but says
// its file changed, the resume reads it whole). An unchanged file resumes.
func TestResumeOfAChangedURLStartsOver(t *testing.T) {
	v1, v2 := bigBlob(1, 900_000), bigBlob(2, 900_000)
	for _, c := range []struct {
		name                         string
		weak, noETag, ignore, change bool
		wantIfRange                  string
		wantSum                      []byte
		wantResumed                  int64
	}{
		{name: "etag changed", change: true, wantIfRange: `"v1"`, wantSum: v2},
		{name: "etag unchanged", wantIfRange: `"v1"`, wantSum: v1, wantResumed: 300_000},
		{name: "last-modified changed", noETag: true, change: true, wantIfRange: "Thu, 01 Jan 2026 00:00:00 GMT", wantSum: v2},
		{name: "last-modified unchanged", noETag: true, wantIfRange: "Thu, 01 Jan 2026 00:00:00 GMT", wantSum: v1, wantResumed: 300_000},
		// RFC 9110 13.1.5: no If-Range from a weak entity tag, nor a date
		// when there is one: the resume goes as before.
		{name: "weak etag unchanged", weak: true, wantIfRange: "", wantSum: v1, wantResumed: 300_000},
		{name: "server ignores If-Range", ignore: true, change: true, wantIfRange: `"v1"`, wantSum: v2},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := &versionedServer{weak: c.weak, noETag: c.noETag, cutAt: 300_000}
			srv.set(v1)
			ts := httptest.NewServer(srv)
			defer ts.Close()
			cl := newClient(t, ts.URL, "")
			part := filepath.Join(t.TempDir(), "m.part")
			_, err := hf.Transfer(context.Background(), cl.URLOpener(ts.URL+"/m.gguf"), hf.Spec{Partial: part})
			require.Error(t, err, "the first response is cut")
			st, err := os.Stat(part)
			require.NoError(t, err)
			require.EqualValues(t, 300_000, st.Size())

			if c.change {
				srv.set(v2)
			}
			srv.mu.Lock()
			srv.ignoreIfRange = c.ignore
			srv.mu.Unlock()
			res, err := hf.Transfer(context.Background(), cl.URLOpener(ts.URL+"/m.gguf"), hf.Spec{Partial: part})
			require.NoError(t, err)
			require.Equal(t, sum(c.wantSum), res.SHA256)
			require.Equal(t, c.wantResumed, res.Resumed)
			got, err := os.ReadFile(part)
			require.NoError(t, err)
			require.True(t, bytes.Equal(c.wantSum, got), "the file is one version, whole")
			srv.mu.Lock()
			require.Equal(t, c.wantIfRange, srv.ifRanges[1], "the resume sent the first response's validator")
			srv.mu.Unlock()
			_, err = os.Stat(part + ".validator")
			require.ErrorIs(t, err, os.ErrNotExist, "a complete download leaves no validator behind")
		})
	}
}

package hf

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/hf/hubtest"
)

// fuzzTreeEndpoint is the Hub the fuzzed client talks to; nothing listens
// there: fuzzTreeHub answers in process.
const fuzzTreeEndpoint = "https://hub.example"

// fuzzTreeHub answers the first tree request with body and Link link, and
// every later one with an empty page; it records the URLs asked for.
type fuzzTreeHub struct {
	body []byte
	link string
	urls []*url.URL
}

func (h *fuzzTreeHub) RoundTrip(req *http.Request) (*http.Response, error) {
	h.urls = append(h.urls, req.URL)
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: req,
		Body: io.NopCloser(strings.NewReader("[]"))}
	if len(h.urls) == 1 {
		resp.Body = io.NopCloser(bytes.NewReader(h.body))
		if h.link != "" {
			resp.Header.Set("Link", h.link)
		}
	}
	return resp, nil
}

// fuzzTreeList lists org/name through a fuzzTreeHub serving body and link.
func fuzzTreeList(t *testing.T, body []byte, link string) ([]File, *fuzzTreeHub, error) {
	h := &fuzzTreeHub{body: body, link: link}
	c, err := New(Config{Endpoint: fuzzTreeEndpoint, HTTPClient: &http.Client{Transport: h}})
	require.NoError(t, err)
	files, err := c.ListFiles(context.Background(), "org/name", DefaultRevision)
	return files, h, err
}

// fuzzTreePage encodes files as one page of the tree API, as the Hub
// sends it: LFS files (those with a sha256) with their lfs object.
func fuzzTreePage(files []File) ([]byte, error) {
	type lfs struct {
		Oid  string `json:"oid"`
		Size int64  `json:"size"`
	}
	type entry struct {
		Type string `json:"type"`
		Oid  string `json:"oid"`
		Size int64  `json:"size"`
		Path string `json:"path"`
		LFS  *lfs   `json:"lfs,omitempty"`
	}
	page := make([]entry, 0, len(files))
	for _, f := range files {
		e := entry{Type: "file", Oid: f.BlobID, Size: f.Size, Path: f.Path}
		if f.SHA256 != "" {
			e.Size = 134
			e.LFS = &lfs{Oid: f.SHA256, Size: f.Size}
		}
		page = append(page, e)
	}
	return json.Marshal(page)
}

// FuzzListFiles feeds arbitrary tree API pages (body and Link header) to
// ListFiles. It never panics and asks only the endpoint's host, at most once
// per page served. A failure is ErrHTTP with no files. Every file it
// returns has a valid path, a size >= 0 and a sha256 that is empty or
// lower-case hex; and the files, encoded again as a tree page, list to the
// same files.
func FuzzListFiles(f *testing.F) {
	// Pages as the test Hub (hubtest) serves them.
	hub := hubtest.New()
	defer hub.Close()
	hub.AddFile("org/name", "model-Q4_K_M.gguf", []byte("GGUF q4"))
	hub.AddFile("org/name", "sub/dir/model-Q8_0.gguf", []byte("GGUF q8"))
	hub.AddGitFile("org/name", "README.md", []byte("# model"))
	hub.AddGitFile("org/name", "config.json", []byte("{}"))
	for _, size := range []int{0, 2} {
		hub.SetPageSize(size)
		resp, err := http.Get(hub.URL() + "/api/models/org/name/tree/main?recursive=true")
		if err != nil {
			f.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			f.Fatalf("hubtest tree: %d %v", resp.StatusCode, err)
		}
		f.Add(body, strings.ReplaceAll(resp.Header.Get("Link"), hub.URL(), fuzzTreeEndpoint))
	}
	sha := strings.Repeat("ab", 32)
	for _, s := range []struct{ body, link string }{
		{`[]`, ``},
		{`[{"type":"file","oid":"x","size":1,"path":"a.gguf","lfs":{"oid":"` + strings.ToUpper(sha) + `","size":99}}]`, ``},
		{`[{"type":"file","oid":"x","size":5,"path":"a.gguf","lfs":{"oid":"not-a-sha","size":-1}}]`, ``},
		{`[{"type":"file","size":-1,"path":"a"},{"type":"file","size":1,"path":"../a"},{"type":"file","size":1,"path":"a//b"},{"type":"file","size":1,"path":"a\\b"},{"type":"file","size":1,"path":""}]`, ``},
		{`[{"type":"directory","path":"d"},{"type":"File","path":"x"},{"TYPE":"file","PATH":"case.gguf","Size":3}]`, ``},
		{`[{"type":"file","path":"a","size":1e3}]`, ``},
		{`[{"type":"file","path":"a","size":"1"}]`, ``},
		{`[{"type":"file","path":"a","size":1}] trailing`, ``},
		{`[]`, `</api/models/org/name/tree/main?recursive=true&cursor=2>; rel="next"`},
		{`[]`, `<https://evil.example/x>; rel="next"`},
		{`[]`, `<http://hub.example/x>; rel="next"`},
		{`[]`, `<//hub.example:8443/x>; rel=next`},
		{`{"error":"nope"}`, ``},
		{`null`, ``}, {``, ``}, {`[`, ``},
	} {
		f.Add([]byte(s.body), s.link)
	}
	endpoint, _ := url.Parse(fuzzTreeEndpoint)
	f.Fuzz(func(t *testing.T, body []byte, link string) {
		files, srv, err := fuzzTreeList(t, body, link)
		require.LessOrEqual(t, len(srv.urls), 2, "one request per page served")
		for _, u := range srv.urls {
			require.Equal(t, endpoint.Host, u.Host, "a tree page asked of another host: %s", u)
		}
		if err != nil {
			require.ErrorIs(t, err, ErrHTTP)
			require.Nil(t, files)
			return
		}
		for _, file := range files {
			require.NoError(t, ValidatePath(file.Path))
			require.GreaterOrEqual(t, file.Size, int64(0), "%s", file.Path)
			if file.SHA256 != "" {
				require.Regexp(t, `^[0-9a-f]{64}$`, file.SHA256)
			}
		}
		page, err := fuzzTreePage(files)
		require.NoError(t, err)
		again, _, err := fuzzTreeList(t, page, "")
		require.NoError(t, err, "the listed files do not list again: %s", page)
		require.Equal(t, files, again)
	})
}

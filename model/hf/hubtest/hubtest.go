// Package hubtest runs a small Hugging Face Hub on loopback for tests: the
// repo tree API with pagination and LFS oids, the resolve endpoint with a
// 302 redirect to a second "CDN" server carrying X-Linked-Etag,
// X-Linked-Size and X-Repo-Commit, byte ranges (206/Content-Range), gated
// repos (401 without the right token), 404s with X-Error-Code, and fault
// injection (cut a body mid-way, ignore Range, serve corrupted bytes).
//
// It speaks the same paths and headers as huggingface.co so that the real
// client code (package hf, and the node's model_download) runs unchanged
// against it. A Hub is safe for concurrent use.
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Commit is the X-Repo-Commit every answer carries.
const Commit = "0123456789abcdef0123456789abcdef01234567"

// Request is one request a server received.
type Request struct {
	Server        string // "hub" or "cdn"
	Method        string
	Path          string
	Range         string
	Authorization string
}

type file struct {
	data []byte
	lfs  bool
	sha  string // sha256 hex
	git  string // git blob sha1 hex
}

// Hub is a fake Hub (Server) with its CDN (CDN). Create it with New and
// Close it when done.
type Hub struct {
	Server *httptest.Server
	CDN    *httptest.Server

	mu       sync.Mutex
	repos    map[string]map[string]*file
	gated    map[string]string
	blobs    map[string][]byte // sha256 → bytes served by the CDN
	cuts     map[string]int64  // sha256 → cut the next GET after n bytes
	stalls   map[string]int64  // sha256 → the next GET stalls after n bytes
	noRange  bool
	pageSize int
	requests []Request
}

// New starts a Hub and its CDN on 127.0.0.1.
func New() *Hub {
	h := &Hub{
		repos:    map[string]map[string]*file{},
		gated:    map[string]string{},
		blobs:    map[string][]byte{},
		cuts:     map[string]int64{},
		stalls:   map[string]int64{},
		pageSize: 2,
	}
	// Two muxes: the API and the resolve paths overlap as patterns.
	api := http.NewServeMux()
	api.HandleFunc("GET /api/models/{org}/{name}/tree/{rev}", h.tree)
	files := http.NewServeMux()
	files.HandleFunc("GET /{org}/{name}/resolve/{rev}/{path...}", h.resolve)
	files.HandleFunc("HEAD /{org}/{name}/resolve/{rev}/{path...}", h.resolve)
	hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			api.ServeHTTP(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
	h.Server = httptest.NewServer(h.logged("hub", hub))
	cdn := http.NewServeMux()
	cdn.HandleFunc("GET /blobs/{sha}", h.blob)
	h.CDN = httptest.NewServer(h.logged("cdn", cdn))
	return h
}

// Close stops both servers.
func (h *Hub) Close() {
	h.Server.Close()
	h.CDN.Close()
}

// URL is the Hub endpoint.
func (h *Hub) URL() string { return h.Server.URL }

// AddFile adds an LFS file (served through the CDN redirect) to repo and
// returns its sha256.
func (h *Hub) AddFile(repo, path string, data []byte) string {
	return h.add(repo, path, data, true)
}

// AddGitFile adds a small non-LFS file, served by the Hub itself, with no
// sha256 in the tree listing.
func (h *Hub) AddGitFile(repo, path string, data []byte) string {
	return h.add(repo, path, data, false)
}

func (h *Hub) add(repo, path string, data []byte, lfs bool) string {
	s := sha256.Sum256(data)
	g := sha1.Sum(append([]byte(fmt.Sprintf("blob %d\x00", len(data))), data...))
	f := &file{data: data, lfs: lfs, sha: hex.EncodeToString(s[:]), git: hex.EncodeToString(g[:])}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.repos[repo] == nil {
		h.repos[repo] = map[string]*file{}
	}
	h.repos[repo][path] = f
	if lfs {
		h.blobs[f.sha] = data
	}
	return f.sha
}

// Gate makes repo gated: requests need "Authorization: Bearer token".
func (h *Hub) Gate(repo, token string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gated[repo] = token
}

// CutNext makes the next CDN GET of the blob with this sha256 stop after
// n body bytes by dropping the connection (Content-Length announces more).
func (h *Hub) CutNext(sha string, n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cuts[sha] = n
}

// StallNext makes the next CDN GET of the blob with this sha256 send n
// body bytes and then nothing, until the client gives up.
func (h *Hub) StallNext(sha string, n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stalls[sha] = n
}

// IgnoreRange makes the CDN answer every GET with 200 and the whole body.
func (h *Hub) IgnoreRange(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.noRange = on
}

// Corrupt makes the CDN serve the blob with this sha256 with one byte
// flipped, while the tree and headers keep announcing the true sha256.
func (h *Hub) Corrupt(sha string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := append([]byte(nil), h.blobs[sha]...)
	if len(b) > 0 {
		b[len(b)/2] ^= 0xff
	}
	h.blobs[sha] = b
}

// SetPageSize sets the tree API page size (default 2, to exercise paging).
func (h *Hub) SetPageSize(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pageSize = n
}

// Requests returns the requests received so far, in order.
func (h *Hub) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Request(nil), h.requests...)
}

func (h *Hub) logged(name string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.requests = append(h.requests, Request{Server: name, Method: r.Method, Path: r.URL.EscapedPath(),
			Range: r.Header.Get("Range"), Authorization: r.Header.Get("Authorization")})
		h.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Error-Code", code)
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// access checks repo existence and gating; it returns the repo's files or
// writes the error answer the Hub gives.
func (h *Hub) access(w http.ResponseWriter, r *http.Request, repo, rev string) (map[string]*file, bool) {
	h.mu.Lock()
	files, ok := h.repos[repo]
	tok, gated := h.gated[repo]
	h.mu.Unlock()
	if !ok {
		// The Hub answers 401 for unknown repos to anonymous users (it cannot
		// tell them from private ones) and 404 to authenticated ones.
		if r.Header.Get("Authorization") == "" {
			hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository Not Found for url: "+r.URL.Path+".")
		} else {
			hubError(w, http.StatusNotFound, "RepoNotFound", "Repository Not Found for url: "+r.URL.Path+".")
		}
		return nil, false
	}
	if gated && r.Header.Get("Authorization") != "Bearer "+tok {
		status := http.StatusUnauthorized
		if r.Header.Get("Authorization") != "" {
			status = http.StatusForbidden
		}
		hubError(w, status, "GatedRepo", "Access to model "+repo+" is restricted. You must have access to it and be authenticated to access it. Please log in.")
		return nil, false
	}
	if rev != "main" && rev != Commit {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return nil, false
	}
	return files, true
}

type lfsInfo struct {
	Oid         string `json:"oid"`
	Size        int    `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

type treeEntry struct {
	Type string   `json:"type"`
	Oid  string   `json:"oid"`
	Size int      `json:"size"`
	Path string   `json:"path"`
	LFS  *lfsInfo `json:"lfs,omitempty"`
}

func (h *Hub) tree(w http.ResponseWriter, r *http.Request) {
	repo := r.PathValue("org") + "/" + r.PathValue("name")
	files, ok := h.access(w, r, repo, r.PathValue("rev"))
	if !ok {
		return
	}
	h.mu.Lock()
	var entries []treeEntry
	dirs := map[string]bool{}
	for p, f := range files {
		e := treeEntry{Type: "file", Oid: f.git, Size: len(f.data), Path: p}
		if f.lfs {
			e.Size = 134 // the size of the git pointer file, as on the Hub
			e.LFS = &lfsInfo{Oid: f.sha, Size: len(f.data), PointerSize: 134}
		}
		entries = append(entries, e)
		for i := strings.LastIndexByte(p, '/'); i > 0; i = strings.LastIndexByte(p[:i], '/') {
			dirs[p[:i]] = true
		}
	}
	for d := range dirs {
		entries = append(entries, treeEntry{Type: "directory", Oid: strings.Repeat("d", 40), Path: d})
	}
	pageSize := h.pageSize
	h.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	cursor, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	if cursor < 0 || cursor > len(entries) {
		cursor = len(entries)
	}
	end := len(entries)
	if pageSize > 0 && cursor+pageSize < end {
		end = cursor + pageSize
		next := *r.URL
		q := next.Query()
		q.Set("cursor", strconv.Itoa(end))
		next.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf("<%s%s>; rel=\"next\"", h.Server.URL, next.RequestURI()))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(entries[cursor:end])
}

func (h *Hub) resolve(w http.ResponseWriter, r *http.Request) {
	repo := r.PathValue("org") + "/" + r.PathValue("name")
	files, ok := h.access(w, r, repo, r.PathValue("rev"))
	if !ok {
		return
	}
	h.mu.Lock()
	f, ok := files[r.PathValue("path")]
	h.mu.Unlock()
	if !ok {
		hubError(w, http.StatusNotFound, "EntryNotFound", r.PathValue("path")+" does not exist on \"main\"")
		return
	}
	w.Header().Set("X-Repo-Commit", Commit)
	w.Header().Set("ETag", `"`+f.git+`"`)
	if f.lfs {
		w.Header().Set("X-Linked-Etag", `"`+f.sha+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.data)))
		loc := h.CDN.URL + "/blobs/" + f.sha + "?X-Amz-Signature=" + url.QueryEscape("sig/"+f.sha[:8])
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(f.data)
}

func (h *Hub) blob(w http.ResponseWriter, r *http.Request) {
	sha := r.PathValue("sha")
	h.mu.Lock()
	data, ok := h.blobs[sha]
	cut, hasCut := h.cuts[sha]
	delete(h.cuts, sha)
	stall, hasStall := h.stalls[sha]
	delete(h.stalls, sha)
	noRange := h.noRange
	h.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"`+sha+`"`)
	w.Header().Set("Accept-Ranges", "bytes")
	start := 0
	if rg := r.Header.Get("Range"); rg != "" && !noRange {
		v, ok := strings.CutPrefix(rg, "bytes=")
		v, ok2 := strings.CutSuffix(v, "-")
		n, err := strconv.Atoi(v)
		if !ok || !ok2 || err != nil || n < 0 {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= len(data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(data)-1, len(data)))
	}
	body := data[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if start > 0 {
		w.WriteHeader(http.StatusPartialContent)
	}
	if hasStall && stall < int64(len(body)) {
		_, _ = w.Write(body[:stall])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		<-r.Context().Done() // the client hangs up (or the server closes)
		return
	}
	if hasCut && cut < int64(len(body)) {
		_, _ = w.Write(body[:cut])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	_, _ = w.Write(body)
}

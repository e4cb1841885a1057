// Package web serves the page every node shows at "/": a live view of the
// cluster (nodes, the queen, workers, models, jobs), a chat panel on the
// OpenAI-compatible API and the job actions (download a model, spawn and
// retire a worker). Everything the page needs is embedded in the binary:
// no CDN, no external fonts, it works offline.
//
// The page talks only to the node's own API (/v1/...), with fetch() and the
// cluster token as a bearer token when the node asks for one; this package
// serves static bytes and knows nothing of the node.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of every answer: scripts, styles,
// fetches and images come from this node only; no inline script or style,
// no framing, no plugins. data: images let CSS draw small icons.
const CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Cache policy. The page itself is revalidated on every load (no-cache with
// an ETag: a 304 when unchanged) so a node upgrade shows at once. The page
// links its assets with ?v=<content hash>; an asset asked for with its
// current hash never changes, so it may be cached for a year. Without the
// hash (or with a stale one) an asset is revalidated like the page.
const (
	cachePage      = "no-cache"
	cacheVersioned = "public, max-age=31536000, immutable"
	cacheAsset     = "no-cache"
)

// versionLen is how many hex digits of the sha256 name an asset version:
// 64 bits are plenty to tell builds apart.
const versionLen = 16

// asset is one embedded file, ready to serve.
type asset struct {
	name    string
	body    []byte
	ctype   string
	version string // versionLen hex digits of the content's sha256
	etag    string
}

// site is the built set of answers; immutable after newSite, so safe for
// concurrent use.
type site struct {
	page   asset
	assets map[string]asset // by path under /ui/, e.g. "app.js"
	mod    time.Time
}

// Handler serves GET/HEAD "/" (the page) and "/ui/<file>" (its assets);
// anything else under its paths is 404. It is safe for concurrent use and
// may be mounted more than once (each call builds its own small table from
// the embedded files).
func Handler() http.Handler {
	s, err := newSite(static)
	if err != nil {
		// The embedded files are part of the build; a failure here is a
		// programming error caught by the package's tests.
		panic(fmt.Sprintf("web: embedded site: %v", err))
	}
	return s
}

func newSite(fsys fs.FS) (*site, error) {
	s := &site{assets: map[string]asset{}, mod: time.Unix(0, 0)}
	err := fs.WalkDir(fsys, "static/ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/ui/")
		s.assets[name] = newAsset(name, b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	page, err := fs.ReadFile(fsys, "static/index.html")
	if err != nil {
		return nil, err
	}
	// Link every asset with its version so browsers may cache it for good.
	for name, a := range s.assets {
		page = bytes.ReplaceAll(page, []byte(`"/ui/`+name+`"`), []byte(`"/ui/`+name+`?v=`+a.version+`"`))
	}
	s.page = newAsset("index.html", page)
	return s, nil
}

func newAsset(name string, b []byte) asset {
	sum := sha256.Sum256(b)
	v := hex.EncodeToString(sum[:])[:versionLen]
	var ct string
	switch path.Ext(name) { // not every system's MIME table knows these
	case ".js":
		ct = "text/javascript; charset=utf-8"
	case ".css":
		ct = "text/css; charset=utf-8"
	case ".html":
		ct = "text/html; charset=utf-8"
	case ".svg":
		ct = "image/svg+xml"
	default:
		// Loads the system's MIME tables on first use (~4 ms of a node's
		// start), so only for a type the cases above do not name.
		ct = mime.TypeByExtension(path.Ext(name))
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	return asset{name: name, body: b, ctype: ct, version: v, etag: `"` + v + `"`}
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var a asset
	switch {
	case r.URL.Path == "/":
		a = s.page
		h.Set("Cache-Control", cachePage)
	case strings.HasPrefix(r.URL.Path, "/ui/"):
		var ok bool
		a, ok = s.assets[strings.TrimPrefix(r.URL.Path, "/ui/")]
		if !ok {
			h.Set("Cache-Control", "no-store")
			http.Error(w, "404 page not found", http.StatusNotFound)
			return
		}
		if r.URL.Query().Get("v") == a.version {
			h.Set("Cache-Control", cacheVersioned)
		} else {
			h.Set("Cache-Control", cacheAsset)
		}
	default:
		h.Set("Cache-Control", "no-store")
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, a.name, s.mod, bytes.NewReader(a.body))
}

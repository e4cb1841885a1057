package catalog

import (
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/rbee-project/rbee/model/builtin"
	"github.com/rbee-project/rbee/model/hf"
)

// Source says where a model's bytes came from.
type Source string

// Sources. A Ref has one of the first four; SourcePeer only appears in
// entries whose bytes were copied from another node.
const (
	SourceHF      Source = "hf"
	SourceURL     Source = "url"
	SourceLocal   Source = "local"
	SourceBuiltin Source = "builtin"
	SourcePeer    Source = "peer"
)

// maxRefLen bounds a ref string: long enough for any real URL with a
// signature and a deep repo path, short enough to keep errors and the
// index small.
const maxRefLen = 4096

var quantRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`) })

var schemeRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`) })

// Ref is a parsed model reference. Exactly the fields of its Source are set.
type Ref struct {
	Source Source
	// Repo is the Hub repo id "org/name" (hf).
	Repo string
	// File is an exact file path inside the repo (hf, optional).
	File string
	// Quant is the requested quantization tag, upper-cased (hf, optional;
	// never together with File).
	Quant string
	// URL is the http(s) URL without its fragment (url).
	URL string
	// SHA256 is the expected sha256 from a "#sha256=" fragment (url, optional).
	SHA256 string
	// Path is the cleaned local file path (local).
	Path string
	// Name is the builtin model name (builtin).
	Name string
}

// ParseRef parses a model reference:
//
//	hf:ORG/REPO                 a GGUF chosen by hf.QuantPreference()
//	hf:ORG/REPO:Q4_K_M          the GGUF with that quantization tag
//	hf:ORG/REPO/PATH/FILE.gguf  that file
//	https://HOST/PATH[#sha256=HEX]   (http:// too, for LAN mirrors)
//	builtin:stories260k
//	file:///abs/path.gguf, /abs/path.gguf, ./rel.gguf, rel.gguf   a local file
//
// Errors wrap ErrBadRef and say what is wrong.
func ParseRef(s string) (Ref, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Ref{}, fmt.Errorf("%w: empty model reference", ErrBadRef)
	}
	if len(s) > maxRefLen {
		return Ref{}, fmt.Errorf("%w: reference of %d bytes is longer than %d", ErrBadRef, len(s), maxRefLen)
	}
	if !utf8.ValidString(s) {
		return Ref{}, fmt.Errorf("%w: reference is not valid UTF-8", ErrBadRef)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return Ref{}, fmt.Errorf("%w: reference contains a control character", ErrBadRef)
		}
	}
	lower := strings.ToLower(s)
	switch {
	case strings.HasPrefix(lower, "hf:"):
		return parseHF(strings.TrimPrefix(s[3:], "//"), s)
	case strings.HasPrefix(lower, "builtin:"):
		name := strings.ToLower(s[len("builtin:"):])
		if _, err := builtin.Lookup(name); err != nil {
			return Ref{}, fmt.Errorf("%w: %q: unknown builtin model (have %s)", ErrBadRef, s, strings.Join(builtin.Names(), ", "))
		}
		return Ref{Source: SourceBuiltin, Name: name}, nil
	case strings.HasPrefix(lower, "https://"), strings.HasPrefix(lower, "http://"):
		return parseURL(s)
	case strings.HasPrefix(lower, "file://"):
		u, err := url.Parse(s)
		if err != nil || (u.Host != "" && u.Host != "localhost") || u.Path == "" || u.RawQuery != "" || u.Fragment != "" {
			return Ref{}, fmt.Errorf("%w: %q: want file:///absolute/path", ErrBadRef, s)
		}
		return localRef(u.Path, s)
	case schemeRE().MatchString(s) && !isWindowsDrive(s):
		scheme := s[:strings.IndexByte(s, ':')]
		return Ref{}, fmt.Errorf("%w: %q: unknown scheme %q (want hf:, https://, builtin:, file:// or a path)", ErrBadRef, s, scheme)
	}
	return localRef(s, s)
}

func isWindowsDrive(s string) bool {
	return len(s) >= 3 && (s[1] == ':') && (s[2] == '\\' || s[2] == '/') &&
		(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z')
}

func localRef(p, orig string) (Ref, error) {
	if strings.ContainsRune(p, 0) || p == "" {
		return Ref{}, fmt.Errorf("%w: %q: empty path", ErrBadRef, orig)
	}
	clean := filepath.Clean(p)
	if strings.TrimSpace(clean) != clean {
		return Ref{}, fmt.Errorf("%w: %q: path begins or ends with white space", ErrBadRef, orig)
	}
	base := filepath.Base(clean)
	if base == "." || base == ".." || base == string(filepath.Separator) {
		return Ref{}, fmt.Errorf("%w: %q: not a file path", ErrBadRef, orig)
	}
	return Ref{Source: SourceLocal, Path: clean}, nil
}

func parseHF(rest, orig string) (Ref, error) {
	repoPart, quant := rest, ""
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		repoPart, quant = rest[:i], rest[i+1:]
		if !quantRE().MatchString(quant) {
			return Ref{}, fmt.Errorf("%w: %q: quantization %q must be 1-32 of [A-Za-z0-9_] (e.g. Q4_K_M)", ErrBadRef, orig, quant)
		}
		quant = strings.ToUpper(quant)
	}
	parts := strings.SplitN(repoPart, "/", 3)
	if len(parts) < 2 {
		return Ref{}, fmt.Errorf("%w: %q: want hf:ORG/REPO[:QUANT] or hf:ORG/REPO/FILE.gguf", ErrBadRef, orig)
	}
	r := Ref{Source: SourceHF, Repo: parts[0] + "/" + parts[1], Quant: quant}
	if err := hf.ValidateRepoID(r.Repo); err != nil {
		return Ref{}, fmt.Errorf("%w: %q: %v", ErrBadRef, orig, err)
	}
	if len(parts) == 3 {
		r.File = parts[2]
		if quant != "" {
			return Ref{}, fmt.Errorf("%w: %q: give a file or a quantization, not both", ErrBadRef, orig)
		}
		if err := hf.ValidatePath(r.File); err != nil {
			return Ref{}, fmt.Errorf("%w: %q: %v", ErrBadRef, orig, err)
		}
		if !hf.IsGGUF(r.File) {
			return Ref{}, fmt.Errorf("%w: %q: file %q is not a .gguf file", ErrBadRef, orig, r.File)
		}
		if err := ValidateFileName(path.Base(r.File)); err != nil {
			return Ref{}, fmt.Errorf("%w: %q: %v", ErrBadRef, orig, err)
		}
	}
	return r, nil
}

func parseURL(s string) (Ref, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%w: %q: %v", ErrBadRef, s, err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Host == "" || u.Hostname() == "" {
		return Ref{}, fmt.Errorf("%w: %q: URL has no host", ErrBadRef, s)
	}
	if u.User != nil {
		return Ref{}, fmt.Errorf("%w: %q: credentials in URLs are not accepted (they would be stored in the catalog)", ErrBadRef, redactURL(u))
	}
	r := Ref{Source: SourceURL}
	if u.Fragment != "" {
		v, ok := strings.CutPrefix(u.Fragment, "sha256=")
		v = strings.ToLower(v)
		if !ok || !isSHA256(v) {
			return Ref{}, fmt.Errorf("%w: %q: the only fragment understood is #sha256=<64 hex digits>", ErrBadRef, s)
		}
		r.SHA256 = v
		u.Fragment, u.RawFragment = "", ""
	}
	if _, err := urlFileName(u); err != nil {
		return Ref{}, fmt.Errorf("%w: %q: %v", ErrBadRef, s, err)
	}
	r.URL = u.String()
	return r, nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// urlFileName is the catalog file name for a URL: its last path segment,
// with ".gguf" appended when it has another extension or none.
func urlFileName(u *url.URL) (string, error) {
	base := path.Base(u.Path)
	if base == "/" || base == "." || base == "" {
		return "", fmt.Errorf("URL path has no file name")
	}
	if !hf.IsGGUF(base) {
		base += ".gguf"
	}
	if err := ValidateFileName(base); err != nil {
		return "", err
	}
	return base, nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// String returns the canonical form of r; ParseRef(r.String()) == r.
func (r Ref) String() string {
	switch r.Source {
	case SourceHF:
		switch {
		case r.File != "":
			return "hf:" + r.Repo + "/" + r.File
		case r.Quant != "":
			return "hf:" + r.Repo + ":" + r.Quant
		}
		return "hf:" + r.Repo
	case SourceURL:
		if r.SHA256 != "" {
			return r.URL + "#sha256=" + r.SHA256
		}
		return r.URL
	case SourceLocal:
		// A relative path that looks like a scheme ("hf:x") needs "./" to
		// parse back as a path.
		if !filepath.IsAbs(r.Path) && (schemeRE().MatchString(r.Path) || strings.HasPrefix(strings.ToLower(r.Path), "file:")) {
			return "." + string(filepath.Separator) + r.Path
		}
		return r.Path
	case SourceBuiltin:
		return "builtin:" + r.Name
	}
	return ""
}

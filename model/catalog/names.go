package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"path"
	"strings"
	"unicode/utf8"
)

const (
	// MaxIDLen caps entry ids: room for "hf--org--repo--file-stem" of real
	// repos, far below file-system name limits (255).
	MaxIDLen = 128
	// MaxFileNameLen is the common file-system limit for one name.
	MaxFileNameLen = 255
	// idHashLen is how many hex digits of a hash end an id that was too
	// long and had to be shortened (48 bits: no collisions in practice).
	idHashLen = 12
)

// ValidateID checks an entry id, typically received from the network:
// 1..MaxIDLen bytes of [a-z0-9._-], not starting with "." or "-" (so never
// ".", "..", ".partial" or a flag), no "/" or "\" or NUL. Errors wrap
// ErrBadName.
func ValidateID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: id must have 1..%d bytes, got %d", ErrBadName, MaxIDLen, len(id))
	}
	if id[0] == '.' || id[0] == '-' {
		return fmt.Errorf("%w: id %q must not start with '.' or '-'", ErrBadName, id)
	}
	for i := 0; i < len(id); i++ {
		if !isIDChar(id[i]) {
			return fmt.Errorf("%w: id %q may only contain a-z, 0-9, '.', '_' and '-'", ErrBadName, id)
		}
	}
	return nil
}

func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// ValidateFileName checks a model file name, typically derived from a URL
// or a repo path: valid UTF-8, 1..MaxFileNameLen bytes, no "/", "\", ":",
// NUL or control characters, not "." or "..", not hidden (leading ".").
// Errors wrap ErrBadName.
func ValidateFileName(name string) error {
	if name == "" || len(name) > MaxFileNameLen {
		return fmt.Errorf("%w: file name must have 1..%d bytes", ErrBadName, MaxFileNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: file name is not valid UTF-8", ErrBadName)
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: file name %q must not start with '.'", ErrBadName, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' || r == ':' {
			return fmt.Errorf("%w: file name %q contains a separator, ':' or a control character", ErrBadName, name)
		}
	}
	return nil
}

// MakeID turns parts into an id: joined with "--", lower-cased, every
// character outside [a-z0-9._-] replaced by "-", leading dots and dashes
// dropped; an id longer than MaxIDLen is cut and ends with "-" and
// idHashLen hex digits of the sha256 of the full form.
func MakeID(parts ...string) string {
	full := strings.ToLower(strings.Join(parts, "--"))
	b := []byte(full)
	for i, c := range b {
		if !isIDChar(c) {
			b[i] = '-'
		}
	}
	id := strings.TrimLeft(string(b), ".-")
	if id == "" {
		id = "model"
	}
	if len(id) > MaxIDLen {
		h := sha256.Sum256([]byte(full))
		id = id[:MaxIDLen-idHashLen-1] + "-" + hex.EncodeToString(h[:])[:idHashLen]
	}
	return id
}

// stem is a file name without its .gguf extension.
func stem(name string) string {
	if strings.HasSuffix(strings.ToLower(name), ".gguf") {
		return name[:len(name)-len(".gguf")]
	}
	return name
}

// IDFor returns the entry id of a resolved source, the same on every node:
//
//	hf       hf--ORG--REPO--PATH--STEM  (path segments joined by "--")
//	url      url--HOST--STEM
//	local    local--STEM
//	builtin  builtin--NAME
//
// file is the repo path (hf) or the file name (url, local); it is ignored
// for builtin. See MakeID for the character rules.
func IDFor(r Ref, file string) string {
	switch r.Source {
	case SourceHF:
		org, repo, _ := strings.Cut(r.Repo, "/")
		parts := append([]string{"hf", org, repo}, strings.Split(stem(file), "/")...)
		return MakeID(parts...)
	case SourceURL:
		host := ""
		if u, err := url.Parse(r.URL); err == nil {
			host = u.Hostname()
		}
		return MakeID("url", host, stem(path.Base(file)))
	case SourceBuiltin:
		return MakeID("builtin", r.Name)
	}
	return MakeID("local", stem(file))
}

// defaultTag is the tag Ollama gives a model name without one.
const defaultTag = ":latest"

// TrimDefaultTag drops Ollama's default tag from a model name
// ("stories260k:latest" → "stories260k"), as clients that learned their
// names from Ollama send them; any other tag stays (in rbee references a
// colon also starts a quantization, hf:org/repo:Q4_K_M).
func TrimDefaultTag(name string) string {
	name = strings.TrimSpace(name)
	if len(name) > len(defaultTag) && strings.EqualFold(name[len(name)-len(defaultTag):], defaultTag) {
		return name[:len(name)-len(defaultTag)]
	}
	return name
}

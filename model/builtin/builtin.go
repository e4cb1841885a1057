// Package builtin holds the models compiled into the rbee binary, so a fresh
// cluster can run inference without any download. Today that is one model:
// stories260K, a real trained 260K-parameter Llama (MIT, see PROVENANCE.md),
// referred to as "builtin:stories260k".
//
// Everything here is read-only and safe for concurrent use. The models
// are part of the executable's mapped data: a node that copied one into
// its catalog would otherwise keep every page of it mapped, in its RSS,
// for its whole life (1.2 MB), so a reader's Close unmaps them (see
// release; the bytes stay readable).
package builtin

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ErrUnknown is returned (wrapped) for a name that is not a builtin model.
var ErrUnknown = errors.New("builtin: unknown model")

//go:embed stories260K.gguf
var stories260K []byte

// Model describes one builtin model.
type Model struct {
	// Name is the lower-case name used in refs ("builtin:" + Name).
	Name string
	// FileName is the file name the model is stored under in a catalog.
	FileName string
	// Size is the file size in bytes.
	Size int64
	// SHA256 is the lower-case hex sha256 of the file, fixed at build time
	// and checked against the embedded bytes by the tests.
	SHA256 string
	// License names the licence of the file.
	License string
}

// models returns the table of builtin models. It is a function, not a
// package variable, so nothing here is mutable.
func models() map[string]Model {
	return map[string]Model{
		"stories260k": {
			Name:     "stories260k",
			FileName: "stories260K.gguf",
			Size:     int64(len(stories260K)),
			SHA256:   "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d",
			License:  "MIT",
		},
	}
}

func data(name string) []byte {
	switch name {
	case "stories260k":
		return stories260K
	}
	return nil
}

// Names returns the names of the builtin models, sorted.
func Names() []string {
	m := models()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the description of the named model. Names are matched
// case-insensitively.
func Lookup(name string) (Model, error) {
	m, ok := models()[strings.ToLower(name)]
	if !ok {
		return Model{}, fmt.Errorf("%w: %q (have %s)", ErrUnknown, name, strings.Join(Names(), ", "))
	}
	return m, nil
}

// Open returns a reader over the named model's file, its size and its
// sha256 (lower-case hex). Each call returns an independent reader.
// Close gives the pages of the model that the reader touched back to the
// kernel (see release); the bytes stay readable, by this reader and any
// other, from the executable's file.
func Open(name string) (r io.ReadCloser, size int64, sha256 string, err error) {
	m, err := Lookup(name)
	if err != nil {
		return nil, 0, "", err
	}
	b := data(m.Name)
	return &reader{Reader: bytes.NewReader(b), b: b}, m.Size, m.SHA256, nil
}

type reader struct {
	*bytes.Reader
	b []byte
}

// Close releases the model's pages.
func (r *reader) Close() error {
	release(r.b)
	return nil
}

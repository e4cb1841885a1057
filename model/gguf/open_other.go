//go:build !unix

package gguf

import (
	"fmt"
	"io"
)

// Open reads the file at path into memory (no mmap on this platform) and parses it.
func Open(path string) (*File, error) {
	fd, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	data, err := io.ReadAll(fd)
	if err != nil {
		return nil, fmt.Errorf("gguf: read %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

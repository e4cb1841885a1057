//go:build !unix

package gguf

import (
	"fmt"
	"os"
)

// Open reads the file at path into memory (no mmap on this platform) and parses it.
func Open(path string) (*File, error) {
	if err := checkRegular(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: open: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

package gguf

import (
	"errors"
	"fmt"
	"os"

	"github.com/rbee-project/rbee/internal/atomicfile"
)

// openRegular opens path for reading and refuses what is no regular file
// (atomicfile.Open: without blocking on a FIFO, which would wait for a
// writer and Ctrl-C would not end; a directory or device would fail later
// with a mapping error that does not say what is wrong) with ErrInvalid.
func openRegular(path string) (*os.File, error) {
	f, err := atomicfile.Open(path)
	if errors.Is(err, atomicfile.ErrNotRegular) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err != nil {
		return nil, fmt.Errorf("gguf: open: %w", err)
	}
	return f, nil
}

// Package limitread reads a whole input that must stay under a size
// limit: at most limit+1 bytes are read, so an endless or huge input
// (a FIFO, /dev/zero, a hostile server) costs no more memory than the
// limit, and one over it is refused, not silently cut.
package limitread

import (
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is returned (wrapped, with the limit) for an input over the
// limit.
var ErrTooLarge = errors.New("over the size limit")

// All reads r to its end. It returns ErrTooLarge, wrapped with the limit,
// when r holds more than limit bytes, and r's own error otherwise.
func All(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w of %d bytes", ErrTooLarge, limit)
	}
	return b, nil
}

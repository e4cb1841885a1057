package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrNotRegular: a file a node keeps in its data dir is something else
// (a FIFO, a device, a directory). Opening a FIFO for reading blocks until
// a writer comes: a node started on such a data dir hung before it
// listened, and SIGTERM did not stop it.
var ErrNotRegular = errors.New("not a regular file")

// Open opens path for reading without blocking on a FIFO, and refuses
// anything but a regular file with ErrNotRegular (the error wraps
// fs.ErrNotExist when path does not exist, as os.Open's).
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, kind(fi.Mode()))
	}
	return f, nil
}

// ReadFile is os.ReadFile through Open.
func ReadFile(path string) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}

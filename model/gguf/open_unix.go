//go:build unix

package gguf

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/rbee-project/rbee/internal/filewatch"
	"github.com/rbee-project/rbee/internal/hugepage"
)

// Open memory-maps the file at path read-only and parses it. Tensor data
// returned by TensorData aliases the mapping until Close.
func Open(path string) (*File, error) {
	fd, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	// The watch keeps fd: File.Changed compares the file with this stat.
	w, err := filewatch.New(fd, path)
	if err != nil {
		return nil, fmt.Errorf("gguf: stat: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			w.Close()
		}
	}()
	size := w.Size()
	if size < 8 {
		return nil, fmt.Errorf("%w: %s has %d bytes", ErrTruncated, path, size)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%w: %s is too large to map", ErrInvalid, path)
	}
	data, err := unix.Mmap(int(fd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("gguf: mmap %s: %w", path, err)
	}
	f, err := parseMapped(data)
	if err != nil {
		_ = unix.Munmap(data)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.unmap = func() error {
		w.Close()
		return unix.Munmap(data)
	}
	f.changed = w.Check
	ok = true
	f.advise = func(start, end int) error {
		// Whole pages around [start, end): advice on a neighbour's
		// part of a page is harmless.
		page := os.Getpagesize()
		lo, hi := start/page*page, min((end+page-1)/page*page, len(data))
		if err := hugepage.Advise(data[lo:hi]); err != nil {
			return fmt.Errorf("gguf: madvise: %w", err)
		}
		return nil
	}
	f.release = func(start, end int) error {
		// The mapping starts on a page boundary, so file offsets align
		// as addresses do; only whole pages inside [start, end) go.
		page := os.Getpagesize()
		lo, hi := (start+page-1)/page*page, end/page*page
		if hi <= lo {
			return nil
		}
		if err := unix.Madvise(data[lo:hi], unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("gguf: madvise: %w", err)
		}
		return nil
	}
	return f, nil
}

// parseMapped is Parse of a file's mapping. A file truncated while it is
// parsed makes the next read past its new end a SIGBUS, which would end
// the process (a node importing or showing a model): the fault is
// recovered into ErrTruncated.
func parseMapped(data []byte) (f *File, err error) {
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(runtime.Error)
			if _, fault := e.(interface{ Addr() uintptr }); !ok || !fault {
				panic(r)
			}
			f, err = nil, fmt.Errorf("%w: the file shrank while it was read", ErrTruncated)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return Parse(data)
}

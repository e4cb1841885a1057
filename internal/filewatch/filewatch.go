// Package filewatch tells whether a file mapped into memory was changed
// in place since it was mapped.
//
// A read of a shared file mapping sees every later write to the file, and
// a truncation faults (SIGBUS) only for whole pages past the new end: the
// rest of the last page reads as zeros. A user rewriting or shrinking a
// model file (or a weights cache file) under a process that maps it can
// thus make it compute with other bytes than it loaded, without any fault.
// A Watch keeps the open file (its inode, whatever later happens to its
// name) and its size and modification time when watched; Check compares
// them with the file's now (one fstat). A file replaced by a rename, or
// deleted, is not a change: the mapping keeps the old inode's bytes.
package filewatch

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// ErrChanged: the watched file's size or modification time is not what
// it was when the Watch was made.
var ErrChanged = errors.New("file changed in place")

// Watch watches one open file. Check is safe for concurrent use; Close
// must not run concurrently with it.
type Watch struct {
	f    *os.File
	name string
	st   stat // when watched
}

// New watches f as it is now and takes it over: the Watch closes it
// (also when New fails). name is the file's name in Check's errors ("":
// f's; a file written under a temporary name gives the one it will
// have). Make it once the file's bytes are final (after the last write
// through a mapping is synced).
func New(f *os.File, name string) (*Watch, error) {
	st, err := statOf(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if name == "" {
		name = f.Name()
	}
	return &Watch{f: f, name: name, st: st}, nil
}

// Check returns nil while the file has the size and modification time it
// had when watched, else an error wrapping ErrChanged that says what
// changed (or the stat's error). A nil Watch is never changed. While the
// file is unchanged Check allocates nothing (a forward pass calls it).
func (w *Watch) Check() error {
	if w == nil {
		return nil
	}
	st, err := statOf(w.f)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrChanged, w.name, err)
	}
	if st.size != w.st.size {
		return fmt.Errorf("%w: %s has %d bytes, had %d", ErrChanged, w.name, st.size, w.st.size)
	}
	if st.mtime != w.st.mtime {
		return fmt.Errorf("%w: %s was modified at %s, after %s", ErrChanged, w.name,
			time.Unix(0, st.mtime).UTC().Format(time.RFC3339Nano), time.Unix(0, w.st.mtime).UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// stat is what Check compares: the size and the modification time (ns
// since the epoch).
type stat struct {
	size, mtime int64
}

// Size is the file's size when it was watched: what its mapping covers
// (a caller maps the file after New, without a second stat).
func (w *Watch) Size() int64 { return w.st.size }

// Close closes the file. A nil Watch is a no-op.
func (w *Watch) Close() error {
	if w == nil {
		return nil
	}
	return w.f.Close()
}

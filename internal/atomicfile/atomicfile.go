// Package atomicfile replaces files so that a reader, or the machine after a
// crash, sees either the old content or the new one, never a torn mix: the
// new content goes to a temporary file in the same directory, which is
// fsynced, renamed over the target, and the directory is fsynced so the
// rename itself survives a power loss.
//
// WriteFile covers small files written in one go (registries, indexes,
// secrets); Create returns a File for content that is streamed, checked
// and only then published (downloads, generated models).
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TempPrefix starts the name of every temporary file this package creates
// next to its target ("<dir>/.tmp-<name>-<random>"). A temporary file left
// by a crash is never mistaken for the target; a catalog that owns a
// directory may delete names with this prefix when it starts.
const TempPrefix = ".tmp-"

// Sentinel errors of this package. Match them with errors.Is.
var (
	// ErrDone is returned by File methods after Commit or Abort.
	ErrDone = errors.New("atomicfile: file already committed or aborted")
)

// WriteFile replaces path with data. The file gets mode perm exactly (the
// umask does not apply), whether or not path existed before; on error path
// is unchanged and no temporary file is left.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}

// File is a pending replacement of a file: what is written to it becomes
// the content of its target at Commit, or is discarded by Abort. Like an
// *os.File it is not safe for concurrent use.
type File struct {
	f    *os.File
	path string
	done bool
}

// Create starts a replacement of path: a temporary file with mode perm
// (exactly, regardless of the umask) in path's directory, which must exist.
// Call Commit to publish it or Abort to discard it; deferring Abort right
// after Create is safe, as it does nothing after Commit.
func Create(path string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, TempPrefix+base+"-*")
	if err != nil {
		// Named by the file asked for and its directory, not by the
		// temporary name the user never gave ("open ./.tmp-k-123").
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("atomicfile: create %s (in directory %s): %w", path, dir, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	return &File{f: f, path: path}, nil
}

// Write appends p to the pending content.
func (f *File) Write(p []byte) (int, error) {
	if f.done {
		return 0, ErrDone
	}
	return f.f.Write(p)
}

// Sync flushes the pending content to disk. Commit syncs as well; calling
// Sync first moves the slow part of a large file out of a caller's
// critical section.
func (f *File) Sync() error {
	if f.done {
		return ErrDone
	}
	if err := f.f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return nil
}

// Name returns the path of the temporary file (for tools that need to
// read it back before Commit).
func (f *File) Name() string { return f.f.Name() }

// Commit fsyncs the pending content, renames it over the target and fsyncs
// the directory. On error the target is unchanged and the temporary file is
// removed.
func (f *File) Commit() error {
	return f.publish(func(tmp, path string) error { return os.Rename(tmp, path) })
}

// CommitNew publishes the pending content only if the target does not exist
// yet: when it does, the error wraps fs.ErrExist and that file stays. The
// check and the publication are one atomic step (a hard link); on a file
// system without hard links they are two (a check, then a rename), so a
// writer racing in between may be replaced.
func (f *File) CommitNew() error {
	return f.publish(func(tmp, path string) error {
		err := os.Link(tmp, path)
		if err == nil || errors.Is(err, fs.ErrExist) {
			return err
		}
		if _, err := os.Lstat(path); err == nil {
			return &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
		}
		return os.Rename(tmp, path)
	})
}

// publish syncs and closes the temporary file, moves it into place with
// move, and makes the directory entry durable.
func (f *File) publish(move func(tmp, path string) error) error {
	if f.done {
		return ErrDone
	}
	defer f.Abort()
	if err := f.f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if err := f.f.Close(); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if err := move(f.f.Name(), f.path); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	syncDir(filepath.Dir(f.path))
	return nil
}

// Abort discards the pending content and removes the temporary file. It
// does nothing after Commit, so it can be deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	_ = f.f.Close()
	_ = os.Remove(f.f.Name()) // after a rename or a link: absent, or a second name of the target
}

// syncDir makes a rename in dir durable. Errors are not reported: the new
// name is in place already, and some file systems (and Windows) cannot
// fsync a directory at all.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}

// RemoveTemps removes the temporary files (TempPrefix) a crash left in
// dir, not in its subdirectories, and returns how many it removed. Only
// the owner of dir may call it, while nothing writes there (a node, at
// start, under its data dir lock): a temporary file is some write's work
// in progress. A missing dir is no error.
func RemoveTemps(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), TempPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// Package catalog keeps the GGUF models of one node under a directory (the
// node passes <datadir>/models), and fetches them: from a peer that has the
// same sha256, from the Hugging Face Hub, from a URL, from a local file, or
// from the binary (builtin models). See DESIGN.md.
//
// A Catalog is safe for concurrent use by the goroutines of one process;
// two processes must not share a directory.
package catalog

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/model/quant"
)

// Sentinel errors. Functions wrap them with %w and add context.
var (
	// ErrNotFound: no entry with that id (or sha256).
	ErrNotFound = errors.New("catalog: model not found")
	// ErrInUse: Delete refused because Config.InUse says a worker uses the model.
	ErrInUse = errors.New("catalog: model in use")
	// ErrBadName: an id or file name could escape the directory or is malformed.
	ErrBadName = errors.New("catalog: bad name")
	// ErrBadRef: a model reference does not parse.
	ErrBadRef = errors.New("catalog: bad model reference")
	// ErrExists: an entry with that id but different content exists.
	ErrExists = errors.New("catalog: a different model with this id exists")
	// ErrNotGGUF: the file is not a readable GGUF model.
	ErrNotGGUF = errors.New("catalog: not a GGUF model")
	// ErrClosed: the catalog was closed.
	ErrClosed = errors.New("catalog: closed")
)

const (
	// IndexFile is the name of the index inside the catalog directory.
	IndexFile = "index.json"
	// PartialDir holds downloads in progress (<name>.part) inside the catalog
	// directory, on the same file system so finished files are renamed in.
	PartialDir = ".partial"
	// indexVersion is written into the index; a newer version is refused.
	indexVersion = 1
	// maxIndexBytes bounds the index read at start (a 10,000-model index is ~5 MiB).
	maxIndexBytes = 64 << 20
)

// Entry is one model in the catalog. JSON field names are the API's.
type Entry struct {
	// ID is stable and file-system safe (see IDFor); the directory name.
	ID string `json:"id"`
	// Ref is the resolved reference the file came from
	// ("hf:org/repo/file.gguf", a URL, a path, "builtin:name").
	Ref string `json:"ref"`
	// FileName is the file's name inside <dir>/<id>/.
	FileName string `json:"file_name"`
	// Path is the absolute path of the file (not stored; derived).
	Path string `json:"path"`
	// Size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lower-case hex sha256 of the file.
	SHA256 string `json:"sha256"`
	// Quantization is the type holding most weights of the matrices (e.g.
	// "Q4_K" for a Q4_K_M file); not general.file_type, which is often absent
	// or wrong.
	Quantization string `json:"quantization"`
	// Architecture is general.architecture ("llama", "qwen2", ...).
	Architecture string `json:"architecture"`
	// Parameters is the total number of tensor elements.
	Parameters uint64 `json:"parameters"`
	// ContextLength is <arch>.context_length, 0 if absent.
	ContextLength uint64 `json:"context_length"`
	// Source says where the bytes came from.
	Source Source `json:"source"`
	// Parts is how many gguf-split files the file was merged from (Ref
	// names the first); 0 for a model that came as one file.
	Parts int `json:"parts,omitempty"`
	// AddedAt is when the file entered the catalog (UTC).
	AddedAt time.Time `json:"added_at"`
}

// Config configures a Catalog. Start from DefaultConfig.
type Config struct {
	// Dir is the catalog directory; created if missing.
	Dir string
	// InUse, when set, is asked by Delete; true refuses with ErrInUse. It
	// is called with the catalog's lock held and must not call back into it.
	InUse func(id string) bool
	// Logger receives warnings (skipped index entries) and debug logs; nil
	// discards.
	Logger *slog.Logger
	// Now is the clock for AddedAt and PartialMaxAge; nil means time.Now.
	Now func() time.Time
	// PartialMaxAge: New, and every fetch as it starts, removes what
	// PartialDir holds that has not been written for this long (an
	// abandoned download: a retry or a resume writes to its partial at
	// once) and that no fetch is writing; 0 means DefaultPartialMaxAge,
	// < 0 keeps everything.
	PartialMaxAge time.Duration
}

// DefaultPartialMaxAge is a week: long enough for a user to come back to a
// download cut on Friday, short enough that abandoned ones (often
// gigabytes) do not stay for good.
const DefaultPartialMaxAge = 7 * 24 * time.Hour

// DefaultConfig returns a Config for dir.
func DefaultConfig(dir string) Config { return Config{Dir: dir} }

// Catalog is the model catalog of one node.
type Catalog struct {
	dir        string
	inUse      func(string) bool
	log        *slog.Logger
	now        func() time.Time
	partialAge time.Duration // < 0: keep every partial

	mu      sync.Mutex
	entries map[string]Entry
	closed  bool
	// indexed: every id the index file names, kept or dropped by load;
	// only New's sweep of orphan directories reads it.
	indexed map[string]bool

	fmu      sync.Mutex
	inflight map[string]chan struct{} // partial name → closed when its fetch ends
}

type indexFile struct {
	Version int     `json:"version"`
	Models  []Entry `json:"models"`
}

// New opens (or creates) the catalog in cfg.Dir and loads its index.
// Index entries with a bad name or a missing or resized file are dropped
// (and logged); a malformed index is an error rather than an empty catalog.
func New(cfg Config) (*Catalog, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("catalog: Config.Dir is empty")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, PartialDir), 0o755); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	c := &Catalog{dir: dir, inUse: cfg.InUse, log: cfg.Logger, now: cfg.Now,
		entries: map[string]Entry{}, inflight: map[string]chan struct{}{}, indexed: map[string]bool{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	c.partialAge = cfg.PartialMaxAge
	if c.partialAge == 0 {
		c.partialAge = DefaultPartialMaxAge
	}
	c.sweepPartials()
	c.sweepOrphans()
	c.indexed = nil
	return c, nil
}

// sweepOrphans removes what a crash left in the catalog directory: a model
// directory the index file does not name (a node killed in Add after the file
// was moved in and before the index was written, or in Delete after the
// index was written and before the directory was removed: the whole model
// stays on disk, listed nowhere, until an Add of the same id) and the
// temporary files of an index write (atomicfile's prefix). Only names that
// are valid ids are model directories: anything else (lost+found of a
// mount point) is left alone. Failures are logged: an orphan costs only
// disk space. Called from New, before any Add can run.
func (c *Catalog) sweepOrphans() {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		c.log.Warn("catalog: cannot list the catalog directory", "dir", c.dir, "err", err)
		return
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(c.dir, name)
		switch {
		case e.IsDir() && ValidateID(name) == nil:
			if c.indexed[name] {
				// Listed, or an entry load dropped (logged): its files
				// stay for the user to look at.
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				c.log.Warn("catalog: cannot remove a model directory the index does not list", "dir", p, "err", err)
				continue
			}
			c.log.Info("catalog: removed a model directory the index does not list (left by a crash)", "dir", p)
		case !e.IsDir() && strings.HasPrefix(name, atomicfile.TempPrefix):
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				c.log.Warn("catalog: cannot remove a temporary file", "file", p, "err", err)
			}
		}
	}
}

// sweepPartials removes the partial downloads of PartialDir not written
// for partialAge, but for those of fetches in flight (a node runs for
// months: a sweep at start alone would keep every download abandoned
// since). A partial and its validator file (model/hf) go together, judged
// by the newer of the two; a validator whose partial is gone goes too;
// anything else by its own age. A split model's merge no fetch is writing
// (split.go) goes with its journal by the newer one's age, like a partial;
// a merged file without a journal (never resumed) at any age, even when
// partials are kept for good (PartialMaxAge < 0), and a journal without
// its merged file. Failures are logged: a stale partial costs only disk
// space.
func (c *Catalog) sweepPartials() {
	age := c.partialAge
	dir := filepath.Join(c.dir, PartialDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		c.log.Warn("catalog: cannot list partial downloads", "dir", dir, "err", err)
		return
	}
	const validator = hf.ValidatorSuffix
	// Held throughout: a fetch that starts now waits, rather than resume
	// a partial this removes.
	c.fmu.Lock()
	defer c.fmu.Unlock()
	busy := map[string]bool{}
	for name := range c.inflight {
		busy[name+".part"] = true
		busy[name+".part"+validator] = true
		busy[name+mergeSuffix] = true
		busy[name+mergeSuffix+journalSuffix] = true
	}
	infos := map[string]os.FileInfo{}
	for _, e := range ents {
		if busy[e.Name()] {
			continue
		}
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			infos[e.Name()] = info
		}
	}
	cutoff := c.now().Add(-age)
	remove := func(name string) {
		p := filepath.Join(dir, name)
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			c.log.Warn("catalog: cannot remove an abandoned partial download", "file", p, "err", err)
			return
		}
		c.log.Info("catalog: removed an abandoned partial download", "file", p, "bytes", infos[name].Size(), "last_written", infos[name].ModTime().UTC())
	}
	for name, info := range infos {
		if merged, ok := strings.CutSuffix(name, journalSuffix); ok && strings.HasSuffix(merged, mergeSuffix) {
			if _, has := infos[merged]; !has {
				remove(name) // its merged file is gone: nothing to resume
			}
			continue
		}
		if strings.HasSuffix(name, mergeSuffix) {
			j, ok := infos[name+journalSuffix]
			if !ok {
				remove(name) // a merge without its journal is never resumed
				continue
			}
			// A merge to resume: aged as a partial, by the newer of
			// the file and its journal, and removed with it.
			if last := j.ModTime(); age >= 0 && last.Before(cutoff) && !info.ModTime().After(cutoff) {
				remove(name)
				remove(name + journalSuffix)
			}
			continue
		}
		if part, ok := strings.CutSuffix(name, validator); ok {
			if _, has := infos[part]; !has && age >= 0 {
				remove(name) // its partial is gone: nothing to resume
			}
			continue
		}
		last := info.ModTime()
		if v, ok := infos[name+validator]; ok && v.ModTime().After(last) {
			last = v.ModTime()
		}
		if age < 0 || !last.Before(cutoff) {
			continue
		}
		remove(name)
		if _, ok := infos[name+validator]; ok {
			remove(name + validator)
		}
	}
}

// Dir returns the absolute catalog directory.
func (c *Catalog) Dir() string { return c.dir }

// Close marks the catalog closed; later calls fail with ErrClosed. Files
// stay on disk.
func (c *Catalog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *Catalog) load() error {
	f, err := atomicfile.Open(filepath.Join(c.dir, IndexFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer f.Close()
	var idx indexFile
	if err := json.NewDecoder(io.LimitReader(f, maxIndexBytes)).Decode(&idx); err != nil {
		return fmt.Errorf("catalog: index %s is malformed: %w; move it away (to %s.bad) and start again: "+
			"the catalog starts empty and `rbee model download` adds its models again", f.Name(), err, f.Name())
	}
	if idx.Version > indexVersion {
		return fmt.Errorf("catalog: index version %d is newer than this rbee (%d)", idx.Version, indexVersion)
	}
	for _, e := range idx.Models {
		c.indexed[e.ID] = true
		if ValidateID(e.ID) != nil || ValidateFileName(e.FileName) != nil || !isSHA256(e.SHA256) {
			c.log.Warn("catalog: dropping index entry with a bad id, file name or sha256", "id", e.ID)
			continue
		}
		e.Path = c.pathOf(e.ID, e.FileName)
		st, err := os.Stat(e.Path)
		if err != nil || !st.Mode().IsRegular() || st.Size() != e.Size {
			c.log.Warn("catalog: dropping index entry whose file is missing or changed", "id", e.ID, "path", e.Path)
			continue
		}
		c.entries[e.ID] = e
	}
	return nil
}

func (c *Catalog) pathOf(id, file string) string { return filepath.Join(c.dir, id, file) }

// saveLocked writes the index atomically (temp file, fsync, rename, fsync
// of the directory). c.mu must be held.
func (c *Catalog) saveLocked(entries map[string]Entry) error {
	idx := indexFile{Version: indexVersion, Models: sortedEntries(entries)}
	for i := range idx.Models {
		idx.Models[i].Path = ""
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(c.dir, IndexFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	return nil
}

// syncDir makes a rename durable; errors are ignored because some file
// systems (and Windows) cannot fsync directories.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

func sortedEntries(m map[string]Entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// List returns every entry, sorted by id.
func (c *Catalog) List() ([]Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	return sortedEntries(c.entries), nil
}

// Get returns the entry with this id: ErrBadName for a malformed id,
// ErrNotFound for an unknown one.
func (c *Catalog) Get(id string) (Entry, error) {
	if err := ValidateID(id); err != nil {
		return Entry{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Entry{}, ErrClosed
	}
	e, ok := c.entries[id]
	if !ok {
		return Entry{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return e, nil
}

// FindBySHA256 returns an entry whose file has this sha256 (lower-case
// hex), the first by id if several do.
func (c *Catalog) FindBySHA256(sum string) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.findLocked(sum)
}

func (c *Catalog) findLocked(sum string) (Entry, bool) {
	if c.closed || !isSHA256(sum) {
		return Entry{}, false
	}
	for _, e := range sortedEntries(c.entries) {
		if e.SHA256 == sum {
			return e, true
		}
	}
	return Entry{}, false
}

// OpenBySHA256 opens the file with this sha256 for reading, for serving it
// to a peer (seek to the requested offset). The caller closes the file;
// deleting the entry meanwhile does not disturb an open file on Unix.
func (c *Catalog) OpenBySHA256(sum string) (*os.File, Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.findLocked(sum)
	if !ok {
		return nil, Entry{}, fmt.Errorf("%w: no model with sha256 %q", ErrNotFound, sum)
	}
	f, err := os.Open(e.Path)
	if err != nil {
		return nil, Entry{}, fmt.Errorf("catalog: %w", err)
	}
	return f, e, nil
}

// OpenRange is the serving side of PeerSource: it opens the file with this
// sha256 positioned at offset and returns its total size, for the node's
// peer-copy handler to stream. Offsets outside [0, size] are refused.
func (c *Catalog) OpenRange(_ context.Context, sum string, offset int64) (io.ReadCloser, int64, error) {
	f, e, err := c.OpenBySHA256(sum)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 || offset > e.Size {
		f.Close()
		return nil, 0, fmt.Errorf("catalog: offset %d outside the %d bytes of %s", offset, e.Size, sum)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("catalog: %w", err)
	}
	return f, e.Size, nil
}

// Delete removes the entry and its directory. It refuses with ErrInUse
// when Config.InUse(id) is true. The index is updated first, so a crash
// leaves at worst an orphan directory, never an entry without a file; on
// a full disk, where the index cannot be written, the files go first
// (freeing the space is what the user deletes for).
func (c *Catalog) Delete(id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if _, ok := c.entries[id]; !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if c.inUse != nil && c.inUse(id) {
		return fmt.Errorf("%w: %q is loaded by a worker; stop the worker first", ErrInUse, id)
	}
	next := cloneWithout(c.entries, id)
	if err := c.saveLocked(next); err != nil {
		if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
			return err
		}
		// A full disk: the index cannot be rewritten, and deleting a
		// model is how a user frees space. Its files go first; an entry
		// whose file is gone is dropped when the catalog opens, so a
		// crash (or an index that still cannot be written) leaves no
		// entry without its file behind.
		if rerr := os.RemoveAll(filepath.Join(c.dir, id)); rerr != nil {
			return fmt.Errorf("%w (and its files could not be removed: %v)", err, rerr)
		}
		c.entries = next
		if err := c.saveLocked(next); err != nil {
			c.log.Warn("catalog: model files removed on a full disk; the index file lists it until the next write (it is dropped when the catalog opens)", "id", id, "err", err)
		}
		return nil
	}
	c.entries = next
	if err := os.RemoveAll(filepath.Join(c.dir, id)); err != nil {
		c.log.Warn("catalog: model removed from the index but its files remain", "id", id, "err", err)
	}
	return nil
}

func cloneWithout(m map[string]Entry, drop string) map[string]Entry {
	out := make(map[string]Entry, len(m))
	for k, v := range m {
		if k != drop {
			out[k] = v
		}
	}
	return out
}

// NewEntry describes a file for Add.
type NewEntry struct {
	// ID of the entry (see IDFor); validated.
	ID string
	// Ref is recorded as is.
	Ref string
	// FileName under <dir>/<id>/; validated.
	FileName string
	// SHA256 is the verified sha256 of the file; "" makes Add compute it.
	SHA256 string
	// Source of the bytes.
	Source Source
	// Parts is how many split parts the file was merged from (0: none).
	Parts int
}

// Add moves the completed, verified file at tmp into the catalog as
// <dir>/<id>/<file name> and records it: the file is fsynced, renamed into
// place (copied when tmp is on another file system), the directory fsynced
// and the index rewritten atomically. tmp should live in <dir>/.partial.
//
// If the id exists with the same sha256, tmp is removed and the existing
// entry returned; with another sha256 Add fails with ErrExists and leaves
// tmp alone. A file that is not a GGUF model fails with ErrNotGGUF (tmp left
// alone). Names are validated (ErrBadName).
func (c *Catalog) Add(tmp string, ne NewEntry) (Entry, error) {
	if err := ValidateID(ne.ID); err != nil {
		return Entry{}, err
	}
	if err := ValidateFileName(ne.FileName); err != nil {
		return Entry{}, err
	}
	f, err := os.Open(tmp)
	if err != nil {
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return Entry{}, fmt.Errorf("catalog: %s is not a regular file", tmp)
	}
	if ne.SHA256 == "" {
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			f.Close()
			return Entry{}, fmt.Errorf("catalog: hashing %s: %w", tmp, err)
		}
		ne.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	if !isSHA256(ne.SHA256) {
		f.Close()
		return Entry{}, fmt.Errorf("catalog: sha256 %q is not 64 lower-case hex digits", ne.SHA256)
	}
	syncErr := f.Sync()
	f.Close()
	if syncErr != nil {
		return Entry{}, fmt.Errorf("catalog: %w", syncErr)
	}
	info, err := inspect(tmp)
	if err != nil {
		return Entry{}, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Entry{}, ErrClosed
	}
	if old, ok := c.entries[ne.ID]; ok {
		if old.SHA256 == ne.SHA256 {
			os.Remove(tmp)
			return old, nil
		}
		return Entry{}, fmt.Errorf("%w: %q has sha256 %s, the new file %s; delete it first", ErrExists, ne.ID, old.SHA256, ne.SHA256)
	}
	e := info
	e.ID, e.Ref, e.FileName, e.SHA256, e.Source, e.Parts = ne.ID, ne.Ref, ne.FileName, ne.SHA256, ne.Source, ne.Parts
	e.Size = st.Size()
	e.AddedAt = c.now().UTC()
	e.Path = c.pathOf(e.ID, e.FileName)

	modelDir := filepath.Join(c.dir, e.ID)
	if err := os.RemoveAll(modelDir); err != nil { // an orphan from a crash between index and files
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	if err := os.Mkdir(modelDir, 0o755); err != nil {
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	if err := moveFile(tmp, e.Path); err != nil {
		os.RemoveAll(modelDir)
		return Entry{}, err
	}
	syncDir(modelDir)
	syncDir(c.dir)
	next := cloneWithout(c.entries, "")
	next[e.ID] = e
	if err := c.saveLocked(next); err != nil {
		// Put the file back so the caller may retry.
		_ = os.Rename(e.Path, tmp)
		os.RemoveAll(modelDir)
		return Entry{}, err
	}
	c.entries = next
	return e, nil
}

// moveFile renames src to dst, copying (with fsync) across file systems.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EXDEV) {
		return fmt.Errorf("catalog: %w", err)
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("catalog: copying %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("catalog: %w", err)
	}
	if err := out.Close(); err != nil {
		os.Remove(dst)
		return fmt.Errorf("catalog: %w", err)
	}
	os.Remove(src)
	return nil
}

// inspect reads the GGUF header of path for the entry's model fields.
func inspect(path string) (Entry, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrNotGGUF, err)
	}
	defer f.Close()
	if n, ok := f.Uint("split.count"); ok && n > 1 {
		// gguf-split's parts hold a part of the tensors each: the catalog
		// takes a set by its first part and merges it (split.go).
		return Entry{}, fmt.Errorf("%w: %s is one part of a model split in %d files (split.count); fetch the set by its first part (hf:ORG/REPO/PREFIX-00001-of-%05d.gguf, its URL, or a local path), which merges them into one file", ErrNotGGUF, filepath.Base(path), n, n)
	}
	var e Entry
	e.Architecture, _ = f.String("general.architecture")
	if e.Architecture != "" {
		e.ContextLength, _ = f.Uint(e.Architecture + ".context_length")
	}
	e.Quantization = dominantType(f.Tensors)
	for i := range f.Tensors {
		e.Parameters += f.Tensors[i].NumElements()
	}
	return e, nil
}

// dominantType returns the type holding the most elements among the
// matrices (tensors of 2+ dimensions; norms and biases are F32 in every
// file), or among all tensors when there are no matrices. Ties go to the
// lower type id, so the answer is deterministic.
func dominantType(ts []gguf.TensorInfo) string {
	count := map[quant.Type]uint64{}
	for i := range ts {
		if len(ts[i].Dims) >= 2 {
			count[ts[i].Type] += ts[i].NumElements()
		}
	}
	if len(count) == 0 {
		for i := range ts {
			count[ts[i].Type] += ts[i].NumElements()
		}
	}
	if len(count) == 0 {
		return ""
	}
	best, bestN := quant.Type(0), uint64(0)
	first := true
	for t, n := range count {
		if first || n > bestN || (n == bestN && t < best) {
			best, bestN, first = t, n, false
		}
	}
	return best.String()
}

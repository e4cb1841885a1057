package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rbee-project/rbee/internal/filewatch"
	"github.com/rbee-project/rbee/internal/hugepage"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
)

// The repack cache file: a header page, then each repacked matrix at a
// page-aligned offset, in the order repackWeights lists them. The header
// holds repackMagic, the key (sha256 of repackLayout, the architecture,
// the model file's identity and every matrix's name, type, shape and
// size), the data size and the model's path (so a newer file of the same
// model replaces an older one). Mapped shared and read-only, its pages
// are in the page cache once for every worker of the model.
const (
	repackMagic = "RBEE-REPACK\n"
	// repackLayout versions the repacked layouts: change it with any
	// layout in model/quant/repack.go, so old files stop matching.
	repackLayout = "rbee repack layout 7" // 2: Q5_0; 3: Q4_0 in chunks for the sixteen-row kernel; 4: Q4_K too; 5: sixteen rows one stream; 6: Q6_K; 7: Q5_K
	repackHeader = 4096
	repackAlign  = 4096
	repackExt    = ".repack"
)

type cachedMatrix struct {
	mat  *quant.Matrix
	t    *gguf.TensorInfo
	off  int
	size int
}

// repackCached maps the cache file of this model's repacked matrices
// from dir, or writes one there. n is how many matrices it repacked or
// mapped; with an error it is 0 and nothing changed.
func (m *Model) repackCached(path, dir string, mats []*quant.Matrix) (int, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return 0, err
	}
	// owner names the model and part (a shard's list differs) without the
	// file's identity: a newer file of it replaces this one's cache.
	h, own := sha256.New(), sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d %d %d %d.%d\n", repackLayout, runtime.GOARCH, st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
	var list []cachedMatrix
	total := 0
	for _, mat := range mats {
		t, ok := m.src[mat]
		if !ok {
			continue
		}
		n, ok := mat.RepackedSize()
		if !ok || mat.Repacked() {
			continue
		}
		fmt.Fprintf(h, "%s %d %d %d %d\n", t.Name, mat.Type, mat.Rows, mat.Cols, n)
		fmt.Fprintf(own, "%s %d %d %d\n", t.Name, mat.Type, mat.Rows, mat.Cols)
		list = append(list, cachedMatrix{mat: mat, t: t, off: total, size: n})
		total += (n + repackAlign - 1) / repackAlign * repackAlign
	}
	if len(list) == 0 {
		return 0, nil
	}
	key := h.Sum(nil)
	owner := abs + "\n" + hex.EncodeToString(own.Sum(nil)[:8])
	name := filepath.Join(dir, hex.EncodeToString(key[:20])+repackExt)
	if data, w, err := mapRepackFile(name, key, total); err == nil {
		m.adoptRepacked(data, w, list)
		m.log.Info("mapped repacked weight matrices", "matrices", len(list), "file", name)
		return len(list), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("repack cache file not used; writing it again", "file", name, "err", err)
	}
	return m.writeRepackFile(dir, name, owner, key, total, list)
}

// repackHeaderFor is the cache file's first page; owner is the model's
// path and a hash of its part's matrices (see repackCached).
func repackHeaderFor(key []byte, total int, owner string) []byte {
	hdr := make([]byte, repackHeader)
	copy(hdr, repackMagic)
	copy(hdr[16:48], key)
	binary.LittleEndian.PutUint64(hdr[48:], uint64(total))
	p := owner
	if len(p) > repackHeader-64 {
		p = p[:repackHeader-64]
	}
	binary.LittleEndian.PutUint16(hdr[56:], uint16(len(p)))
	copy(hdr[64:], p)
	return hdr
}

// mapRepackFile maps name read-only when it is a complete cache file of
// key, with the watch of the file mapped; os.ErrNotExist when there is
// none.
func mapRepackFile(name string, key []byte, total int) ([]byte, *filewatch.Watch, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	// The watch takes f over; its stat is the one checked below, so a
	// file changed from here on is caught by Model.filesChanged.
	w, err := filewatch.New(f, "")
	if err != nil {
		return nil, nil, err
	}
	data, err := mapRepackWatched(f, w.Size(), key, total)
	if err != nil {
		w.Close()
		return nil, nil, err
	}
	return data, w, nil
}

// mapRepackWatched is mapRepackFile's check and mapping of f, whose size
// its watch took.
func mapRepackWatched(f *os.File, size int64, key []byte, total int) ([]byte, error) {
	if size != int64(repackHeader+total) {
		return nil, fmt.Errorf("size %d, want %d", size, repackHeader+total)
	}
	hdr := make([]byte, 64)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, err
	}
	if string(hdr[:len(repackMagic)]) != repackMagic || !bytes.Equal(hdr[16:48], key) || binary.LittleEndian.Uint64(hdr[48:]) != uint64(total) {
		return nil, errors.New("header does not match this model")
	}
	data, err := unix.Mmap(int(f.Fd()), 0, repackHeader+total, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	_ = hugepage.Advise(data) // advice: base pages work too
	return data, nil
}

// writeRepackFile repacks list into a new file in dir, then names it
// name. Everything that can fail before the repacking is done first:
// afterwards the mapping stays, whatever happens to the file's name.
func (m *Model) writeRepackFile(dir, name, owner string, key []byte, total int, list []cachedMatrix) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, ".tmp-*"+repackExt)
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	fail := func(err error) (int, error) {
		f.Close()
		os.Remove(tmp)
		return 0, err
	}
	// Blocks reserved now: a write through the mapping to a sparse file on
	// a full disk would be SIGBUS, not an error.
	if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(repackHeader+total)); err != nil {
		return fail(fmt.Errorf("reserving %d bytes: %w", repackHeader+total, err))
	}
	data, err := unix.Mmap(int(f.Fd()), 0, repackHeader+total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	// Before the first write: the pages written are cached (and mapped,
	// here and in every later process) as huge pages where the file
	// system can (advice: base pages work too).
	_ = hugepage.Advise(data)
	m.pool.Run(len(list), func(_, start, end int) {
		for _, c := range list[start:end] {
			body := data[repackHeader+c.off:]
			c.mat.RepackInto(func(n int) []byte { return body[:n:n] })
		}
	})
	copy(data, repackHeaderFor(key, total, owner))
	_ = unix.Mprotect(data, unix.PROT_READ)
	// From here on the matrices read the mapping; a failure only costs
	// the next load the repacking. The file is made durable before it
	// gets its name, so a name always holds a whole file; it is watched
	// as it is then (the writes through the mapping have set its
	// modification time), so that a change in place by another process
	// is caught (Model.filesChanged).
	err = f.Sync()
	w, werr := filewatch.New(f, name) // takes f over
	if werr != nil {
		w = nil
	}
	m.adoptRepacked(data, w, list)
	if err == nil {
		err = werr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		m.log.Warn("repack cache file not kept", "file", name, "err", err)
		return len(list), nil
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	removeStaleRepacks(dir, name, owner)
	m.log.Info("repacked weight matrices into the cache", "matrices", len(list), "file", name)
	return len(list), nil
}

// adoptRepacked points each matrix at its copy in data (mapped for the
// Model's lifetime: the arena unmaps it, and closes w, the watch of its
// file, at Close) and releases the file pages of its tensor.
func (m *Model) adoptRepacked(data []byte, w *filewatch.Watch, list []cachedMatrix) {
	m.arena.adopt(data, w)
	for _, c := range list {
		body := data[repackHeader+c.off:][:c.size:c.size]
		if !c.mat.Repacked() {
			c.mat.UseRepacked(body)
		}
		if err := m.file.ReleaseTensor(c.t); err != nil {
			m.log.Warn("release of repacked tensor pages failed", "tensor", c.t.Name, "err", err)
		}
	}
}

// removeStaleRepacks deletes the other cache files in dir of owner: made
// from an older file of the same model and part, or in another layout.
func removeStaleRepacks(dir, keep, owner string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if p == keep || !strings.HasSuffix(e.Name(), repackExt) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if o, ok := repackOwner(p); ok && o == owner {
			os.Remove(p)
		}
	}
}

// PruneRepackCache deletes the cache files in dir (Options.RepackCache)
// whose model file is gone, and temporary files left by a load that did
// not finish and are older than an hour; a file in use stays mapped by
// its processes. A missing dir is not an error.
func PruneRepackCache(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if !strings.HasSuffix(e.Name(), repackExt) {
			continue
		}
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.Remove(p)
			}
			continue
		}
		owner, ok := repackOwner(p)
		if !ok {
			continue
		}
		model, _, _ := strings.Cut(owner, "\n")
		if _, err := os.Stat(model); errors.Is(err, os.ErrNotExist) {
			os.Remove(p)
		}
	}
	return nil
}

// repackOwner reads the owner (model path and part) of cache file p.
func repackOwner(p string) (string, bool) {
	f, err := os.Open(p)
	if err != nil {
		return "", false
	}
	defer f.Close()
	hdr := make([]byte, repackHeader)
	if _, err := f.ReadAt(hdr, 0); err != nil || string(hdr[:len(repackMagic)]) != repackMagic {
		return "", false
	}
	n := int(binary.LittleEndian.Uint16(hdr[56:]))
	if n > repackHeader-64 {
		return "", false
	}
	return string(hdr[64 : 64+n]), true
}

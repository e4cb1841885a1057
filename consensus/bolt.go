package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltOptions: a short lock timeout so that a second process on the same
// data dir fails fast instead of hanging.
func boltOptions() *bolt.Options {
	return &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true}
}

// ErrDamagedStore: raft.db is not a whole bolt database (cut short, or
// pages overwritten; bbolt trusts its file: opening such a file panicked
// in a goroutine, its free page scan, or died of SIGBUS, a page past the
// end of a shorter file), or no snapshot opens (raft said only "failed to
// load any existing snapshots"). The message names the file and what to do.
var ErrDamagedStore = errors.New("consensus: raft state is damaged")

// bbolt's on-disk format (go.etcd.io/bbolt v1.3: page.go, db.go).
const (
	boltPageHeader   = 16 // id u64, flags u16, count u16, overflow u32
	boltElemSize     = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltFreelistPage = 0x10
	boltBucketLeaf   = 0x01
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltNoFreelist   = ^uint64(0)
	boltMinPageSize  = 512
	boltMaxPageSize  = 1 << 16
	boltMaxDepth     = 64 // far beyond any real tree
)

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high water mark: pages [0, pgid) are in use
	txid     uint64
}

// readBoltMeta decodes the meta page at b (a whole page); ok is false when
// it is not a valid meta (magic, version, checksum).
func readBoltMeta(b []byte) (m boltMeta, ok bool) {
	if len(b) < boltPageHeader+64 {
		return m, false
	}
	mb := b[boltPageHeader : boltPageHeader+64]
	le := binary.LittleEndian
	if le.Uint32(mb[0:]) != boltMagic || le.Uint32(mb[4:]) != boltVersion {
		return m, false
	}
	h := fnv.New64a()
	h.Write(mb[:56])
	if h.Sum64() != le.Uint64(mb[56:]) {
		return m, false
	}
	m = boltMeta{pageSize: le.Uint32(mb[8:]), root: le.Uint64(mb[16:]), freelist: le.Uint64(mb[32:]),
		pgid: le.Uint64(mb[40:]), txid: le.Uint64(mb[48:])}
	if m.pageSize < boltMinPageSize || m.pageSize > boltMaxPageSize || m.pageSize&(m.pageSize-1) != 0 {
		return m, false
	}
	return m, true
}

// prepareBoltFile checks the bolt file at path before bbolt maps it, so
// that a damaged one is an error naming the file instead of a crash. A
// file that bbolt's own initialisation left half-written (the disk
// filled while a new node created it: no transaction beyond the two
// initial metas ever committed, so it holds nothing) is removed, and
// bbolt creates it anew.
func prepareBoltFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("consensus: open raft.db: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("consensus: open raft.db: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrDamagedStore, path)
	}
	size := fi.Size()
	if size == 0 {
		return nil // bbolt initialises an empty file
	}
	// The two metas are pages 0 and 1; read both at the largest page size
	// and decode each at every possible offset of page 1.
	head := make([]byte, 2*boltMaxPageSize)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("consensus: read raft.db: %w", err)
	}
	head = head[:n]
	best, found := readBoltMeta(head)
	if found {
		ps := int(best.pageSize)
		if len(head) >= 2*ps {
			if m1, ok := readBoltMeta(head[ps : 2*ps]); ok && m1.txid > best.txid {
				best = m1
			}
		}
	} else {
		for ps := boltMinPageSize; ps <= boltMaxPageSize && 2*ps <= len(head); ps *= 2 {
			if m1, ok := readBoltMeta(head[ps : 2*ps]); ok && int(m1.pageSize) == ps {
				best, found = m1, true
				break
			}
		}
	}
	if !found || best.txid <= 1 {
		// bbolt's initialisation writes metas with txid 0 and 1 and two
		// more pages in one write; a file with no later transaction
		// holds no raft state. A file too short for its own first four
		// pages is what a failed initialisation leaves.
		if found && size >= 4*int64(best.pageSize) {
			return nil
		}
		if !found && size >= 4*boltMinPageSize {
			return fmt.Errorf("%w: %s has no valid meta page; %s", ErrDamagedStore, path, damagedAdvice(path))
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("consensus: remove the half-created %s: %w", path, err)
		}
		return nil
	}
	if want := int64(best.pgid) * int64(best.pageSize); size < want {
		return fmt.Errorf("%w: %s is cut short (%d bytes, its pages need %d); %s", ErrDamagedStore, path, size, want, damagedAdvice(path))
	}
	w := boltWalker{f: f, m: best, seen: map[uint64]bool{}}
	if best.freelist != boltNoFreelist {
		if err := w.checkFreelist(best.freelist); err != nil {
			return fmt.Errorf("%w: %s: %v; %s", ErrDamagedStore, path, err, damagedAdvice(path))
		}
	}
	if err := w.walk(best.root, 0); err != nil {
		return fmt.Errorf("%w: %s: %v; %s", ErrDamagedStore, path, err, damagedAdvice(path))
	}
	return nil
}

// damagedAdvice says what to do about a damaged file of raft's
// directory (raft.db, snapshots), at path.
func damagedAdvice(path string) string {
	return fmt.Sprintf("stop the node, move the directory %s (raft.db and snapshots together) away and start it again: "+
		"it rejoins its cluster and receives the registry from the leader (a one-node cluster starts with an empty registry)", filepath.Dir(path))
}

// boltWalker visits every page reachable from the root bucket, as bbolt's
// free page scan does, checking each before it is read.
type boltWalker struct {
	f    *os.File
	m    boltMeta
	seen map[uint64]bool
}

// page reads page id with its overflow pages.
func (w *boltWalker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= w.m.pgid {
		return nil, fmt.Errorf("page %d out of bounds (%d pages)", id, w.m.pgid)
	}
	ps := int64(w.m.pageSize)
	hdr := make([]byte, boltPageHeader)
	if _, err := w.f.ReadAt(hdr, int64(id)*ps); err != nil {
		return nil, fmt.Errorf("page %d: %v", id, err)
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d holds the header of page %d", id, got)
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	if id+overflow >= w.m.pgid {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the end", id, overflow)
	}
	for p := id; p <= id+overflow; p++ {
		if w.seen[p] {
			return nil, fmt.Errorf("page %d referenced twice", p)
		}
		w.seen[p] = true
	}
	b := make([]byte, int64(overflow+1)*ps)
	if _, err := w.f.ReadAt(b, int64(id)*ps); err != nil {
		return nil, fmt.Errorf("page %d: %v", id, err)
	}
	return b, nil
}

func (w *boltWalker) checkFreelist(id uint64) error {
	b, err := w.page(id)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	if le.Uint16(b[8:])&boltFreelistPage == 0 {
		return fmt.Errorf("page %d is not a freelist page", id)
	}
	count := uint64(le.Uint16(b[10:]))
	off := uint64(boltPageHeader)
	if count == 0xFFFF {
		if len(b) < boltPageHeader+8 {
			return fmt.Errorf("freelist page %d cut short", id)
		}
		count, off = le.Uint64(b[boltPageHeader:]), boltPageHeader+8
	}
	if count > uint64(len(b)) || off+count*8 > uint64(len(b)) {
		return fmt.Errorf("freelist page %d: %d entries do not fit", id, count)
	}
	return nil
}

// walk checks the bucket page id and the pages and buckets below it.
func (w *boltWalker) walk(id uint64, depth int) error {
	b, err := w.page(id)
	if err != nil {
		return err
	}
	return w.walkPage(b, id, depth)
}

func (w *boltWalker) walkPage(b []byte, id uint64, depth int) error {
	if depth > boltMaxDepth {
		return fmt.Errorf("page %d: tree deeper than %d", id, boltMaxDepth)
	}
	le := binary.LittleEndian
	flags, count := le.Uint16(b[8:]), int(le.Uint16(b[10:]))
	if boltPageHeader+count*boltElemSize > len(b) {
		return fmt.Errorf("page %d: %d elements do not fit", id, count)
	}
	for i := 0; i < count; i++ {
		eo := boltPageHeader + i*boltElemSize
		e := b[eo : eo+boltElemSize]
		switch {
		case flags&boltBranchPage != 0:
			pos, ksize := uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:]))
			if uint64(eo)+pos+ksize > uint64(len(b)) {
				return fmt.Errorf("page %d: element %d runs past the page", id, i)
			}
			if err := w.walk(le.Uint64(e[8:]), depth+1); err != nil {
				return err
			}
		case flags&boltLeafPage != 0:
			eflags, pos := le.Uint32(e[0:]), uint64(le.Uint32(e[4:]))
			ksize, vsize := uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
			start := uint64(eo) + pos + ksize
			if start+vsize > uint64(len(b)) {
				return fmt.Errorf("page %d: element %d runs past the page", id, i)
			}
			if eflags&boltBucketLeaf == 0 {
				continue
			}
			v := b[start : start+vsize]
			if len(v) < 16 {
				return fmt.Errorf("page %d: element %d: bucket header cut short", id, i)
			}
			if root := le.Uint64(v); root != 0 {
				if err := w.walk(root, depth+1); err != nil {
					return err
				}
				continue
			}
			inline := v[16:]
			if len(inline) < boltPageHeader {
				return fmt.Errorf("page %d: element %d: inline bucket cut short", id, i)
			}
			if err := w.walkPage(inline, id, depth+1); err != nil {
				return err
			}
		default:
			return fmt.Errorf("page %d: not a branch or leaf page (flags %#x)", id, flags)
		}
	}
	if count == 0 && flags&(boltBranchPage|boltLeafPage) == 0 {
		return fmt.Errorf("page %d: not a branch or leaf page (flags %#x)", id, flags)
	}
	return nil
}

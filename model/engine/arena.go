package engine

import (
	"sync"

	"github.com/rbee-project/rbee/internal/filewatch"
	"github.com/rbee-project/rbee/model/gguf"
)

// weightArena allocates the memory of repacked weight matrices (see
// Model.repackWeights): on Linux anonymous mappings with transparent huge
// pages requested, since first-touching hundreds of MiB of 4 KiB pages is
// most of the cost of repacking (medium-q4_k, 415 MiB: ~3 s with 4 KiB
// pages on the project's VM, ~1.2 s with huge pages); elsewhere the Go
// heap. Safe for concurrent use; free releases everything at Model.Close.
type weightArena struct {
	mu   sync.Mutex
	maps [][]byte // mappings to release (Linux)
	// watches are the files of adopted mappings (the repack cache's),
	// closed at free.
	watches []*filewatch.Watch
}

// arenaAlign is where allocAll starts each region: a page, so a region
// never shares a page with another's.
const arenaAlign = 4096

// allocAll returns n zeroed bytes for each of sizes, all in one mapping
// that starts on a huge page (on Linux; elsewhere one Go allocation), so
// that the weights are under huge pages whole: a mapping of its own per
// matrix left every matrix under 2 MiB (all of a small model's layers) on
// 4 KiB pages, and a decode step streams every weight once, a TLB miss
// per 4 KiB. Measured on a Zen 4 (one thread, one vector, a Q4_K matrix
// four times the L3): 29 GB/s of weights on 4 KiB pages, 37 on huge pages.
// Untouched regions cost no memory.
func (a *weightArena) allocAll(sizes []int) [][]byte {
	offs, total := make([]int, len(sizes)), 0
	for i, n := range sizes {
		offs[i] = total
		total += (n + arenaAlign - 1) / arenaAlign * arenaAlign
	}
	out := make([][]byte, len(sizes))
	if total == 0 {
		return out
	}
	b := a.allocHuge(total)
	for i, n := range sizes {
		out[i] = b[offs[i] : offs[i]+n : offs[i]+n]
	}
	return out
}

// allocHuge returns n zeroed bytes starting on a huge page where the
// platform maps them (the mapping is one huge page longer, its start
// unused).
func (a *weightArena) allocHuge(n int) []byte {
	b, mapped := arenaMap(n + hugePage)
	if !mapped {
		return b[:n]
	}
	a.mu.Lock()
	a.maps = append(a.maps, b)
	a.mu.Unlock()
	off := hugeOffset(b)
	return b[off : off+n : off+n]
}

// adopt makes free unmap b, a mapping made elsewhere (the repack cache
// file's), and close w, the watch of its file (nil: none).
func (a *weightArena) adopt(b []byte, w *filewatch.Watch) {
	a.mu.Lock()
	a.maps = append(a.maps, b)
	if w != nil {
		a.watches = append(a.watches, w)
	}
	a.mu.Unlock()
}

// changed returns the watches' errors (filewatch.ErrChanged): a file of
// an adopted mapping written or truncated in place.
func (a *weightArena) changed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.watches {
		if err := w.Check(); err != nil {
			return err // the first: every forward pass checks, so allocate nothing while none changed
		}
	}
	return nil
}

// free releases the mappings; nothing allocated may be used afterwards.
func (a *weightArena) free() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range a.maps {
		arenaUnmap(b)
	}
	a.maps = nil
	for _, w := range a.watches {
		w.Close()
	}
	a.watches = nil
}

// holds reports whether addr lies in one of the arena's mappings (the
// repack cache file's among them).
func (a *weightArena) holds(addr uintptr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range a.maps {
		if gguf.Holds(b, addr) {
			return true
		}
	}
	return false
}

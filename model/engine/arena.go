package engine

import (
	"sync"

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
}

// alloc returns n zeroed bytes.
func (a *weightArena) alloc(n int) []byte {
	b, mapped := arenaMap(n)
	if mapped {
		a.mu.Lock()
		a.maps = append(a.maps, b)
		a.mu.Unlock()
	}
	return b
}

// adopt makes free unmap b, a mapping made elsewhere (the repack cache
// file's).
func (a *weightArena) adopt(b []byte) {
	a.mu.Lock()
	a.maps = append(a.maps, b)
	a.mu.Unlock()
}

// free releases the mappings; nothing allocated may be used afterwards.
func (a *weightArena) free() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range a.maps {
		arenaUnmap(b)
	}
	a.maps = nil
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

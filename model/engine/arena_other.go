//go:build !linux

package engine

// arenaMap allocates from the Go heap (huge-page mappings are Linux only).
func arenaMap(n int) ([]byte, bool) { return make([]byte, n), false }

func arenaUnmap([]byte) {}

// hugePage is only an alignment here (no huge-page mappings).
const hugePage = 4096

// hugeOffset is 0: the Go heap's memory is not remapped here.
func hugeOffset([]byte) int { return 0 }

//go:build !linux

package engine

// arenaMap allocates from the Go heap (huge-page mappings are Linux only).
func arenaMap(n int) ([]byte, bool) { return make([]byte, n), false }

func arenaUnmap([]byte) {}

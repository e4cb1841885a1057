package engine

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rbee-project/rbee/internal/hugepage"
)

// arenaMap maps n bytes of anonymous memory and asks for huge pages
// (MADV_HUGEPAGE: honoured where transparent huge pages are "madvise" or
// "always"); it falls back to the Go heap if the mapping fails.
func arenaMap(n int) ([]byte, bool) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n), false
	}
	_ = hugepage.Advise(b) // advice only: 4 KiB pages work too
	return b, true
}

func arenaUnmap(b []byte) { _ = unix.Munmap(b) }

// hugePage is the size of a transparent huge page with 4 KiB base pages
// (amd64, arm64).
const hugePage = 2 << 20

// hugeOffset is how far into b the first huge page boundary lies.
func hugeOffset(b []byte) int {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return int((hugePage - start%hugePage) % hugePage)
}

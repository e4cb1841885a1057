package builtin

import (
	"os"
	"reflect"
	"syscall"
)

// release tells the kernel that this process no longer needs the pages
// wholly inside b resident. b is embedded data of the executable, mapped
// private from its file and never written, so MADV_DONTNEED only drops
// the pages from this process's page tables: the next read faults them
// in again from the file (the page cache), with the same bytes. Pages b
// shares with other data at either end are left alone.
func release(b []byte) {
	if len(b) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	start := reflect.ValueOf(b).Pointer()
	end := start + uintptr(len(b))
	lo := (page - start%page) % page
	hi := uintptr(len(b)) - end%page
	if lo >= hi {
		return
	}
	_ = syscall.Madvise(b[lo:hi], syscall.MADV_DONTNEED)
}

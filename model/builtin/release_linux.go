package builtin

import (
	"bufio"
	"bytes"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
)

// release tells the kernel that this process no longer needs the pages
// wholly inside b mapped. b is embedded data of the executable, mapped
// private from its file and never written, so MADV_DONTNEED only drops
// the pages from this process's page tables (its RSS; they stay in the
// page cache, shared with every process that maps the file, until the
// kernel reclaims them): the next read faults them in again from the
// file, with the same bytes. Pages b shares with other data at either
// end are left alone, and so is b when it is not in a file mapping (an
// executable that unpacks itself into anonymous memory, as packers do,
// where MADV_DONTNEED would zero the pages).
func release(b []byte) {
	if len(b) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	start := reflect.ValueOf(b).Pointer()
	end := start + uintptr(len(b))
	lo := (page - start%page) % page
	hi := uintptr(len(b)) - end%page
	if lo >= hi || !fileMapped(start+lo, start+hi) {
		return
	}
	_ = syscall.Madvise(b[lo:hi], syscall.MADV_DONTNEED)
}

// fileMapped reports whether the addresses [lo, hi) lie in one mapping
// of a file (/proc/self/maps: a non-zero inode and a path).
func fileMapped(lo, hi uintptr) bool {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// 00400000-01077000 r-xp 00000000 fe:00 10600970   /path/to/exe
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		from, to, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(from, 16, 64)
		z, err2 := strconv.ParseUint(to, 16, 64)
		if err1 != nil || err2 != nil || uint64(lo) < a || uint64(hi) > z {
			continue
		}
		return f[4] != "0" && strings.HasPrefix(f[5], "/")
	}
	return false
}

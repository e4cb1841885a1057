// Package hugepage asks the kernel to back a memory mapping with
// transparent huge pages.
//
// A decode step of the engine streams every weight once: on 4 KiB pages
// that is a TLB miss per page, on 2 MiB pages one per 512 of them (a Q4_K
// matrix streamed by one thread from memory: 29 GB/s on 4 KiB pages, 37
// on huge pages; model/engine/arena.go). Anonymous memory gets huge
// pages with the advice where transparent huge pages are "madvise" or
// "always". A file's mapping gets them where the file system keeps large
// folios in the page cache (ext4 and XFS on Linux 6.x): with the advice,
// a fault reads the file in 2 MiB folios and maps each with one entry, and
// pages written through a shared mapping are cached that way too. The
// page cache still holds each page once for every process that maps the
// file.
package hugepage

// Advise asks for huge pages for b, a mapping made with mmap (its start
// page-aligned), before its pages are first touched; file pages the page
// cache already holds stay as they are cached. It is advice: where the
// kernel or platform cannot (other systems, a kernel without transparent
// huge pages, a file system without large folios, huge pages "never"), b
// works on base pages and Advise returns nil; so does a b the kernel
// refuses as invalid (EINVAL: also a start not page-aligned). b may be
// nil.
func Advise(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return advise(b)
}

// Unavailable says why this system has no transparent huge pages to
// advise, or "" where it has them (Linux with transparent huge pages
// built in, whatever their setting: the advice is recorded on the
// mapping even while they are "never").
func Unavailable() string { return unavailable() }

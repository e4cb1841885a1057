//go:build linux || darwin || freebsd

package hf

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// freeBytes returns the bytes available to an unprivileged user on the file
// system holding dir.
func freeBytes(dir string) (uint64, bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false, fmt.Errorf("hf: statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true, nil //nolint:unconvert // field types differ per OS
}

// LinksCounted reports whether this platform tells how many names a file
// has: only then may a partial download be a hard link to a held file
// (Transfer replaces such a partial before it writes).
func LinksCounted() bool { return true }

// linkCount returns how many names fi's file has (1 when unknown).
func linkCount(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink) //nolint:unconvert // field types differ per OS
	}
	return 1
}

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

// linkCount returns how many names fi's file has (1 when unknown).
func linkCount(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink) //nolint:unconvert // field types differ per OS
	}
	return 1
}

//go:build linux || darwin || freebsd

package hf

import (
	"fmt"

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

//go:build unix

package filewatch

import (
	"os"

	"golang.org/x/sys/unix"
)

// statOf fstats f without allocating (os.File.Stat allocates its
// FileInfo). f is a regular file the Watch keeps open: its descriptor
// stays valid until Close.
func statOf(f *os.File) (stat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return stat{}, err
	}
	return stat{size: st.Size, mtime: st.Mtim.Nano()}, nil
}

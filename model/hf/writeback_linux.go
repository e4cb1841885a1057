package hf

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing n bytes of f from off
// back to disk without waiting for it (sync_file_range WRITE): the final
// fsync then finds little left to do. Failure only means a longer fsync.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { _ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE) })
}

// flushData flushes f's written data to the device (fdatasync), the
// file's size included, but not metadata a later read does not need.
func flushData(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

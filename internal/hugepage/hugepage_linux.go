package hugepage

import (
	"errors"

	"golang.org/x/sys/unix"
)

func advise(b []byte) error {
	err := unix.Madvise(b, unix.MADV_HUGEPAGE)
	if errors.Is(err, unix.EINVAL) {
		return nil // a kernel without transparent huge pages
	}
	return err
}

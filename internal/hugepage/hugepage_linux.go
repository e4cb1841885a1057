package hugepage

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func advise(b []byte) error {
	err := unix.Madvise(b, unix.MADV_HUGEPAGE)
	if errors.Is(err, unix.EINVAL) {
		return nil // a kernel without transparent huge pages
	}
	return err
}

func unavailable() string {
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/enabled"); err != nil {
		return "no transparent huge pages in this kernel"
	}
	return ""
}

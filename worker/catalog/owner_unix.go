//go:build unix

package catalog

import (
	"os"
	"syscall"
)

// foreignOwner reports whether fi's file belongs to a user other than
// root and this process's effective user: that user may change it (or,
// for a directory, replace its entries) whatever its mode.
func foreignOwner(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return st.Uid != 0 && int(st.Uid) != os.Geteuid()
}

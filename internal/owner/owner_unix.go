//go:build unix

package owner

import (
	"os"
	"syscall"
)

// Of returns the uid that owns fi's file.
func Of(fi os.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

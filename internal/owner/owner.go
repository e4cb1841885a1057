// Package owner tells which user owns a file.
package owner

import "os"

// OfPath returns the uid that owns path (false when it cannot be read or
// the platform has no uids).
func OfPath(path string) (uint32, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	return Of(fi)
}

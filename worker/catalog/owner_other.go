//go:build !unix

package catalog

import "os"

// foreignOwner cannot tell on this platform.
func foreignOwner(os.FileInfo) bool { return false }

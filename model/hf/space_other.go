//go:build !(linux || darwin || freebsd)

package hf

import "os"

// freeBytes cannot tell on this platform; the check is skipped and a full
// disk shows up as a write error instead.
func freeBytes(string) (uint64, bool, error) { return 0, false, nil }

// linkCount cannot tell on this platform: every file counts as having one
// name.
func linkCount(os.FileInfo) uint64 { return 1 }

// LinksCounted reports whether this platform tells how many names a file
// has: only then may a partial download be a hard link to a held file
// (Transfer replaces such a partial before it writes; here it could not
// tell, and would write through the link).
func LinksCounted() bool { return false }

//go:build !(linux || darwin || freebsd)

package hf

import "os"

// freeBytes cannot tell on this platform; the check is skipped and a full
// disk shows up as a write error instead.
func freeBytes(string) (uint64, bool, error) { return 0, false, nil }

// linkCount cannot tell on this platform: every file counts as having one
// name.
func linkCount(os.FileInfo) uint64 { return 1 }

//go:build !linux

package process

// nprocUsage: the process limit is checked on Linux only.
func nprocUsage() (limit uint64, used int, ok bool) { return 0, 0, false }

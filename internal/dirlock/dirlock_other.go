//go:build !unix

package dirlock

// Acquire does not lock on this platform (no flock): it returns a Lock
// whose Release does nothing.
func Acquire(dir string) (*Lock, error) { return &Lock{}, nil }

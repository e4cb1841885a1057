// Package dirlock keeps one process at a time in a data directory: two
// rbee nodes on one data dir would share an identity, a Raft log and a
// process table, and the second would re-adopt the first one's workers.
package dirlock

import (
	"errors"
	"fmt"
)

// FileName is the lock file in the directory. It stays after Release (a
// file removed while a second process waits on it would let a third
// lock a new one); only the lock on it matters.
const FileName = "lock"

// ErrLocked: another process holds the directory; the error names its pid
// when the lock file says it.
var ErrLocked = errors.New("dirlock: directory in use")

// Lock is a held directory lock.
type Lock struct {
	release func() error
}

// Release gives the directory up. Safe to call more than once and on nil.
func (l *Lock) Release() error {
	if l == nil || l.release == nil {
		return nil
	}
	r := l.release
	l.release = nil
	return r()
}

func lockedErr(dir string, pid int) error {
	if pid > 0 {
		return fmt.Errorf("%w: %s is held by pid %d", ErrLocked, dir, pid)
	}
	return fmt.Errorf("%w: %s", ErrLocked, dir)
}

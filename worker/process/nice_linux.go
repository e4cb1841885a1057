package process

import (
	"fmt"
	"syscall"
)

// lowerPriority makes the process group led by pid run delta nice levels
// below this process (capped at 19). Linux keeps a nice value per thread
// and a new thread takes its creator's, so setting it on every thread
// of the group (PRIO_PGRP reaches them all) right after the exec covers
// every thread the worker starts later too.
func lowerPriority(pid, delta int) error {
	if delta <= 0 {
		return nil
	}
	// The raw syscall returns 20 - nice (glibc's getpriority converts; Go's does not).
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		return fmt.Errorf("process: own priority: %w", err)
	}
	nice := min(20-p+delta, 19)
	if err := syscall.Setpriority(syscall.PRIO_PGRP, pid, nice); err != nil {
		return fmt.Errorf("process: nice %d for worker %d: %w", nice, pid, err)
	}
	return nil
}

//go:build !linux

package process

// waitExited is Linux's (waitid with WNOWAIT); elsewhere the group a child
// leaves behind is only killed by Stop's escalation.
func waitExited(int) bool { return false }

package process

import (
	"errors"

	"golang.org/x/sys/unix"
)

// waitExited blocks until the child pid has exited, without reaping it,
// and reports whether it saw the exit: until cmd.Wait reaps the child its
// pid, and so the id of the process group it leads, cannot be reused, so
// the rest of the group can be killed without hitting anyone else's.
func waitExited(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err == nil
		}
	}
}

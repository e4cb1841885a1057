package engineguard

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill the engine if the guard dies.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

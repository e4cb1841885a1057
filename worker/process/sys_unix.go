//go:build unix

package process

import (
	"errors"
	"os/exec"
	"syscall"
)

// setGroup makes the child the leader of its own session, and so of its
// own process group: a SIGKILL of the group reaches anything the worker
// started, a signal to the node's group (a terminal's Ctrl-C) does not
// reach the worker, and the worker has no controlling terminal, so an
// engine that opens /dev/tty neither writes into the node's terminal nor
// is stopped (SIGTTIN) reading from it.
func setGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
}

// signalPID sends sig to one process.
func signalPID(pid int, sig syscall.Signal) error {
	err := syscall.Kill(pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// killGroup sends SIGKILL to the process group led by pid, if pid still
// leads one.
func killGroup(pid int) error {
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid != pid {
		// pid no longer leads its group (it was reused): kill nothing but it
		// is not ours either, so do nothing.
		return nil
	}
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

const sigTERM = syscall.SIGTERM

// killOrphanedGroup sends SIGKILL to what is left of the process group pid
// led, once pid itself has exited (exited reports a zombie not yet reaped
// by its parent): the id of a group is not reused while it has members,
// nor a zombie's pid, so those are the leader's.
func killOrphanedGroup(pid int, exited func(int) bool) error {
	pgid, err := syscall.Getpgid(pid)
	switch {
	case errors.Is(err, syscall.ESRCH): // gone and reaped
	case err == nil && pgid == pid && exited(pid): // gone, not yet reaped
	default:
		return nil // pid runs (again): not a group left behind
	}
	err = syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

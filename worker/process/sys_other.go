//go:build !unix

package process

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

func setGroup(*exec.Cmd) {}

// signalPID can only kill outright on systems without Unix signals.
func signalPID(pid int, _ syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	err = p.Kill()
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

func killGroup(pid int) error { return signalPID(pid, 0) }

func killOrphanedGroup(int, func(int) bool) error { return nil }

const sigTERM = syscall.Signal(15)

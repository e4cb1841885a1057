package gguf

import (
	"fmt"
	"os"
)

// checkRegular refuses a path that is no regular file before Open opens
// it: opening a FIFO blocks until a writer comes (a hang that Ctrl-C
// does not end), and a directory or device fails later with a mapping
// error that does not say what is wrong.
func checkRegular(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("gguf: open: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file (%s)", ErrInvalid, path, modeKind(st.Mode()))
	}
	return nil
}

// modeKind names the kind of a file that is not regular.
func modeKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.Type().String()
}

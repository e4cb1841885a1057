//go:build unix

package dirlock

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHelperHold is a child process that holds the lock until its stdin
// closes (not a test of its own).
func TestHelperHold(t *testing.T) {
	dir := os.Getenv("DIRLOCK_HOLD")
	if dir == "" {
		t.Skip("helper process")
	}
	l, err := Acquire(dir)
	require.NoError(t, err)
	os.Stdout.WriteString("held\n")
	_, _ = os.Stdin.Read(make([]byte, 1))
	require.NoError(t, l.Release())
}

func TestAcquire(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir)
	require.NoError(t, err)
	b, err := os.ReadFile(dir + "/" + FileName)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(os.Getpid()), strings.TrimSpace(string(b)))
	require.NoError(t, l.Release())
	require.NoError(t, l.Release(), "twice is fine")
	var none *Lock
	require.NoError(t, none.Release())

	// Another process holds it: refused with its pid, until it exits.
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperHold$")
	cmd.Env = append(os.Environ(), "DIRLOCK_HOLD="+dir)
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	buf := make([]byte, 5)
	_, err = out.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "held\n", string(buf))
	_, err = Acquire(dir)
	require.ErrorIs(t, err, ErrLocked)
	require.ErrorContains(t, err, "pid "+strconv.Itoa(cmd.Process.Pid))
	require.NoError(t, cmd.Process.Kill()) // killed, not released: the kernel drops the lock
	_ = cmd.Wait()
	in.Close()
	l, err = Acquire(dir)
	require.NoError(t, err)
	require.NoError(t, l.Release())
}

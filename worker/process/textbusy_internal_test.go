//go:build linux

package process

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStartWhileBinaryBusy: a binary still open for writing cannot be
// executed (ETXTBSY), as when one spawn installs the worker binary while
// another forks; the start is tried again and succeeds once the writer
// closes it. A binary that stays busy fails with ETXTBSY after the tries.
func TestStartWhileBinaryBusy(t *testing.T) {
	src, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1)")
	}
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "worker")
	w, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = w.Write(b)
	require.NoError(t, err)

	// Busy for good: every try fails.
	tries := 0
	_, err = startRetrying(func() *exec.Cmd { tries++; return exec.Command(bin) })
	require.True(t, errors.Is(err, syscall.ETXTBSY), "err = %v", err)
	require.Equal(t, textBusyTries, tries)

	// Busy for a moment: a later try starts it.
	tries = 0
	go func() {
		time.Sleep(30 * time.Millisecond)
		_ = w.Close()
	}()
	cmd, err := startRetrying(func() *exec.Cmd { tries++; return exec.Command(bin) })
	require.NoError(t, err)
	require.NoError(t, cmd.Wait())
	require.Greater(t, tries, 1)
}

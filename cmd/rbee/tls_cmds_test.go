package main

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCAFileThatNeverEnds: a --ca that is no certificate file but a pipe
// or a device that never ends (--ca /dev/zero ran the CLI out of memory)
// is refused once it is past the largest PEM, not read forever.
func TestCAFileThatNeverEnds(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs mkfifo")
	}
	fifo := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		// 1 MiB, then the pipe stays open: a reader that wants the end
		// waits until the test ends.
		_, _ = f.WriteString(strings.Repeat("A", 1<<20))
		<-stop
	}()
	errc := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"status", "--node", "https://127.0.0.1:1", "--ca", fifo})
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		errc <- root.Execute()
	}()
	defer func() {
		close(stop)
		<-writerDone
	}()
	select {
	case err := <-errc:
		require.ErrorContains(t, err, "over 65536 bytes")
		require.ErrorContains(t, err, "--ca")
	case <-time.After(10 * time.Second):
		close(stop) // let the reader finish before the test ends
		<-writerDone
		stop = make(chan struct{})
		<-errc
		t.Fatal("--ca was read without end")
	}
}

// TestTokenFileThatNeverEnds: --token-file, like --ca, stops reading past
// what a token can be; a small file still gives its token, with a
// warning when other users of the machine can read it.
func TestTokenFileThatNeverEnds(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode  os.FileMode
		loose bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}} {
		p := filepath.Join(dir, "token")
		require.NoError(t, os.WriteFile(p, []byte("rbee_abcdefghijklmnopqrstuvwxyz\n"), 0o600))
		require.NoError(t, os.Chmod(p, tc.mode))
		tok, loose, err := readTokenFile(p)
		require.NoError(t, err)
		require.Equal(t, "rbee_abcdefghijklmnopqrstuvwxyz", tok)
		require.Equal(t, tc.loose, loose != "", "mode %#o: %q", tc.mode, loose)
		require.NotContains(t, loose, tok)
		require.NoError(t, os.Remove(p))
	}
	_, _, err := readTokenFile("/dev/zero")
	require.ErrorContains(t, err, "not a cluster token file")
}

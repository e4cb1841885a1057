//go:build unix

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// A key or SHA256SUMS that is no regular file (a FIFO, a device, a
// directory) or is far too large is refused at once: rbee release sign
// neither blocks on a FIFO (where Ctrl-C did not stop it) nor reads
// /dev/zero without end.
func TestReleaseSignRefusesOddFiles(t *testing.T) {
	tmp := t.TempDir()
	keyFile := filepath.Join(tmp, "release.key")
	_, err := rbee(t, "release", "keygen", "--out", keyFile)
	require.NoError(t, err)
	fifo := filepath.Join(tmp, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	big := filepath.Join(tmp, "big.key")
	require.NoError(t, os.WriteFile(big, bytes.Repeat([]byte("#\n"), 1<<20), 0o600))
	release := func(t *testing.T, sums func(dir string)) string {
		dir := filepath.Join(t.TempDir(), "v1")
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "rbee-worker-linux-amd64"), []byte("#!/bin/sh\n"), 0o755))
		if sums != nil {
			sums(dir)
		}
		return dir
	}
	for _, tt := range []struct {
		name, key string
		sums      func(dir string)
		err       string
	}{
		{"key is a FIFO", fifo, nil, "not a regular file (a FIFO)"},
		{"key is a device", "/dev/zero", nil, "not a regular file (a device)"},
		{"key is a directory", tmp, nil, "not a regular file (a directory)"},
		{"key is huge", big, nil, "over 65536 bytes"},
		{"sums is a FIFO", keyFile, func(dir string) {
			require.NoError(t, syscall.Mkfifo(filepath.Join(dir, workercat.SumsFile), 0o644))
		}, "not a regular file (a FIFO)"},
		{"sums is a device", keyFile, func(dir string) {
			require.NoError(t, os.Symlink("/dev/zero", filepath.Join(dir, workercat.SumsFile)))
		}, "not a regular file (a device)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := release(t, tt.sums)
			done := make(chan error, 1)
			go func() {
				_, err := rbee(t, "release", "sign", "--key", tt.key, dir)
				done <- err
			}()
			select {
			case err := <-done:
				require.ErrorContains(t, err, tt.err)
			case <-time.After(10 * time.Second):
				t.Fatal("rbee release sign blocked")
			}
			_, err := os.Stat(filepath.Join(dir, workercat.SigFile))
			require.ErrorIs(t, err, os.ErrNotExist, "nothing signed")
		})
	}
}

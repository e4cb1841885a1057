//go:build unix

package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// leftovers lists the temporary files in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestWriteFile(t *testing.T) {
	// A umask that would strip bits must not change the modes we ask for.
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	tests := []struct {
		name     string
		existing []byte // nil: no file before
		oldPerm  os.FileMode
		data     []byte
		perm     os.FileMode
	}{
		{"new secret", nil, 0, []byte("s3cret\n"), 0o600},
		{"new index", nil, 0, []byte(`{"v":1}`), 0o644},
		{"new executable", nil, 0, []byte("#!/bin/sh\n"), 0o755},
		{"replace keeps new mode", []byte("old"), 0o644, []byte("new"), 0o600},
		{"replace widens mode", []byte("old"), 0o600, []byte("new"), 0o644},
		{"empty content", []byte("old"), 0o600, nil, 0o600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f.json")
			if tt.existing != nil {
				require.NoError(t, os.WriteFile(path, tt.existing, tt.oldPerm))
				require.NoError(t, os.Chmod(path, tt.oldPerm))
			}
			require.NoError(t, WriteFile(path, tt.data, tt.perm))
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, string(tt.data), string(got))
			st, err := os.Stat(path)
			require.NoError(t, err)
			require.Equal(t, tt.perm, st.Mode().Perm())
			require.Empty(t, leftovers(t, dir))
		})
	}
}

func TestWriteFileErrors(t *testing.T) {
	dir := t.TempDir()
	err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600)
	require.ErrorIs(t, err, fs.ErrNotExist)
	// The error names the file and its directory, not the temporary file.
	require.ErrorContains(t, err, "create "+filepath.Join(dir, "missing", "f")+" (in directory "+filepath.Join(dir, "missing")+string(filepath.Separator)+")")
	require.NotContains(t, err.Error(), TempPrefix)

	// A directory in the way: the rename fails, nothing is left behind.
	target := filepath.Join(dir, "d")
	require.NoError(t, os.MkdirAll(filepath.Join(target, "child"), 0o755))
	require.Error(t, WriteFile(target, []byte("x"), 0o600))
	require.Empty(t, leftovers(t, dir))
	st, err := os.Stat(target)
	require.NoError(t, err)
	require.True(t, st.IsDir(), "target unchanged")
}

func TestFileLifecycle(t *testing.T) {
	tests := []struct {
		name    string
		prior   string // "" : no target before
		finish  func(*File) error
		wantErr error
		want    string // target content afterwards; "" : absent
	}{
		{"commit creates", "", (*File).Commit, nil, "new"},
		{"commit replaces", "old", (*File).Commit, nil, "new"},
		{"commit new creates", "", (*File).CommitNew, nil, "new"},
		{"commit new keeps the other writer's file", "old", (*File).CommitNew, fs.ErrExist, "old"},
		{"sync then commit", "old", func(f *File) error {
			if err := f.Sync(); err != nil {
				return err
			}
			return f.Commit()
		}, nil, "new"},
		{"abort discards", "old", func(f *File) error { f.Abort(); return nil }, nil, "old"},
		{"abort without target", "", func(f *File) error { f.Abort(); return nil }, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "node.key")
			if tt.prior != "" {
				require.NoError(t, os.WriteFile(path, []byte(tt.prior), 0o600))
			}
			f, err := Create(path, 0o600)
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(filepath.Base(f.Name()), TempPrefix+"node.key-"))
			_, err = f.Write([]byte("ne"))
			require.NoError(t, err)
			_, err = f.Write([]byte("w"))
			require.NoError(t, err)
			err = tt.finish(f)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			got, err := os.ReadFile(path)
			if tt.want == "" {
				require.ErrorIs(t, err, fs.ErrNotExist)
			} else {
				require.NoError(t, err)
				require.Equal(t, tt.want, string(got))
			}
			require.Empty(t, leftovers(t, dir))

			// Finished is finished.
			_, err = f.Write([]byte("x"))
			require.ErrorIs(t, err, ErrDone)
			require.ErrorIs(t, f.Sync(), ErrDone)
			require.ErrorIs(t, f.Commit(), ErrDone)
			require.ErrorIs(t, f.CommitNew(), ErrDone)
			f.Abort()
		})
	}
}

func TestCreateInCurrentDir(t *testing.T) {
	t.Chdir(t.TempDir())
	require.NoError(t, WriteFile("plain", []byte("x"), 0o644))
	got, err := os.ReadFile("plain")
	require.NoError(t, err)
	require.Equal(t, "x", string(got))
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{".tmp-a-1", ".tmp-b-2", "keep", ".tmpnot"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), nil, 0o600))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, ".tmp-dir"), 0o700))
	n, err := RemoveTemps(dir)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	for _, name := range []string{"keep", ".tmpnot", ".tmp-dir"} {
		_, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
	}
	n, err = RemoveTemps(filepath.Join(dir, "missing"))
	require.NoError(t, err)
	require.Zero(t, n)
}

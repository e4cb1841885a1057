package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/builtin"
)

// TestLocalModel: builtin:NAME becomes a temporary copy of the embedded
// file for the command's life; a path stays as it is.
func TestLocalModel(t *testing.T) {
	path, cleanup, err := localModel("builtin:stories260k")
	require.NoError(t, err)
	m, err := builtin.Lookup("stories260k")
	require.NoError(t, err)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, m.Size, st.Size())
	cleanup()
	require.NoFileExists(t, path)

	path, cleanup, err = localModel("/some/file.gguf")
	require.NoError(t, err)
	require.Equal(t, "/some/file.gguf", path)
	cleanup()

	_, _, err = localModel("builtin:nope")
	require.ErrorIs(t, err, builtin.ErrUnknown)
}

// TestReadBounded: a file over the bound is refused, /dev/zero included
// (it would be read for ever).
func TestReadBounded(t *testing.T) {
	_, err := readBounded("/dev/zero", 1<<20)
	require.ErrorContains(t, err, "over 1 MiB")
	p := t.TempDir() + "/t.txt"
	require.NoError(t, os.WriteFile(p, []byte("hello"), 0o600))
	b, err := readBounded(p, 5)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
}

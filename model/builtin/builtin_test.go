package builtin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/stretchr/testify/require"
)

func TestNames(t *testing.T) {
	require.Equal(t, []string{"stories260k"}, Names())
}

func TestOpenMatchesFixtureAndHash(t *testing.T) {
	for _, name := range []string{"stories260k", "Stories260K"} {
		r, size, sum, err := Open(name)
		require.NoError(t, err)
		defer r.Close()
		b, err := io.ReadAll(r)
		require.NoError(t, err)
		require.EqualValues(t, len(b), size)
		h := sha256.Sum256(b)
		require.Equal(t, hex.EncodeToString(h[:]), sum)

		fixture, err := os.ReadFile("../../testdata/model/stories260K.gguf")
		require.NoError(t, err)
		require.Equal(t, fixture, b, "embedded copy differs from testdata/model")
	}
}

func TestEmbeddedIsGGUF(t *testing.T) {
	r, _, _, err := Open("stories260k")
	require.NoError(t, err)
	defer r.Close()
	p := filepath.Join(t.TempDir(), "m.gguf")
	b, _ := io.ReadAll(r)
	require.NoError(t, os.WriteFile(p, b, 0o600))
	f, err := gguf.Open(p)
	require.NoError(t, err)
	defer f.Close()
	arch, _ := f.String("general.architecture")
	require.Equal(t, "llama", arch)
	require.Len(t, f.Tensors, 48)
}

func TestUnknown(t *testing.T) {
	for _, name := range []string{"", "stories15m", "../stories260k", "stories260k.gguf"} {
		_, _, _, err := Open(name)
		require.True(t, errors.Is(err, ErrUnknown), "name %q: %v", name, err)
	}
}

package p2p

import (
	"crypto/hmac"
	"crypto/sha256"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

func TestLoadOrCreateIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "identity.key")
	k1, err := LoadOrCreateIdentity(path)
	require.NoError(t, err)
	require.EqualValues(t, crypto.Ed25519, k1.Type())
	st, err := os.Stat(path)
	require.NoError(t, err)
	if runtime.GOOS != "windows" {
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	}
	k2, err := LoadOrCreateIdentity(path)
	require.NoError(t, err)
	require.True(t, k1.Equals(k2), "reload returns the same key")
	// No temp files are left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1)
}

func TestLoadOrCreateIdentityConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	const n = 8
	ids := make([]peer.ID, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateIdentity(path)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i], _ = peer.IDFromPrivateKey(k)
		}()
	}
	wg.Wait()
	for i := range ids {
		require.Equal(t, ids[0], ids[i], "every caller sees the key that won")
	}
}

func TestLoadOrCreateIdentityErrors(t *testing.T) {
	good := func(t *testing.T) []byte {
		k, _, err := crypto.GenerateEd25519Key(nil)
		require.NoError(t, err)
		b, err := crypto.MarshalPrivateKey(k)
		require.NoError(t, err)
		return b
	}
	secp := func(t *testing.T) []byte {
		k, _, err := crypto.GenerateSecp256k1Key(nil)
		require.NoError(t, err)
		b, err := crypto.MarshalPrivateKey(k)
		require.NoError(t, err)
		return b
	}
	tests := []struct {
		name    string
		content func(t *testing.T) []byte
		mode    os.FileMode
		want    error
		unix    bool
	}{
		{"garbage", func(*testing.T) []byte { return []byte("not a key") }, 0o600, ErrCorruptIdentity, false},
		{"empty", func(*testing.T) []byte { return nil }, 0o600, ErrCorruptIdentity, false},
		{"truncated", func(t *testing.T) []byte { return good(t)[:20] }, 0o600, ErrCorruptIdentity, false},
		{"not ed25519", secp, 0o600, ErrCorruptIdentity, false},
		{"too large", func(*testing.T) []byte { return make([]byte, maxIdentityFileSize+1) }, 0o600, ErrCorruptIdentity, false},
		{"group readable", good, 0o640, ErrInsecureKeyFile, true},
		{"world readable", good, 0o644, ErrInsecureKeyFile, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unix && runtime.GOOS == "windows" {
				t.Skip("permission bits are not meaningful on windows")
			}
			path := filepath.Join(t.TempDir(), "identity.key")
			require.NoError(t, os.WriteFile(path, tt.content(t), tt.mode))
			require.NoError(t, os.Chmod(path, tt.mode))
			_, err := LoadOrCreateIdentity(path)
			require.ErrorIs(t, err, tt.want)
			// The bad file is left alone, never replaced.
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Len(t, after, len(tt.content(t)))
		})
	}
	_, err := LoadOrCreateIdentity("")
	require.Error(t, err)
	dir := t.TempDir()
	_, err = LoadOrCreateIdentity(dir)
	require.ErrorIs(t, err, ErrCorruptIdentity, "a directory is not a key file")
}

// hkdfSHA256 is RFC 5869 written out with crypto/hmac, an implementation
// independent of the one under test.
func hkdfSHA256(secret []byte, info string, n int) []byte {
	ext := hmac.New(sha256.New, make([]byte, sha256.Size))
	ext.Write(secret)
	prk := ext.Sum(nil)
	var out, prev []byte
	for i := byte(1); len(out) < n; i++ {
		m := hmac.New(sha256.New, prk)
		m.Write(prev)
		m.Write([]byte(info))
		m.Write([]byte{i})
		prev = m.Sum(nil)
		out = append(out, prev...)
	}
	return out[:n]
}

func TestDerivePSK(t *testing.T) {
	a := DerivePSK([]byte("secret-a"))
	require.Len(t, a, 32)
	require.Equal(t, a, DerivePSK([]byte("secret-a")), "deterministic")
	require.NotEqual(t, a, DerivePSK([]byte("secret-b")))
	require.Equal(t, hkdfSHA256([]byte("secret-a"), "rbee/p2p/pnet-psk/v1", 32), []byte(a),
		"the label is part of the wire format and must not change")
}

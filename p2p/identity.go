package p2p

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/pnet"

	"github.com/rbee-project/rbee/internal/atomicfile"
)

// pskInfo is the HKDF info label for the private-network key. It is fixed
// and versioned: changing it splits every existing cluster, so a new label
// means a new wire version. The gossip package uses a different label, so
// the two keys derived from one cluster secret are independent.
const pskInfo = "rbee/p2p/pnet-psk/v1"

// pskLen is the key size libp2p's private network (XSalsa20) requires.
const pskLen = 32

// maxIdentityFileSize bounds what LoadOrCreateIdentity reads: a marshaled
// Ed25519 key is 68 bytes, anything far larger is not a key file.
const maxIdentityFileSize = 4 << 10

// DerivePSK derives the 32-byte libp2p private-network key from the cluster
// secret with HKDF-SHA256 (no salt, info "rbee/p2p/pnet-psk/v1"). The same
// secret always yields the same key; any other secret yields an unrelated
// key, and hosts with different keys cannot connect.
func DerivePSK(secret []byte) pnet.PSK {
	k, err := hkdf.Key(sha256.New, secret, nil, pskInfo, pskLen)
	if err != nil {
		// Only possible for key lengths above 255*32 bytes.
		panic("p2p: hkdf: " + err.Error())
	}
	return pnet.PSK(k)
}

// LoadOrCreateIdentity returns the Ed25519 libp2p identity stored at path,
// creating it if the file does not exist. A new key is written with mode
// 0600 (its directory with 0700) and appears atomically: concurrent callers
// on the same path all end up with the same key. An existing file must not
// be accessible by group or others (ErrInsecureKeyFile, checked on Unix
// only) and must hold a marshaled Ed25519 private key (ErrCorruptIdentity).
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	if path == "" {
		return nil, errors.New("p2p: identity path is empty")
	}
	k, err := loadIdentity(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	return createIdentity(path)
}

func loadIdentity(path string) (crypto.PrivKey, error) {
	f, err := atomicfile.Open(path)
	if errors.Is(err, atomicfile.ErrNotRegular) {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrCorruptIdentity, path)
	}
	if err != nil {
		return nil, fmt.Errorf("p2p: open identity: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("p2p: stat identity: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrCorruptIdentity, path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o, want 0600", ErrInsecureKeyFile, path, st.Mode().Perm())
	}
	if st.Size() > maxIdentityFileSize {
		return nil, fmt.Errorf("%w: %s is %d bytes", ErrCorruptIdentity, path, st.Size())
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("p2p: read identity: %w", err)
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorruptIdentity, path, err)
	}
	if k.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w: %s holds a %v key, want Ed25519", ErrCorruptIdentity, path, k.Type())
	}
	return k, nil
}

func createIdentity(path string) (crypto.PrivKey, error) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p: generate identity: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("p2p: marshal identity: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("p2p: create identity dir: %w", err)
	}
	f, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("p2p: create identity: %w", err)
	}
	defer f.Abort()
	if _, err := f.Write(b); err != nil {
		return nil, fmt.Errorf("p2p: write identity: %w", err)
	}
	// Publish only if the path is still free: when another process created
	// the key meanwhile, its key wins.
	if err := f.CommitNew(); err != nil {
		if errors.Is(err, os.ErrExist) {
			return loadIdentity(path)
		}
		return nil, fmt.Errorf("p2p: publish identity: %w", err)
	}
	return k, nil
}

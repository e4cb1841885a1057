package node

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/tlsca"
)

// SecretFile is the cluster secret's file in the data dir (mode 0600).
const SecretFile = "cluster.secret"

// minSecretLen rejects secrets too short to be a key: 16 characters of the
// generated alphabet carry 80 bits.
const minSecretLen = 16

// Sentinel errors of the cluster secret.
var (
	// ErrSecretMismatch: --token differs from the secret stored in the data dir.
	ErrSecretMismatch = errors.New("the given token differs from this node's stored cluster secret")
	// ErrInsecureSecretFile: cluster.secret is readable by group or others.
	ErrInsecureSecretFile = errors.New("cluster secret file is readable by other users")
	// ErrWrongSecret: the stored cluster secret does not open the cluster
	// CA in this node's own registry, so it is not the secret of the
	// cluster this data dir belongs to (the file was damaged or replaced).
	ErrWrongSecret = errors.New("the stored cluster secret is not this cluster's")
	// ErrTokenIsCredential: the token given as the cluster secret is an
	// API key or an admin key (a client's credential), not a cluster token.
	ErrTokenIsCredential = errors.New("the cluster token given is an API credential (rbk_… or rbeeadm_…), not the cluster token (rbee_…)")
)

// GenerateSecret returns a new random cluster secret (32 random bytes, base32).
func GenerateSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return "rbee_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// loadOrCreateSecret returns the cluster secret: the stored one, else token,
// else a generated one (created reports that). The result is kept 0600.
func loadOrCreateSecret(dataDir, token string) (secret string, created bool, err error) {
	path := filepath.Join(dataDir, SecretFile)
	if auth.IsCredential(token) {
		return "", false, fmt.Errorf("%w: `rbee token` on a node of the cluster prints the cluster token", ErrTokenIsCredential)
	}
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return "", false, fmt.Errorf("%s is not a regular file: move it away and start the node with the cluster's token (rbee token on another node prints it)", path)
	} else if err == nil && runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return "", false, fmt.Errorf("%w: %s has mode %#o, want 0600 (chmod 600 %s)", ErrInsecureSecretFile, path, st.Mode().Perm(), path)
	}
	b, err := atomicfile.ReadFile(path)
	switch {
	case err == nil:
		stored := strings.TrimSpace(string(b))
		if len(stored) < minSecretLen {
			return "", false, fmt.Errorf("stored secret %s is corrupt (too short)", path)
		}
		if token != "" && token != stored {
			return "", false, ErrSecretMismatch
		}
		return stored, false, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", false, fmt.Errorf("read secret: %w", err)
	}
	secret = token
	if secret == "" {
		secret = GenerateSecret()
		created = true
	}
	if len(secret) < minSecretLen {
		return "", false, fmt.Errorf("token too short: at least %d characters", minSecretLen)
	}
	if err := atomicfile.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", false, err
	}
	return secret, created, nil
}

// checkSecretOpensCA (Start, once the local registry is replayed) refuses
// a cluster secret that does not open the cluster CA this node's registry
// already holds: such a node can talk to none of its cluster (gossip and
// libp2p are keyed by the secret) and stayed up alone, electing itself
// without end, with one log line about the CA.
func (n *Node) checkSecretOpensCA() error {
	rec, ok := n.reg.ClusterCA()
	if !ok {
		return nil
	}
	if _, err := tlsca.OpenCA(rec.CertPEM, rec.SealedKey, n.secret); errors.Is(err, tlsca.ErrSealed) {
		path := filepath.Join(n.cfg.DataDir, SecretFile)
		return fmt.Errorf("%w: the cluster CA in this node's registry does not open with %s (damaged or replaced); "+
			"put the cluster's secret back in it (rbee token on another node prints it; chmod 600)", ErrWrongSecret, path)
	}
	return nil
}

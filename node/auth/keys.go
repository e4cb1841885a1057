package auth

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/atomicfile"
)

// API keys are the clients' credentials: created by an admin, replicated
// in the registry as a sha256 (never the key), checked by every node, and
// revoked everywhere by one Raft entry. The registry is the only place a
// key lives besides the client; "last used" is this node's own memory (it
// changes on every request, so it never goes through Raft).

// apiKeyPrefix starts every API key: a scanner or a log filter can tell a
// key from other tokens (the cluster secret is "rbee_", the local admin
// key "rbeeadm_").
const apiKeyPrefix = "rbk_"

// adminKeyPrefix starts every node's local admin key.
const adminKeyPrefix = "rbeeadm_"

// maxAPIKeyLen bounds a presented credential before it is hashed.
const maxAPIKeyLen = 256

// Sentinel errors.
var (
	// ErrNoAdminKey: the data dir has no readable admin key.
	ErrNoAdminKey = errors.New("no readable admin key")
)

// NewAPIKey returns a new random key (32 random bytes) and its registry hash.
func NewAPIKey() (key, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	key = apiKeyPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	return key, HashAPIKey(key)
}

// IsCredential reports whether tok is shaped like an API credential (an
// API key or a node's admin key), which is never a cluster secret: a
// credential given where the cluster token goes was mistaken for it.
func IsCredential(tok string) bool {
	return strings.HasPrefix(tok, apiKeyPrefix) || strings.HasPrefix(tok, adminKeyPrefix)
}

// HashAPIKey is what the registry stores of key: lower-case hex sha256.
func HashAPIKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// ParseAPIKey checks the shape of a presented key without looking it up:
// the prefix, the length and the alphabet. It never echoes the key.
func ParseAPIKey(tok string) error {
	if len(tok) > maxAPIKeyLen {
		return errors.New("api key too long")
	}
	rest, ok := strings.CutPrefix(tok, apiKeyPrefix)
	if !ok {
		return errors.New("not an api key (they start with " + apiKeyPrefix + ")")
	}
	if len(rest) == 0 || strings.Trim(rest, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		return errors.New("api key has characters outside its alphabet")
	}
	return nil
}

// Lookup finds the registry entry of a presented key (constant-time
// compare of the hashes).
func (g *Guard) Lookup(tok string) (fsm.APIKey, bool) {
	if ParseAPIKey(tok) != nil || g.cfg.Node == nil {
		return fsm.APIKey{}, false
	}
	h := []byte(HashAPIKey(tok))
	for _, k := range g.cfg.Node.APIKeys() {
		if subtle.ConstantTimeCompare(h, []byte(k.Hash)) == 1 {
			return k, true
		}
	}
	return fsm.APIKey{}, false
}

// ScopePerms maps a key's scope to permissions.
func ScopePerms(scope string) Perm {
	switch scope {
	case fsm.ScopeAdmin:
		return Admin | Read | Inference
	case fsm.ScopeRead:
		return Read
	case fsm.ScopeInference:
		return Inference
	}
	return 0
}

// KeysUsed is when this node last accepted each key still in keep, as
// unix seconds; nil when none was. The uses of keys no longer in keep (a
// revoked key) are forgotten, so the record stays as small as the
// registry's keys.
func (g *Guard) KeysUsed(keep map[string]bool) map[string]int64 {
	g.uses.retain(keep)
	return g.uses.snapshot()
}

// LastUsed is when this node last accepted the key name.
func (g *Guard) LastUsed(name string) (time.Time, bool) { return g.uses.get(name) }

// keyUse remembers when this node last accepted each key.
type keyUse struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (u *keyUse) touch(name string, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last == nil {
		u.last = map[string]time.Time{}
	}
	u.last[name] = at
}

func (u *keyUse) retain(keep map[string]bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for name := range u.last {
		if !keep[name] {
			delete(u.last, name)
		}
	}
}

func (u *keyUse) snapshot() map[string]int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.last) == 0 {
		return nil
	}
	out := make(map[string]int64, len(u.last))
	for k, v := range u.last {
		out[k] = v.Unix()
	}
	return out
}

func (u *keyUse) get(name string) (time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.last[name]
	return t, ok
}

// AdminKeyFile is the local admin credential's file in the data dir.
const AdminKeyFile = "admin.key"

// adminKeyInfo labels the HKDF derivation of the admin key from the cluster
// secret; gossip and libp2p derive their keys with other labels.
const adminKeyInfo = "rbee local admin api key v1"

// DeriveAdminKey derives the local admin key from the cluster secret.
// Every node of a cluster derives the same key, so any node's admin.key
// works against a node on the same machine (several nodes of one local
// cluster), and no node stores another secret. Knowing the key does not
// reveal the cluster secret.
func DeriveAdminKey(secret string) string {
	k, err := hkdf.Key(sha256.New, []byte(secret), nil, adminKeyInfo, 32)
	if err != nil {
		panic("auth: hkdf: " + err.Error()) // only for lengths hkdf cannot give
	}
	return adminKeyPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(k))
}

// ReadAdminKey reads the local admin key from a node's data dir: it works
// for the node's own user only (the file is 0600). Errors wrap
// ErrNoAdminKey.
func ReadAdminKey(dataDir string) (string, error) {
	b, err := atomicfile.ReadFile(filepath.Join(dataDir, AdminKeyFile))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoAdminKey, err)
	}
	k := strings.TrimSpace(string(b))
	if k == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrNoAdminKey, filepath.Join(dataDir, AdminKeyFile))
	}
	return k, nil
}

// WriteAdminKey keeps key in dataDir/admin.key, 0600 (a file that already
// holds it with that mode is left alone).
func WriteAdminKey(dataDir, key string) error {
	path := filepath.Join(dataDir, AdminKeyFile)
	if b, err := atomicfile.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == key {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == 0o600 {
			return nil
		}
	}
	return atomicfile.WriteFile(path, []byte(key+"\n"), 0o600)
}
